"""The `synthesize` stage: EMA generator + real label vectors -> the shareable dataset.

One synthetic image per kept real image of every split, conditioned on that image's label
vector (the study's protocol), written in the same array_record format as the real data so
the same loader reads it. Latents are drawn per image from `fold_in(key, index)`, so the
dataset does not depend on the batch size, and shards already written are skipped on a
rerun. `DATASET_CARD.json` describes what was released; nothing in the export carries a
source id, path or metadata: synthetic ids are `synthetic-<split>-<n>`.

Before the card is written, the memorization audit (`eval/privacy.py`) compares every
audited synthetic image with the training images; the card records it and marks the
dataset releasable only when it passes (or an override gives a reason). Its grid of closest
pairs shows real training images, so it goes to `DIR/synthesize/`, outside the release.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import numpy as np
from absl import logging

from synthjax import compiler, distributed, parallel
from synthjax.checkpoint import state_sha256
from synthjax.data import shards
from synthjax.data.loader import load_source
from synthjax.data.subsets import label_combinations
from synthjax.eval import privacy
from synthjax.eval.grids import label_combination_name, save_image_grid
from synthjax.progress import Progress
from synthjax.train import gan
from synthjax.train.classifier import DomainFeatures
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
        compiler.jit(functools.partial(_generate, models=models, latent_dim=cfg.gan.latent_dim)),
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
    distributed.barrier("synthesize: metadata written")  # the audit reads the dataset back
    audit, grids = memorization_audit(run, out_dir)
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
            "recipe": gan_summary.get("recipe"),
        },
        "releasable": audit["releasable"],
        "privacy": privacy.strip_arrays(audit),
        "config": config_json,
    }
    if run.is_host0:
        write_json_atomic(out_dir / "DATASET_CARD.json", card)
    distributed.barrier("synthesize: card written")
    # The decoded records: shard bytes differ between writer processes for the same records.
    fingerprint = shards.records_sha256({s: load_source(out_dir, s) for s in shard_lengths})
    return {
        "step": 0,
        "state_sha256": fingerprint,
        "counts": card["counts"],
        "dataset_dir": str(out_dir),
        "releasable": audit["releasable"],
        "copy_rate": audit["copy_rate"],
        "privacy_grids": grids,
    }


def memorization_audit(run: Run, out_dir) -> tuple[dict[str, Any], dict[str, str]]:
    """The audit of the written dataset against the training images (`eval/privacy.py`),
    and the paths of its closest-pairs grids (in the stage directory, not the release)."""
    cfg, data = run.config, run.prepared
    pcfg = cfg.privacy
    # Without the real-trained classifier there is no domain feature space: pixels only.
    space = DomainFeatures(run) if run.finished("classifier_real") else None
    batch = cfg.classifier.eval_batch_size
    resolution = min(pcfg.pixel_resolution, cfg.dataset.resolution)
    synthetic = {s: load_source(out_dir, s) for s in SPLITS}
    # Which images: every training image; a seeded share of the synthetic and held-out ones.
    synth_refs = [(s, i) for s in SPLITS for i in range(len(synthetic[s]))]
    synth_pick = privacy.seeded_subset(np.arange(len(synth_refs)), pcfg.max_synthetic, cfg.seed, 31)
    held_refs = [(s, int(i)) for s in ("validation", "test") for i in data.subset.indices[s]]
    held_pick = privacy.seeded_subset(np.arange(len(held_refs)), pcfg.max_heldout, cfg.seed, 37)
    train_idx = data.subset.indices["train"]
    if len(held_pick) < 2 or len(train_idx) < 1:
        raise RuntimeError("the memorization audit needs real held-out and training images")

    def by_split(refs, pick, sources):
        return [
            (sources(split), [i for split2, i in (refs[j] for j in pick) if split2 == split])
            for split in dict.fromkeys(refs[j][0] for j in pick)
        ]

    groups = [
        ("synthetic", by_split(synth_refs, synth_pick, synthetic.__getitem__)),
        ("held-out", by_split(held_refs, held_pick, data.source)),
        ("train", [(data.source("train"), list(train_idx))]),
    ]
    total = sum(-(-len(ix) // batch) for _, parts in groups for _, ix in parts)
    progress = Progress("synthesize[privacy audit]", total, items_per_step=batch)
    done = 0
    vectors = {}
    for name, parts in groups:
        pix, feat = [], []
        for source, ix in parts:
            if not ix:
                continue
            p, f = privacy.vectors_of(
                source,
                np.asarray(ix),
                features=None if space is None else space.of_images,
                pixel_resolution=resolution,
                batch_size=batch,
                progress=lambda i, base=done: progress.update(base + i),
            )
            done += -(-len(ix) // batch)
            pix.append(p)
            feat.append(f)
        vectors[name] = (np.concatenate(pix), None if space is None else np.concatenate(feat))
    order = ("synthetic", "held-out", "train")
    sets = {f"pixels_{resolution}": privacy.AuditSets(*(vectors[g][0] for g in order))}
    if space is not None:
        sets["domain_features"] = privacy.AuditSets(*(vectors[g][1] for g in order))
    audit = privacy.memorization_audit(
        sets,
        percentile=pcfg.percentile,
        max_copy_rate=pcfg.max_copy_rate,
        override=pcfg.release_override,
    )
    if space is None:
        audit["not_audited"] = {"domain_features": "classifier_real has not run in this workdir"}
    # The synthetic images in audit order, to look them up for the grids.
    audited = [synth_refs[j] for j in synth_pick]
    grids = {}
    for space_name in sets:
        pairs = privacy.closest_pairs(audit, space_name, pcfg.grid_pairs)
        rows, titles = privacy.pairs_grid_rows(
            pairs,
            lambda j: synthetic[audited[j][0]][audited[j][1]]["image"],
            lambda t: data.source("train")[int(train_idx[t])]["image"],
            threshold=audit["spaces"][space_name]["threshold_distance"],
        )
        path = run.stage_dir("synthesize") / f"closest_pairs_{space_name}.png"
        if run.is_host0:
            save_image_grid(
                path,
                rows,
                row_titles=titles,
                title=f"closest pairs ({space_name}): synthetic, then its nearest training image",
                footer="real training images: keep inside the hospital; not part of the release",
            )
        grids[space_name] = str(path)
    for line in audit["reasons"]:
        logging.info("synthesize: privacy: %s", line)
    verdict = "releasable" if audit["releasable"] else "NOT releasable"
    print(f"== synthesize: privacy audit: {verdict}; " + "; ".join(audit["reasons"]), flush=True)
    return audit, grids


def _combination_counts(labels: np.ndarray, names) -> dict[str, int]:
    combos = label_combinations(labels) if len(labels) else None
    if combos is None:
        return {}
    return {
        label_combination_name(c, names, max_len=200): int(k)
        for c, k in zip(combos.combos, combos.counts, strict=True)
    }
