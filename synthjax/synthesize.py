"""The `synthesize` stage: EMA generator + real label vectors -> the shareable dataset.

One synthetic image per kept real image of every split, conditioned on that image's label
vector (the study's protocol), written in the same array_record format as the real data so
the same loader reads it. Latents are drawn per image from `fold_in(key, index)`, so the
dataset does not depend on the batch size, and shards already written are skipped on a
rerun. `DATASET_CARD.json` describes what was released; nothing in the export carries a
source id, path or metadata: synthetic ids are `synthetic-<split>-<n>`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import numpy as np
from absl import logging

from synthjax import distributed, parallel
from synthjax.checkpoint import state_sha256
from synthjax.data import shards
from synthjax.data.loader import load_source
from synthjax.data.subsets import label_combinations
from synthjax.eval.grids import label_combination_name
from synthjax.progress import Progress
from synthjax.train import gan
from synthjax.workdir import SPLITS, Run, write_json_atomic

DATASET_NAME = "synthetic"


def _latents(key_data: jax.Array, indices: jax.Array, latent_dim: int) -> jax.Array:
    """float32[B, L]: the latent of image i is a function of (seed, split, i) only."""
    key = jax.random.wrap_key_data(key_data)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (latent_dim,)))(indices)


def _generate(g_params, key_data, indices, labels, *, models, latent_dim):
    z = _latents(key_data, indices, latent_dim)
    return gan.generate_images(g_params, z, labels, models=models)


def run_stage(run: Run) -> dict[str, Any]:
    cfg, mesh = run.config, run.mesh
    data = run.prepared
    out_dir = run.synthetic_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    models, g_ema = gan.restore_generator(run)
    parallel.check_batch_size("synthesize.batch_size", cfg.synthesize.batch_size, mesh)
    generate = distributed.CompiledEverywhere(
        jax.jit(functools.partial(_generate, models=models, latent_dim=cfg.gan.latent_dim)),
        "synthesize generate",
    )
    batch = cfg.synthesize.batch_size
    shard_size = max(batch, (cfg.synthesize.shard_size // batch) * batch)
    image_shape = data.source("train").image_shape
    features = shards.image_features(image_shape, len(data.label_names))
    base_key = jax.random.key(cfg.seed)
    shard_lengths: dict[str, list[int]] = {}
    label_counts: dict[str, dict[str, int]] = {}
    for split_id, split in enumerate(SPLITS):
        labels = data.source(split).labels[data.subset.indices[split]]
        n = len(labels)
        num_shards = max(1, -(-n // shard_size))
        key_data = jax.random.key_data(jax.random.fold_in(base_key, 1000 + split_id))
        progress = Progress(f"synthesize[{split}]", -(-n // batch), items_per_step=batch)
        lengths = []
        step = 0
        for s in range(num_shards):
            lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
            lengths.append(hi - lo)
            path = shards.shard_path(out_dir, DATASET_NAME, split, s, num_shards)
            if path.exists():  # written by an earlier, interrupted run
                step += -(-(hi - lo) // batch)
                continue
            images = []
            for start in range(lo, hi, batch):
                idx = np.arange(start, start + batch)
                y = labels[np.minimum(idx, n - 1)]
                # Each process's devices generate its rows; every process then holds them all.
                inputs = parallel.from_full({"i": idx.astype(np.uint32), "y": y}, mesh)
                out = generate(g_ema, key_data, inputs["i"], inputs["y"])
                images.append(parallel.gather(out)[: hi - start])
                step += 1
                progress.update(step)
            images = np.concatenate(images)
            if s % jax.process_count() == jax.process_index():  # the hosts share the writing
                shards.write_shard(
                    path,
                    features,
                    (
                        {
                            "image": images[i],
                            "labels": labels[lo + i],
                            "id": f"synthetic-{split}-{lo + i:07d}",
                        }
                        for i in range(hi - lo)
                    ),
                )
        shard_lengths[split] = lengths
        label_counts[split] = _combination_counts(labels, data.label_names)
        logging.info("synthesize: %s: %d images in %d shards", split, n, num_shards)

    distributed.barrier("synthesize: every shard written")
    gan_summary = run.summary("gan")
    prepare_summary = run.summary("prepare")
    description = (
        f"Synthetic {cfg.dataset.name} images at {cfg.dataset.resolution}x"
        f"{cfg.dataset.resolution} from a conditional {cfg.gan.arch} GAN; one image per real "
        "image of each split, with the same label vector. No source ids, paths or metadata."
    )
    if run.is_host0:
        shards.write_metadata(
            out_dir,
            name=DATASET_NAME,
            features=features,
            shard_lengths=shard_lengths,
            label_names=data.label_names,
            description=description,
        )
    config_json = json.loads(cfg.to_json_best_effort())
    # Folder names on the hospital's machines stay there.
    for field in ("manual_dir", "data_dir"):
        if config_json["dataset"].get(field):
            config_json["dataset"][field] = "<withheld>"
    card = {
        "name": DATASET_NAME,
        "description": description,
        "source_dataset": {
            "name": cfg.dataset.name,
            "phantom": bool(prepare_summary.get("phantom", False)),
            "attribution": prepare_summary.get("attribution"),
            "prepared_sha256": prepare_summary.get("state_sha256"),
        },
        "resolution": cfg.dataset.resolution,
        "image_shape": list(image_shape),
        "label_names": list(data.label_names),
        "counts": {s: int(sum(v)) for s, v in shard_lengths.items()},
        "label_prevalence": {
            s: dict(
                zip(
                    data.label_names,
                    (
                        data.source(s).labels[data.subset.indices[s]].mean(0)
                        if len(data.subset.indices[s])
                        else np.zeros(len(data.label_names))
                    )
                    .round(4)
                    .tolist(),
                    strict=True,
                )
            )
            for s in SPLITS
        },
        "label_combinations": label_counts,
        "generator": {
            "arch": cfg.gan.arch,
            "state_sha256": gan_summary["state_sha256"],
            "ema_params_sha256": state_sha256(g_ema),
            "kimg": gan_summary.get("kimg"),
            "selected": gan_summary.get("selected"),
        },
        "config": config_json,
    }
    if run.is_host0:
        write_json_atomic(out_dir / "DATASET_CARD.json", card)
    distributed.barrier("synthesize: metadata and card written")
    # The decoded records: shard bytes differ between writer processes for the same records.
    fingerprint = shards.records_sha256({s: load_source(out_dir, s) for s in shard_lengths})
    return {
        "step": 0,
        "state_sha256": fingerprint,
        "counts": card["counts"],
        "dataset_dir": str(out_dir),
    }


def _combination_counts(labels: np.ndarray, names) -> dict[str, int]:
    combos = label_combinations(labels) if len(labels) else None
    if combos is None:
        return {}
    return {
        label_combination_name(c, names, max_len=200): int(k)
        for c, k in zip(combos.combos, combos.counts, strict=True)
    }
