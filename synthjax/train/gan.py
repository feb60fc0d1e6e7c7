"""GAN training: the train state, the pure WGAN-GP step, and the stage's training loop.

Data flow: grain batches of real images (uint8) + their label vectors -> global arrays on
the mesh -> `train_step` (one discriminator and one generator update, as the study's
trainer alternated them) -> EMA generator -> sample grids and checkpoints. Labels for fakes
are drawn on device from the training set's label vectors ("labels for fakes sampled from
the empirical training label set").
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from synthjax import parallel
from synthjax.checkpoint import state_sha256
from synthjax.data import pipeline
from synthjax.eval import grids
from synthjax.models import cpd_gan
from synthjax.models.layers import resolve_conv_lowering
from synthjax.train.loop import Hook, LoopSettings, restore_final_state, train_loop
from synthjax.workdir import Run

PyTree = Any


@flax.struct.dataclass
class GanState:
    """Everything that changes during GAN training (a pytree; checkpointed whole).

    rng: uint32 key data of the base key; each step folds its step number into it.
    """

    step: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_ema: PyTree
    g_opt: PyTree
    d_opt: PyTree
    rng: jax.Array

    def trainable(self) -> dict[str, PyTree]:
        """What the fingerprint covers: params, optimizer states, EMA and step."""
        return {
            "step": self.step,
            "g_params": self.g_params,
            "d_params": self.d_params,
            "g_ema": self.g_ema,
            "g_opt": self.g_opt,
            "d_opt": self.d_opt,
        }


def build_models(
    gan: ml_collections.ConfigDict,
    *,
    resolution: int,
    num_labels: int,
    channels: int,
    conv_lowering: str,
) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator named by `gan.arch`."""
    lowering = resolve_conv_lowering(conv_lowering)
    if gan.arch != "cpd":
        raise NotImplementedError(f"gan.arch={gan.arch!r} is not available yet; use 'cpd'")
    sizes = dict(
        resolution=resolution,
        num_labels=num_labels,
        channels=channels,
        fmap_base=gan.fmap_base,
        fmap_max=gan.fmap_max,
        conv_lowering=lowering,
    )
    generator = cpd_gan.Generator(latent_dim=gan.latent_dim, **sizes)
    discriminator = cpd_gan.Discriminator(mbstd_group_size=gan.mbstd_group_size, **sizes)
    return generator, discriminator


def make_optimizer(gan: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.adam(gan.learning_rate, b1=gan.adam_b1, b2=gan.adam_b2, eps=gan.adam_eps)


def init_state(
    seed: int,
    generator: nn.Module,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    latent_dim: int,
    num_labels: int,
    image_shape: tuple[int, int, int],
) -> GanState:
    """A fresh state (call under `jax.jit` with `out_shardings` to create it sharded)."""
    key = jax.random.key(seed)
    k_g, k_d, k_run = jax.random.split(key, 3)
    z = jnp.zeros((1, latent_dim), jnp.float32)
    y = jnp.zeros((1, num_labels), jnp.float32)
    g_params = generator.init(k_g, z, y)
    d_params = discriminator.init(k_d, jnp.zeros((1, *image_shape), jnp.float32), y)
    return GanState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_ema=g_params,
        g_opt=optimizer.init(g_params),
        d_opt=optimizer.init(d_params),
        rng=jax.random.key_data(k_run),
    )


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8[B, H, W, C] -> float32 in [-1, 1]."""
    return images.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def images_to_uint8(images: jax.Array) -> jax.Array:
    """float32 in [-1, 1] (unclipped generator output) -> uint8[B, H, W, C]."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def sample_fake_labels(key: jax.Array, label_table: jax.Array, n: int) -> jax.Array:
    """n label vectors drawn uniformly from the training set's rows (its empirical law)."""
    return label_table[jax.random.randint(key, (n,), 0, label_table.shape[0])]


