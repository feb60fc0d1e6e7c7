"""Stage `gan`: trains the conditional GAN on the prepared real training subset, selects an
EMA generator, and writes sample grids.

What it does, in order: builds the models, schedule and one compiled train step per phase
(`synthjax.train.gan`); the real-image grid `samples/real.png` once; then the training loop
(`train.loop`: init or restore, steps, checkpoints), with sample grids every
`gan.sample_every` steps and, when `gan.fd.every_kimg` > 0, model selection by Fréchet
distance and label fidelity (`train.fd_monitor`); last the summary (`DIR/gan/summary.json`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from synthjax.core import compiler, parallel
from synthjax.core.checkpoint import state_sha256
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.prepared import prepared
from synthjax.eval import grids
from synthjax.models import inception
from synthjax.train import classifier, fd_monitor, recipes
from synthjax.train.gan import GanSetup, GanState, generate_images, make_train_step, run_setup
from synthjax.train.loop import Hook, LoopResult, LoopSettings, train_loop


def run(run: Run) -> dict[str, Any]:
    """Trains the GAN; returns the stage summary."""
    cfg, mesh = run.config, run.mesh
    data = prepared(run)
    train_source = data.source("train")
    train_indices = data.subset.indices["train"]
    setup = run_setup(run)
    schedule = setup.schedule
    replicated = parallel.replicated(mesh)
    label_table = jax.device_put(train_source.labels[train_indices], replicated)
    # One compiled step per phase (compiled when the phase first runs).
    jit_steps = [
        compiler.jit_everywhere(
            make_train_step(cfg.gan, setup.models, setup.optimizer, phase),
            f"gan step, phase {phase.index}",
            donate_argnums=0,
        )
        for phase in schedule.phases
    ]
    hooks = [Hook("samples", cfg.gan.sample_every, sample_grids(run, setup))]
    monitor = frechet_monitor(run, setup) if cfg.gan.fd.every_kimg > 0 else None
    if monitor is not None:
        due = fd_monitor.fd_is_due(schedule, cfg.gan.fd.every_kimg)
        hooks.append(Hook("fd", 0, monitor.hook, due=due))
    result = train_loop(
        LoopSettings(
            name="gan",
            stage_dir=run.stage_dir("gan"),
            total_steps=schedule.total_steps,
            global_batch=schedule.constant_batch or 0,
            checkpoint_every=cfg.gan.checkpoint_every,
            log_every=cfg.gan.log_every,
            images_at=schedule.images_at,
        ),
        mesh=mesh,
        create_state=compiler.jit(setup.init, out_shardings=replicated),
        step_fn=lambda state, batch, step: jit_steps[schedule.phase_at(step).index](
            state, batch, label_table
        ),
        dataset=pipeline.train_dataset(
            train_source,
            train_indices,
            global_batch=schedule.batch_plan(),
            seed=cfg.seed,
            hflip=cfg.dataset.hflip,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ),
        hooks=hooks,
        finished=monitor.finished if monitor is not None else None,
    )
    return summary(cfg, setup, result, selected_by_monitor=monitor is not None) | {
        "train_images": len(train_indices),
        "throughput": result.throughput,
    }


def summary(
    cfg: ml_collections.ConfigDict,
    setup: GanSetup,
    result: LoopResult,
    *,
    selected_by_monitor: bool,
) -> dict[str, Any]:
    """The stage summary of a finished loop: fingerprint, schedule, the selected generator."""
    state: GanState = result.state
    schedule = setup.schedule
    best_step = state.best.selected_step()
    selected = best_step >= 0
    return {
        "step": result.step,
        "kimg": schedule.kimg_at(result.step),
        "state_sha256": state_sha256(state.fingerprinted()),
        "arch": setup.models.arch,
        "phases": [dataclasses.asdict(p) for p in schedule.phases],
        "early_stopped": result.stopped_early,
        "selected": {
            "by": cfg.gan.select if selected else "last",
            "step": best_step if selected else result.step,
            "kimg": schedule.kimg_at(best_step if selected else result.step),
            "fd": state.best.score("fd") if selected else None,
            "label_fidelity": _finite_or_none(state.best.score("label_fidelity"))
            if selected
            else None,
            "features": cfg.gan.fd.features if selected_by_monitor else None,
        },
        "recipe": dataclasses.asdict(recipes.resolve(cfg.gan)),
        "ada_p": float(jax.device_get(state.ada.p)),
    }


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


# --- model selection -------------------------------------------------------------------------


def feature_space(run: Run) -> fd_monitor.FeatureSpace:
    """The feature space `gan.fd.features` names."""
    fd = run.config.gan.fd
    if fd.features == "inception":
        fn = inception.features_fn(fd.inception_weights, batch_size=fd.batch_size)
        return fd_monitor.CallableFeatures(fn)
    return classifier.DomainFeatures(run)


def frechet_monitor(run: Run, setup: GanSetup) -> fd_monitor.FrechetMonitor:
    """The loop hook that measures the EMA generator and keeps the best one (`gan.select`):
    in the domain feature space when `classifier_real` has finished, else the one
    `gan.fd.features` names; label fidelity needs the real-trained classifier."""
    cfg, data = run.config, prepared(run)
    split = cfg.gan.fd.reference_split
    real_classifier = classifier.DomainFeatures(run) if run.finished("classifier_real") else None
    space = (
        real_classifier
        if cfg.gan.fd.features == "classifier" and real_classifier is not None
        else feature_space(run)
    )
    return fd_monitor.FrechetMonitor(
        cfg.gan.fd,
        space=space,
        classifier=real_classifier,
        label_names=tuple(data.label_names),
        combos=data.subset.combos,
        select=cfg.gan.select,
        fd_guard=cfg.gan.select_fd_guard,
        generate=compiler.jit_everywhere(
            functools.partial(generate_images, models=setup.models), "gan fd generate"
        ),
        reference=(data.source(split), data.subset.indices[split]),
        latent_dim=cfg.gan.latent_dim,
        schedule=setup.schedule,
        mesh=run.mesh,
        seed=cfg.seed,
    )


# --- sample grids ---------------------------------------------------------------------------


def sample_grids(run: Run, setup: GanSetup) -> Callable[[GanState, int], tuple[GanState, dict]]:
    """The loop hook that draws the EMA generator's grid `samples/step_N.png` (row r: label
    combination r, the same latents in every row); it first writes `samples/real.png`, the
    real images of those combinations, once."""
    cfg, data = run.config, prepared(run)
    schedule = setup.schedule
    samples_dir = run.stage_dir("gan") / "samples"
    z, grid_labels = sample_grid_inputs(
        cfg.seed,
        data.subset.combos,
        rows=cfg.gan.sample_rows,
        cols=cfg.gan.sample_cols,
        latent_dim=cfg.gan.latent_dim,
    )
    rows = len(grid_labels) // cfg.gan.sample_cols
    row_titles = [
        grids.label_combination_name(c, data.label_names) for c in data.subset.combos[:rows]
    ]
    generate = compiler.jit(
        functools.partial(generate_images, models=setup.models), static_argnames=("level",)
    )
    attribution = run.summary("prepare").get("attribution")  # shown wherever images are

    def save_samples(state: GanState, step: int):
        phase = schedule.phase_at(step - 1)
        alpha = phase.alpha(step - 1)
        images = generate(state.g_ema, z, grid_labels, level=phase.resolution, alpha=alpha)
        images = upsample_to(parallel.gather(images), cfg.dataset.resolution)
        if run.is_host0:
            samples_dir.mkdir(parents=True, exist_ok=True)
            grown = (
                ""
                if schedule.grown_at(step - 1)
                else (f", growing: {phase.resolution}x{phase.resolution} at alpha {alpha:.2f}")
            )
            grids.save_image_grid(
                samples_dir / f"step_{step:07d}.png",
                images.reshape(rows, cfg.gan.sample_cols, *images.shape[1:]),
                row_titles=row_titles,
                footer=attribution,
                title=f"EMA generator, step {step} ({schedule.kimg_at(step):.1f} kimg{grown})",
            )
        return state, {}

    if run.is_host0 and not (samples_dir / "real.png").exists():
        save_real_grid(
            samples_dir / "real.png",
            data.source("train"),
            data.subset.indices["train"],
            data.subset.combos[:rows],
            cols=cfg.gan.sample_cols,
            row_titles=row_titles,
            seed=cfg.seed,
            attribution=attribution,
        )
    return save_samples


def sample_grid_inputs(
    seed: int, combos: np.ndarray, *, rows: int, cols: int, latent_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed latents and labels of the monitoring grid: row r = combination r (most frequent
    first), the same `cols` latents in every row so rows differ only by their labels.

    Returns z: float32[rows * cols, latent_dim], labels: float32[rows * cols, K].
    """
    rows = min(rows, len(combos))
    rng = np.random.default_rng([seed, 7])
    z = rng.standard_normal((cols, latent_dim)).astype(np.float32)
    z = np.tile(z, (rows, 1))
    labels = np.repeat(combos[:rows].astype(np.float32), cols, axis=0)
    return z, labels


