"""Synthesis, the library half: EMA generator + real label vectors -> images, and the
memorization audit of the images drawn.

One synthetic image per kept real image of every split, conditioned on that image's label
vector (the study's protocol). Latents are drawn per image from `fold_in(key, index)`, so
the images do not depend on the batch size. The stage (`synthjax/stages/synthesize.py`)
runs, in order:

1. draft: the images are written, in the real records' order, to `DIR/synthesize/draft/`
   (inside the hospital, never released; tied to the generator's fingerprint, so a rerun
   resumes its shards and a different generator starts over);
2. audit: every draft image is compared with the training images (`memorization_audit`
   here, the statistics in `eval/privacy.py`);
3. replace: when the audit passes, each image closer to a training image than all but
   `privacy.percentile`% of new patients is drawn again from a fresh latent (up to
   `privacy.replace_attempts` times, `Replacer`) and dropped if it stays close;
4. release: the kept images are written to `DIR/synthetic/` in an order shuffled with a
   secret seed (`secret_seed`) that is drawn from the OS and recorded nowhere, so record i
   no longer carries real record i's label vector; ids are `synthetic-<split>-<n>`.

`DATASET_CARD.json` describes what was released, with the audit and the counts replaced and
dropped, and no path of this machine (`withhold_paths`). The closest-pairs grids show real
training images: they go to `DIR/synthesize/`, outside the release. `python -m
synthjax.export` writes what may leave the hospital.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from synthjax.core import compiler, parallel
from synthjax.core.progress import Progress
from synthjax.core.workdir import SPLITS, Run, read_json
from synthjax.data.prepared import prepared
from synthjax.data.subsets import label_combinations
from synthjax.eval import privacy
from synthjax.eval.grids import label_combination_name, save_image_grid
from synthjax.train import gan
from synthjax.train.classifier import DomainFeatures

DATASET_NAME = "synthetic"
DRAFT_NAME = "draft"
WITHHELD = "<withheld>"


def latents(key_data: jax.Array, indices: jax.Array, latent_dim: int) -> jax.Array:
    """float32[B, L]: the latent of image i is a function of (seed, split, i) only."""
    key = jax.random.wrap_key_data(key_data)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (latent_dim,)))(indices)


def draw_images(g_params, key_data, indices, labels, *, models, latent_dim):
    """uint8[B, H, W, C]: the generator's images of `labels` from the latents of `indices`."""
    z = latents(key_data, indices, latent_dim)
    return gan.generate_images(g_params, z, labels, models=models)


@dataclasses.dataclass
class Generator:
    """Batched generation: (key data, indices, labels) -> uint8 images, on every process."""

    run: Run
    fn: Any
    params: Any
    batch: int

    def __call__(self, key_data, indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(indices), self.batch):
            idx = indices[start : start + self.batch]
            n = len(idx)
            pad = self.batch - n
            inputs = parallel.from_full(
                {
                    "i": np.concatenate([idx, np.repeat(idx[-1:], pad)]).astype(np.uint32),
                    "y": np.concatenate(
                        [labels[start : start + n], np.repeat(labels[-1:], pad, 0)]
                    ),
                },
                self.run.mesh,
            )
            # Each process's devices generate its rows; every process then holds them all.
            out.append(
                parallel.gather(self.fn(self.params, key_data, inputs["i"], inputs["y"]))[:n]
            )
        return np.concatenate(out)


def split_key(cfg, split_id: int, stream: int = 0) -> jax.Array:
    """Key data of a split's latents; stream 0 is the draft, 1, 2, ... the redraws."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1000 + split_id)
    if stream:
        key = jax.random.fold_in(jax.random.fold_in(key, 7919), stream)
    return jax.random.key_data(key)


def compiled_generator(run: Run, models, g_ema) -> Generator:
    """`draw_images` jitted for the run's mesh, on the EMA generator's params."""
    cfg = run.config
    fn = functools.partial(draw_images, models=models, latent_dim=cfg.gan.latent_dim)
    program = compiler.jit_everywhere(fn, "synthesize generate")
    return Generator(run, program, g_ema, cfg.synthesize.batch_size)


def secret_seed() -> np.ndarray:
    """128 bits from the OS, the same on every process, stored nowhere (uint32 words: JAX
    carries them between processes unchanged without 64-bit mode)."""
    seed = np.array([secrets.randbits(32) for _ in range(4)], np.uint32)
    if jax.process_count() > 1:
        seed = np.asarray(multihost_utils.broadcast_one_to_all(seed), np.uint32)
    return seed


def description(cfg) -> str:
    """The release's one-paragraph description (its metadata and its card)."""
    return (
        f"Synthetic {cfg.dataset.name} images at {cfg.dataset.resolution}x"
        f"{cfg.dataset.resolution} from a conditional {cfg.gan.arch} GAN; one image per real "
        "image of each split, with the same label vector, in a secretly shuffled order. No "
        "source ids, paths or metadata."
    )


