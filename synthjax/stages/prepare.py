"""Stage `prepare`: the raw folder (or the built-in phantom) -> prepared shards, the
benchmark subset and the duplicates between splits.

With `dataset.phantom.enabled` and no `manual_dir`, it first writes the dataset's built-in
phantom (`synthjax.data.phantoms`, in the layout of the real download) into the workdir, so
the phantom goes through exactly the ingestion path real data does. Then the dataset's
builder (found through `synthjax.data.registry`) prepares the requested resolution (reused
if already prepared in `data_dir`), and the subset rules (`num_classes`, `samples_per_class`,
`validation_per_class`, `test_per_class`) pick what every later stage trains and tests on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from synthjax.core.errors import ConfigError
from synthjax.core.workdir import SPLITS, Run, write_json_atomic
from synthjax.data import builds, shards
from synthjax.data.builder import format_report
from synthjax.data.duplicates import find_duplicates
from synthjax.data.loader import load_source
from synthjax.data.phantoms import store
from synthjax.data.registry import PHANTOM_DATASETS, REGISTRY
from synthjax.data.subsets import SUBSET_RULES, select_subset


def ensure_phantom(run: Run) -> epath.Path:
    """The dataset's phantom folder, written once (`phantoms.store.write_once`)."""
    ds = run.config.dataset
    dataset = REGISTRY[ds.name]
    phantom = dataset.phantom_module()
    settings = dataset.phantom_settings(ds)
    key = store.settings_key(settings)
    root = store.phantom_root(phantom.FOLDER, key, shared_dir=ds.phantom.dir, workdir=run.workdir)

    def write(root: epath.Path) -> dict:
        logging.info(
            "prepare: writing the %s phantom (%d patients) to %s",
            ds.name,
            settings["num_patients"],
            root,
        )
        return phantom.write_phantom(root, settings, workers=ds.prepare_workers)

    return store.write_once(root, key, write)


def _manual_dir(run: Run) -> epath.Path:
    """The raw folder: `dataset.manual_dir`, or the phantom's; ConfigError when neither."""
    ds = run.config.dataset
    if ds.manual_dir:
        return epath.Path(ds.manual_dir)
    has_phantom = ds.name in PHANTOM_DATASETS
    if ds.phantom.enabled and has_phantom:
        return ensure_phantom(run)
    module = REGISTRY[ds.name].module()
    download = f" (download it from {module.DOWNLOAD})" if module.DOWNLOAD else ""
    raise ConfigError(
        "dataset.manual_dir",
        f"no raw data folder given for {ds.name!r}"
        + (" and the phantom is disabled" if has_phantom else ""),
        f"pass --config.dataset.manual_dir=<{module.MANUAL_DIR}>{download}"
        + (", or --config.dataset.phantom.enabled=True" if has_phantom else ""),
    )


def _check_both_labels(split_labels: dict[str, np.ndarray], subset) -> None:
    """Refuses a split without positives and negatives of some label among the kept images.

    AUROC needs both, or there is nothing to select the classifier on (validation) or to
    report (test).
    """
    for split in SPLITS:
        labels = split_labels[split][subset.indices[split]]
        varying = len(labels) > 0 and bool(np.any(labels.min(0) != labels.max(0)))
        if not varying:
            raise ConfigError(
                "dataset.num_classes",
                f"the {split} split has {len(labels)} images of the kept label combinations "
                "and no label with both positive and negative images",
                "keep more label combinations (dataset.num_classes) or use a larger dataset",
            )


def run(run: Run) -> dict[str, Any]:
    ds = run.config.dataset
    manual_dir = _manual_dir(run)
    data_dir = builds.shards_dir(
        epath.Path(ds.data_dir) if ds.data_dir else run.workdir / "data", manual_dir
    )
    tfds.disable_progress_bar()  # our own progress lines say the rate; tqdm bars garble logs
    dataset = REGISTRY[ds.name]
    dataset_dir, report = dataset.prepare(manual_dir, data_dir, ds)
    print(format_report(report), flush=True)
    stage_dir = run.stage_dir("prepare")
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stage_dir / "prepare_report.json", report)

    sources = {s: load_source(dataset_dir, s) for s in SPLITS}
    label_names = sources["train"].label_names
    split_labels = {s: src.labels for s, src in sources.items()}
    rules = {name: ds[name] for name in SUBSET_RULES}
    subset = select_subset(
        split_labels, **rules, seed=run.config.seed, label_names=list(label_names)
    )
    _check_both_labels(split_labels, subset)
    with (stage_dir / "subset.npz").open("wb") as f:
        np.savez(f, combos=subset.combos, **{f"indices_{s}": subset.indices[s] for s in SPLITS})
    logging.info(
        "prepare: kept %d label combinations; images per split: %s",
        len(subset.combos),
        {s: len(i) for s, i in subset.indices.items()},
    )
    duplicates = find_duplicates(sources, subset.indices)
    write_json_atomic(stage_dir / "duplicates.json", duplicates)
    if duplicates["heldout_in_train"]:
        print(
            f"== prepare: {len(duplicates['heldout_in_train'])} held-out image(s) are "
            "pixel-identical to a training image (a patient under two ids, or a copied file): "
            "they stay out of the memorization audit's reference; listed in "
            f"{stage_dir / 'duplicates.json'}",
            flush=True,
        )
    digest = hashlib.sha256(shards.records_sha256(sources).encode())
    for split in SPLITS:
        digest.update(subset.indices[split].tobytes())
    return {
        "step": 0,
        "state_sha256": digest.hexdigest(),
        "dataset_dir": str(dataset_dir),
        "label_names": list(label_names),
        "phantom": not ds.manual_dir,  # only the built-in phantom runs without a raw folder
        "attribution": getattr(dataset.module(), "ATTRIBUTION", None),
        "num_combinations": len(subset.combos),
        "images": {s: len(subset.indices[s]) for s in SPLITS},
        "images_per_combination": subset.counts(split_labels),
        "prepared_images": {s: len(src) for s, src in sources.items()},
        # Patient-level statistics resample these (`evaluate.interval_level`).
        "patients": {
            s: len(np.unique(src.patients[subset.indices[s]])) for s, src in sources.items()
        },
        "duplicate_images": {k: len(v) for k, v in duplicates.items()},
    }