# The marking of the real-image grid `samples/real.png`, drawn on the image.
REAL_GRID_TITLE = "REAL PATIENT IMAGES - private, not part of any release"
REAL_GRID_FOOTER = (
    "real training images, the reference for the sample grids: keep inside the hospital"
)


def save_real_grid(
    path,
    source,
    indices: np.ndarray,
    combos: np.ndarray,
    *,
    cols: int,
    row_titles: list[str],
    seed: int,
    attribution: str | None = None,
) -> None:
    """Real training images laid out like the sample grids (row r = combination r), so
    generated rows can be compared with what they should look like.

    It sits beside the synthetic grids and looks like them, so the picture itself says what
    it is (`REAL_GRID_TITLE`, `REAL_GRID_FOOTER`): a copy that leaves its folder still does.
    `synthjax.export` never releases it."""
    labels = (source.labels[indices] > 0.5).astype(np.uint8)
    rng = np.random.default_rng([seed, 11])
    blank = np.zeros(source.image_shape, np.uint8)
    rows = []
    for combo in combos:
        members = indices[np.all(labels == combo, axis=1)]
        chosen = rng.permutation(members)[:cols]
        images = [source[int(i)]["image"] for i in chosen]
        rows.append(images + [blank] * (cols - len(images)))
    grids.save_image_grid(
        path,
        np.asarray(rows),
        row_titles=row_titles,
        title=REAL_GRID_TITLE,
        footer=REAL_GRID_FOOTER + (f" | {attribution}" if attribution else ""),
    )


def upsample_to(images: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour upsampling of uint8[..., r, r, C] to `resolution` (grid display)."""
    factor = resolution // images.shape[-2]
    return images.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else images