def withhold_paths(value: Any) -> Any:
    """`value` (JSON-like) with every string that names a path or a URL replaced."""
    if isinstance(value, dict):
        return {k: withhold_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [withhold_paths(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return WITHHELD
    return value


@dataclasses.dataclass
class Replacer:
    """Draws flagged draft images again until they are no longer close to a training
    image in any space (at most `attempts` rounds); the rest are dropped."""

    run: Run
    flagged: dict[str, list[int]]
    train: dict[str, np.ndarray]  # space -> unit vectors of the training images
    limit: dict[str, float]  # space -> flag below this distance
    embed: dict[str, Any]  # space -> uint8 images -> unit vectors
    attempts: int

    def replace(self, generate: Generator, labels) -> tuple[dict, dict]:
        replaced: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
        dropped: dict[str, set[int]] = {s: set() for s in SPLITS}
        for split_id, split in enumerate(SPLITS):
            todo = np.asarray(self.flagged[split], np.int64)
            for attempt in range(1, self.attempts + 1):
                if not len(todo):
                    break
                images = generate(
                    split_key(self.run.config, split_id, attempt), todo, labels[split][todo]
                )
                still = np.zeros(len(todo), bool)
                for space, train in self.train.items():
                    sim, _ = privacy.nearest(self.embed[space](images), train, self.run.mesh)
                    still |= (1.0 - sim.astype(np.float64)) < self.limit[space]
                for i, image in zip(todo[~still], images[~still], strict=True):
                    replaced[split][int(i)] = image
                todo = todo[still]
            dropped[split] = {int(i) for i in todo}
        n_rep = sum(map(len, replaced.values()))
        n_drop = sum(map(len, dropped.values()))
        print(f"== synthesize: {n_rep} close image(s) drawn again, {n_drop} dropped", flush=True)
        return replaced, dropped


def memorization_audit(run: Run, draft) -> tuple[dict[str, Any], dict[str, str], Replacer]:
    """The audit of every draft image against the training images (`eval/privacy.py`),
    the paths of its closest-pairs grids (in the stage directory, not the release), and
    what replacing the flagged images needs."""
    cfg, data = run.config, prepared(run)
    pcfg = cfg.privacy
    # Without the real-trained classifier there is no domain feature space: pixels only.
    space = DomainFeatures(run) if run.finished("classifier_real") else None
    batch = cfg.classifier.eval_batch_size
    resolution = min(pcfg.pixel_resolution, cfg.dataset.resolution)
    synth_refs = [(s, i) for s in SPLITS for i in range(len(draft[s]))]
    # Held-out images identical to a training image are no new patients (prepare found them).
    dup_path = run.stage_dir("prepare") / "duplicates.json"
    dups = {tuple(x) for x in read_json(dup_path)["heldout_in_train"]} if dup_path.exists() else ()
    held_refs = [
        (s, int(i))
        for s in ("validation", "test")
        for i in data.subset.indices[s]
        if (s, int(i)) not in dups
    ]
    held_pick = privacy.seeded_subset(np.arange(len(held_refs)), pcfg.max_heldout, cfg.seed, 37)
    train_idx = data.subset.indices["train"]
    if len(held_pick) < 2 or len(train_idx) < 1:
        raise RuntimeError("the memorization audit needs real held-out and training images")
    calib_idx = privacy.seeded_subset(train_idx, pcfg.floor_images, cfg.seed, 43)

    def by_split(refs, pick, sources):
        return [
            (sources(split), [i for split2, i in (refs[j] for j in pick) if split2 == split])
            for split in dict.fromkeys(refs[j][0] for j in pick)
        ]

    embed = {f"pixels_{resolution}": lambda im: privacy.pixel_vectors(im, resolution)}
    if space is not None:
        embed["domain_features"] = lambda im: privacy.unit_rows(space.of_images(im))
    groups = [
        ("synthetic", by_split(synth_refs, np.arange(len(synth_refs)), draft.__getitem__)),
        ("held-out", by_split(held_refs, held_pick, data.source)),
        ("train", [(data.source("train"), list(train_idx))]),
        ("originals", [(data.source("train"), list(calib_idx))]),
    ]
    total = sum(-(-len(ix) // batch) for _, parts in groups for _, ix in parts)
    progress = Progress("synthesize[privacy audit]", total, items_per_step=batch)
    done = 0
    order = ("synthetic", "held-out", "train", "originals", "copies")
    vectors = {g: {s: [] for s in embed} for g in order}
    for name, parts in groups:
        for source, ix in parts:
            for start in range(0, len(ix), batch):
                images = np.stack([source[int(i)]["image"] for i in ix[start : start + batch]])
                named = [(name, images)]
                if name == "originals":
                    copies = privacy.near_copies(images, cfg.seed + start)
                    named.append(("copies", copies))
                for key, im in named:
                    for s, fn in embed.items():
                        vectors[key][s].append(fn(im))
                done += 1
                progress.update(done)
    sets = {s: privacy.AuditSets(*(np.concatenate(vectors[g][s]) for g in order)) for s in embed}
    # Label combinations of the real images, training first: the seen-share test's strata.
    real_labels = np.concatenate(
        [data.source("train").labels[train_idx]]
        + [
            data.source(s).labels[[held_refs[j][1] for j in held_pick if held_refs[j][0] == s]]
            for s in ("validation", "test")
        ]
    )
    _, strata = np.unique(real_labels, axis=0, return_inverse=True)
    audit = privacy.memorization_audit(
        sets,
        strata=strata.reshape(-1),
        percentile=pcfg.percentile,
        floor_quantile=pcfg.floor_quantile,
        alpha=pcfg.alpha,
        override=pcfg.release_override,
        mesh=run.mesh,
    )
    if space is None:
        audit["not_audited"] = {"domain_features": "classifier_real has not run in this workdir"}
    flagged = {s: [] for s in SPLITS}
    for j in np.flatnonzero(audit["_flagged"]):
        flagged[synth_refs[j][0]].append(synth_refs[j][1])
    limits = {  # as `_flagged`: the floor only where no held-out image lies below it
        s: a["threshold_distance"]
        if a["heldout_below_floor"]
        else max(a["threshold_distance"], a["floor_distance"])
        for s, a in audit["spaces"].items()
    }
    replacer = Replacer(
        run, flagged, {s: sets[s].train for s in sets}, limits, embed, pcfg.replace_attempts
    )
    grids = {}
    for space_name in sets:
        pairs = privacy.closest_pairs(audit, space_name, pcfg.grid_pairs)
        rows, titles = privacy.pairs_grid_rows(
            pairs,
            lambda j: draft[synth_refs[j][0]][synth_refs[j][1]]["image"],
            lambda t: data.source("train")[int(train_idx[t])]["image"],
            threshold=limits[space_name],
        )
        path = run.stage_dir("synthesize") / f"closest_pairs_{space_name}.png"
        if run.is_host0:
            save_image_grid(
                path,
                rows,
                row_titles=titles,
                title=f"PRIVATE: closest pairs ({space_name}): synthetic, then its nearest "
                "REAL training image",
                footer="real training images: keep inside the hospital; not part of the release",
            )
        grids[space_name] = str(path)
    for line in audit["reasons"]:
        logging.info("synthesize: privacy: %s", line)
    verdict = "releasable" if audit["releasable"] else "NOT releasable"
    print(f"== synthesize: privacy audit: {verdict}; " + "; ".join(audit["reasons"]), flush=True)
    return audit, grids, replacer


def combination_counts(labels: np.ndarray, names) -> dict[str, int]:
    """Images per label combination, by the combination's name."""
    combos = label_combinations(labels) if len(labels) else None
    if combos is None:
        return {}
    return {
        label_combination_name(c, names, max_len=200): int(k)
        for c, k in zip(combos.combos, combos.counts, strict=True)
    }
