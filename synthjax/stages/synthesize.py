"""Stage `synthesize`: the synthetic dataset, drawn, audited for copies and memorization,
and released shuffled.

The workdir's side of synthesis: the draft shards in `DIR/synthesize/draft/`, the release
in `DIR/synthetic/` with its `DATASET_CARD.json` (read from the `prepare` and `gan`
summaries) and `samples.png`, and the stage's summary. How images are drawn, audited and
replaced is the library's (`synthjax/synthesize.py`, whose docstring gives the steps).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath

from synthjax import synthesize
from synthjax.core import distributed
from synthjax.core.checkpoint import state_sha256
from synthjax.core.progress import Progress
from synthjax.core.workdir import SPLITS, Run, read_json, write_json_atomic
from synthjax.data import shards
from synthjax.data.loader import load_source
from synthjax.data.prepared import prepared
from synthjax.data.subsets import label_combinations
from synthjax.eval import privacy
from synthjax.eval.grids import label_combination_name, save_image_grid
from synthjax.synthesize import DATASET_NAME, DRAFT_NAME
from synthjax.train import gan

RELEASE_GRID = "samples.png"


def run(run: Run) -> dict[str, Any]:
    data = prepared(run)
    models, g_ema = gan.restore_generator(run)
    generator_sha = state_sha256(g_ema)
    generate = synthesize.compiled_generator(run, models, g_ema)
    labels = {s: data.source(s).labels[data.subset.indices[s]] for s in SPLITS}
    draft_dir = _write_draft(run, generate, labels, generator_sha)
    draft = {s: load_source(draft_dir, s) for s in SPLITS}
    audit, grids, replacer = synthesize.memorization_audit(run, draft)
    if audit["audit_passed"]:
        replaced, dropped = replacer.replace(generate, labels)
    else:  # nothing to polish: the card says the dataset may not leave
        replaced, dropped = {s: {} for s in SPLITS}, {s: set() for s in SPLITS}
    final_labels = _write_release(run, draft, replaced, dropped)
    card = _card(run, audit, final_labels, replaced, dropped, generator_sha)
    if run.is_host0:
        _save_release_grid(run, final_labels["train"])
        write_json_atomic(run.synthetic_dir / "DATASET_CARD.json", card)
        if draft_dir.exists():  # synthetic, unshuffled: not needed now
            draft_dir.rmtree()
    distributed.barrier("synthesize: card written")
    # Order-free: the release order is secret, the images and labels are not.
    sources = {s: load_source(run.synthetic_dir, s) for s in SPLITS}
    return {
        "step": 0,
        "state_sha256": shards.records_sha256(sources, ordered=False),
        "counts": card["counts"],
        "dataset_dir": str(run.synthetic_dir),
        "releasable": audit["releasable"],
        "copy_rate": audit["copy_rate"],
        "replaced": card["release"]["replaced"],
        "dropped": card["release"]["dropped"],
        "privacy_grids": grids,
    }


def _write_draft(
    run: Run, generate: synthesize.Generator, labels, generator_sha: str
) -> epath.Path:
    """The draft dataset (real order, ids `draft-...`) in `DIR/synthesize/draft/`; shards
    already written for the same generator are kept, those of another are removed."""
    cfg = run.config
    draft_dir = run.stage_dir("synthesize") / DRAFT_NAME
    marker = draft_dir / "generator.json"
    if run.is_host0:
        if draft_dir.exists() and (
            not marker.exists() or read_json(marker).get("ema_params_sha256") != generator_sha
        ):
            logging.info("synthesize: the draft is of another generator; starting over")
            draft_dir.rmtree()
        if not marker.exists():
            write_json_atomic(marker, {"ema_params_sha256": generator_sha})
    distributed.barrier("synthesize: draft directory ready")
    batch = cfg.synthesize.batch_size
    shard_size = max(batch, (cfg.synthesize.shard_size // batch) * batch)
    image_shape = prepared(run).source("train").image_shape
    features = shards.image_features(image_shape, len(prepared(run).label_names))
    shard_lengths: dict[str, list[int]] = {}
    for split_id, split in enumerate(SPLITS):
        y = labels[split]
        n = len(y)
        num_shards = max(1, -(-n // shard_size))
        key_data = synthesize.split_key(cfg, split_id)
        progress = Progress(f"synthesize[{split}]", max(1, num_shards), items_per_step=shard_size)
        shard_lengths[split] = []
        for s in range(num_shards):
            lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
            shard_lengths[split].append(hi - lo)
            path = shards.shard_path(draft_dir, DRAFT_NAME, split, s, num_shards)
            if not path.exists():  # else written by an earlier, interrupted run
                images = generate(key_data, np.arange(lo, hi), y[lo:hi])
                if s % jax.process_count() == jax.process_index():  # hosts share the writing
                    shards.write_shard(
                        path,
                        features,
                        (
                            {
                                "image": images[i],
                                "labels": y[lo + i],
                                "id": f"draft-{split}-{lo + i}",
                            }
                            for i in range(hi - lo)
                        ),
                    )
            progress.update(s + 1)
    _write_metadata(
        run,
        draft_dir,
        DRAFT_NAME,
        features,
        shard_lengths,
        "synthesize's draft: unshuffled, unaudited; never released",
        which="draft ",
    )
    return draft_dir


def _write_release(run: Run, draft, replaced, dropped) -> dict[str, np.ndarray]:
    """The released dataset in `DIR/synthetic/`: the kept draft images (or their
    replacements) in a secretly shuffled order. Returns each split's label vectors."""
    cfg, out_dir = run.config, run.synthetic_dir
    if run.is_host0 and out_dir.exists():
        out_dir.rmtree()  # a half-written release of an interrupted run
    if run.is_host0:
        out_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier("synthesize: release directory cleared")
    rng = np.random.default_rng(synthesize.secret_seed())
    features = shards.image_features(draft["train"].image_shape, len(prepared(run).label_names))
    shard_size = max(1, cfg.synthesize.shard_size)
    shard_lengths, final_labels = {}, {}
    for split in SPLITS:
        keep = np.array([i for i in range(len(draft[split])) if i not in dropped[split]], np.int64)
        order = rng.permutation(keep)
        final_labels[split] = draft[split].labels[order] if len(order) else draft[split].labels[:0]
        num_shards = max(1, -(-len(order) // shard_size))
        shard_lengths[split] = []
        for s in range(num_shards):
            part = order[s * shard_size : (s + 1) * shard_size]
            shard_lengths[split].append(len(part))
            if s % jax.process_count() != jax.process_index():
                continue

            def records(part=part, base=s * shard_size, split=split):
                for n, i in enumerate(part):
                    record = draft[split][int(i)]
                    image = replaced[split].get(int(i), record["image"])
                    yield {
                        "image": image,
                        "labels": record["labels"],
                        "id": f"{DATASET_NAME}-{split}-{base + n:07d}",
                    }

            shards.write_shard(
                shards.shard_path(out_dir, DATASET_NAME, split, s, num_shards), features, records()
            )
    _write_metadata(
        run, out_dir, DATASET_NAME, features, shard_lengths, synthesize.description(cfg)
    )
    return final_labels


def _write_metadata(
    run: Run, directory, name: str, features, shard_lengths, description: str, which: str = ""
) -> None:
    """The dataset's metadata, by host 0 once every host has written its shards (`which`:
    "draft " names the draft in the barriers)."""
    distributed.barrier(f"synthesize: every {which}shard written")
    if run.is_host0:
        shards.write_metadata(
            directory,
            name=name,
            features=features,
            shard_lengths=shard_lengths,
            label_names=prepared(run).label_names,
            description=description,
        )
    distributed.barrier(f"synthesize: {which}metadata written")


def _save_release_grid(run: Run, labels: np.ndarray, rows: int = 8, cols: int = 8) -> None:
    """`synthetic/samples.png`: released (audited, redrawn) training-split images, a row per
    label combination, the most frequent first. The picture of the release that `export`
    ships; the GAN's own grids in `gan/samples/` show unaudited draws and stay inside."""
    combos = label_combinations(labels) if len(labels) else None
    if combos is None:
        return
    source = load_source(run.synthetic_dir, "train")
    blank = np.full(source.image_shape, 255, np.uint8)
    grid, titles = [], []
    for combo in combos.combos[:rows]:
        where = np.flatnonzero((labels == combo).all(axis=1))[:cols]
        cells = [source[int(i)]["image"] for i in where]
        grid.append(np.stack(cells + [blank] * (cols - len(cells))))
        titles.append(label_combination_name(combo, prepared(run).label_names))
    save_image_grid(
        run.synthetic_dir / RELEASE_GRID,
        np.stack(grid),
        row_titles=titles,
        title="synthetic images of the release (audited), a row per label combination",
    )


def _card(run: Run, audit, final_labels, replaced, dropped, generator_sha) -> dict[str, Any]:
    cfg, data = run.config, prepared(run)
    gan_summary = run.summary("gan")
    prepare_summary = run.summary("prepare")
    names = data.label_names
    return {
        "name": DATASET_NAME,
        "description": synthesize.description(cfg),
        "source_dataset": {
            "name": cfg.dataset.name,
            "phantom": bool(prepare_summary.get("phantom", False)),
            "attribution": prepare_summary.get("attribution"),
            "prepared_sha256": prepare_summary.get("state_sha256"),
        },
        "resolution": cfg.dataset.resolution,
        "image_shape": list(data.source("train").image_shape),
        "label_names": list(names),
        "counts": {s: len(final_labels[s]) for s in SPLITS},
        "label_prevalence": {
            s: dict(
                zip(
                    names,
                    (y.mean(0) if len(y) else np.zeros(len(names))).round(4).tolist(),
                    strict=True,
                )
            )
            for s, y in final_labels.items()
        },
        "label_combinations": {
            s: synthesize.combination_counts(y, names) for s, y in final_labels.items()
        },
        "generator": {
            "arch": cfg.gan.arch,
            "state_sha256": gan_summary["state_sha256"],
            "ema_params_sha256": generator_sha,
            "kimg": gan_summary.get("kimg"),
            "selected": gan_summary.get("selected"),
            "recipe": gan_summary.get("recipe"),
        },
        "release": {
            "order": "shuffled with a secret seed drawn from the OS and recorded nowhere",
            "replaced": int(sum(len(r) for r in replaced.values())),
            "dropped": int(sum(len(d) for d in dropped.values())),
            "per_split": {
                s: {"replaced": len(replaced[s]), "dropped": len(dropped[s])} for s in SPLITS
            },
            "note": (
                "images closer to a training image than all but the audit's percentile of "
                "new patients were drawn again from a fresh latent, or dropped"
                if audit["audit_passed"]
                else "the audit failed: nothing was replaced"
                + (
                    ", and the dataset leaves only by the recorded override"
                    if audit["releasable"]
                    else ", and the dataset may not leave"
                )
            ),
        },
        "releasable": audit["releasable"],
        "privacy": privacy.strip_arrays(audit),
        # Folder names, file names and URLs on the hospital's machines stay there.
        "config": synthesize.withhold_paths(json.loads(cfg.to_json_best_effort())),
    }