def train_step(
    state: GanState,
    batch: dict[str, jax.Array],
    label_table: jax.Array,
    *,
    generator: nn.Module,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    latent_dim: int,
    gp_weight: float,
    drift_weight: float,
    ema_decay: float,
    ema_warmup: bool,
) -> tuple[GanState, dict[str, jax.Array]]:
    """One WGAN-GP discriminator update, then one generator update, then the EMA.

    batch: {"image": uint8[B, H, W, C], "labels": float32[B, K]}.
    label_table: float32[N, K], the training label vectors fakes are conditioned on.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_zd, k_yd, k_eps, k_zg, k_yg = jax.random.split(key, 5)
    real = images_to_float(batch["image"])
    real_labels = batch["labels"]
    n = real.shape[0]

    def generate(g_params, k_z, k_y):
        labels = sample_fake_labels(k_y, label_table, n)
        z = jax.random.normal(k_z, (n, latent_dim), jnp.float32)
        return generator.apply(g_params, z, labels), labels

    fake, fake_labels = generate(state.g_params, k_zd, k_yd)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        d = functools.partial(discriminator.apply, d_params)
        d_real = d(real, real_labels)
        d_fake = d(fake, fake_labels)
        # Gradient penalty on straight lines between real and fake images (real labels).
        eps = jax.random.uniform(k_eps, (n, 1, 1, 1), jnp.float32)
        mixed = eps * real + (1.0 - eps) * fake
        grads = jax.grad(lambda x: jnp.sum(d(x, real_labels)))(mixed)
        norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)) + 1e-12)
        penalty = jnp.mean(jnp.square(norms - 1.0))
        wasserstein = jnp.mean(d_real) - jnp.mean(d_fake)
        drift = jnp.mean(jnp.square(d_real))
        loss = -wasserstein + gp_weight * penalty + drift_weight * drift
        return loss, {
            "loss_d": loss,
            "wasserstein": wasserstein,
            "gp": penalty,
            "d_real": jnp.mean(d_real),
            "d_fake": jnp.mean(d_fake),
        }

    d_grads, d_metrics = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt = optimizer.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(g_params):
        images, labels = generate(g_params, k_zg, k_yg)
        loss = -jnp.mean(discriminator.apply(d_params, images, labels))
        return loss, {"loss_g": loss}

    g_grads, g_metrics = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt = optimizer.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    decay = jnp.asarray(ema_decay, jnp.float32)
    if ema_warmup:
        # Early on the EMA would mostly average the random init: ramp the decay up.
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    g_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.g_ema, g_params)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_ema=g_ema,
        g_opt=g_opt,
        d_opt=d_opt,
    )
    metrics = {**d_metrics, **g_metrics}
    metrics["grad_norm_d"] = optax.tree.norm(d_grads)
    metrics["grad_norm_g"] = optax.tree.norm(g_grads)
    return new_state, metrics


def make_train_step(
    gan: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
) -> Callable[..., tuple[GanState, dict[str, jax.Array]]]:
    """`train_step` with the config's static settings bound (ready for `jax.jit`)."""
    return functools.partial(
        train_step,
        generator=generator,
        discriminator=discriminator,
        optimizer=optimizer,
        latent_dim=gan.latent_dim,
        gp_weight=gan.gp_weight,
        drift_weight=gan.drift_weight,
        ema_decay=gan.ema_decay,
        ema_warmup=gan.ema_warmup,
    )


def generate_images(
    g_params: PyTree, z: jax.Array, labels: jax.Array, *, generator: nn.Module
) -> jax.Array:
    """EMA (or raw) generator -> uint8[B, H, W, C]. z: float32[B, L]; labels: float32[B, K]."""
    return images_to_uint8(generator.apply(g_params, z, labels))


# --- the `gan` stage ---------------------------------------------------------------------


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
    generated rows can be compared with what they should look like."""
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
        title="Real training images (reference)",
        footer=attribution,
    )


@dataclasses.dataclass(frozen=True)
class GanSetup:
    """What a run's config decides about the GAN: modules, optimizer, state initialiser."""

    generator: nn.Module
    discriminator: nn.Module
    optimizer: optax.GradientTransformation
    init: Callable[[], GanState]  # builds a fresh state (wrap in jit with out_shardings)


def gan_setup(run: Run, image_shape: tuple[int, int, int]) -> GanSetup:
    cfg = run.config
    num_labels = len(run.prepared.label_names)
    generator, discriminator = build_models(
        cfg.gan,
        resolution=cfg.dataset.resolution,
        num_labels=num_labels,
        channels=image_shape[-1],
        conv_lowering=cfg.conv_lowering,
    )
    optimizer = make_optimizer(cfg.gan)
    init = functools.partial(
        init_state,
        cfg.seed,
        generator,
        discriminator,
        optimizer,
        latent_dim=cfg.gan.latent_dim,
        num_labels=num_labels,
        image_shape=image_shape,
    )
    return GanSetup(generator, discriminator, optimizer, init)


def run_stage(run: Run) -> dict[str, Any]:
    """Trains the GAN on the prepared real training subset; returns the stage summary."""
    cfg, mesh = run.config, run.mesh
    data = run.prepared
    train_source = data.source("train")
    train_indices = data.subset.indices["train"]
    parallel.check_batch_size("gan.batch_size", cfg.gan.batch_size, mesh)
    setup = gan_setup(run, train_source.image_shape)
    generator, discriminator, optimizer = setup.generator, setup.discriminator, setup.optimizer
    replicated = parallel.replicated(mesh)
    create_state = jax.jit(setup.init, out_shardings=replicated)
    label_table = jax.device_put(train_source.labels[train_indices], replicated)
    jit_step = jax.jit(
        make_train_step(cfg.gan, generator, discriminator, optimizer), donate_argnums=0
    )
    step_fn = lambda state, batch: jit_step(state, batch, label_table)
    dataset = pipeline.train_dataset(
        train_source,
        train_indices,
        global_batch=cfg.gan.batch_size,
        seed=cfg.seed,
        hflip=cfg.dataset.hflip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

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
    generate = jax.jit(functools.partial(generate_images, generator=generator))
    attribution = run.summary("prepare").get("attribution")  # shown wherever images are

    def save_samples(state: GanState, step: int):
        images = np.asarray(jax.device_get(generate(state.g_ema, z, grid_labels)))
        if run.is_host0:
            samples_dir.mkdir(parents=True, exist_ok=True)
            grids.save_image_grid(
                samples_dir / f"step_{step:07d}.png",
                images.reshape(rows, cfg.gan.sample_cols, *images.shape[1:]),
                row_titles=row_titles,
                footer=attribution,
                title=f"EMA generator, step {step} ({step * cfg.gan.batch_size / 1000:.1f} kimg)",
            )
        return state, {}

    if run.is_host0 and not (samples_dir / "real.png").exists():
        save_real_grid(
            samples_dir / "real.png",
            train_source,
            train_indices,
            data.subset.combos[:rows],
            cols=cfg.gan.sample_cols,
            row_titles=row_titles,
            seed=cfg.seed,
            attribution=attribution,
        )

    result = train_loop(
        LoopSettings(
            name="gan",
            stage_dir=run.stage_dir("gan"),
            total_steps=cfg.gan.train_steps,
            global_batch=cfg.gan.batch_size,
            checkpoint_every=cfg.gan.checkpoint_every,
            log_every=cfg.gan.log_every,
        ),
        mesh=mesh,
        create_state=create_state,
        step_fn=step_fn,
        dataset=dataset,
        hooks=[Hook("samples", cfg.gan.sample_every, save_samples)],
    )
    return {
        "step": result.step,
        "kimg": result.step * cfg.gan.batch_size / 1000,
        "state_sha256": state_sha256(result.state.trainable()),
        "train_images": len(train_indices),
        "throughput": result.throughput,
    }


def restore_generator(run: Run) -> tuple[nn.Module, PyTree]:
    """The trained generator module and its EMA parameters (for `synthesize`)."""
    setup = gan_setup(run, run.prepared.source("train").image_shape)
    abstract = parallel.replicated_abstract(setup.init, run.mesh)
    state = restore_final_state(run.stage_dir("gan"), abstract)
    return setup.generator, state.g_ema
