"""The `prepare` stage: raw folder -> prepared shards -> the benchmark subset.

With `dataset.phantom.enabled` and no `manual_dir`, it first writes the built-in phantom
(a CheXpert-layout folder of JPEGs and CSVs) into `workdir/phantom`, so the phantom goes
through exactly the ingestion path real data does. Then the TFDS builder prepares the
requested resolution (reused if already prepared in `data_dir`), and the subset rules
(`num_classes`, `samples_per_class`, `validation_per_class`, `test_per_class`) pick what
every later stage trains and tests on.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from synthjax.core.errors import ConfigError
from synthjax.core.workdir import SPLITS, Run, read_json, write_json_atomic
from synthjax.data import chexpert, nih_cxr14, rsna_ich, shards
from synthjax.data.loader import load_source
from synthjax.data.phantoms.ct import writer as phantom_ct
from synthjax.data.phantoms.cxr import writer as phantom_cxr
from synthjax.data.registry import DATASETS, PHANTOM_DATASETS
from synthjax.data.subsets import select_subset


def phantom_settings(run: Run) -> dict[str, Any]:
    """The keyword arguments of the dataset's phantom writer (they also key its marker)."""
    ds = run.config.dataset
    p = ds.phantom
    common = {
        "num_patients": p.num_patients,
        "image_size": p.image_size,
        "noise": p.noise,
        "subtlety": p.subtlety,
        "seed": p.seed,
    }
    if ds.name == "rsna_ich":
        return {
            **common,
            "slices_per_series": (p.min_slices, p.max_slices),
            "workers": ds.prepare_workers or None,
        }
    return {**common, "anatomy_variation": p.anatomy_variation}


def ensure_phantom(run: Run) -> epath.Path:
    """Writes the dataset's phantom folder once (a `COMPLETE.json` marker says it is whole).

    A phantom killed halfway has no marker, so the next run deletes and rewrites it. With
    `dataset.phantom.dir` the folder is named after the settings, so runs that share the
    directory (a sweep) share the phantoms they agree on and never overwrite another's;
    writers of the same phantom take turns through a lock.
    """
    name = run.config.dataset.name
    settings = phantom_settings(run)
    key = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    key.pop("workers", None)  # how fast, not what: the output does not depend on it
    folder = "phantom" if name == "chexpert" else f"phantom_{name}"
    if run.config.dataset.phantom.dir:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        root = epath.Path(run.config.dataset.phantom.dir) / f"{folder}_{digest}"
    else:
        root = run.workdir / folder
    marker = root / "COMPLETE.json"
    with chexpert.build_lock(root):
        if marker.exists() and read_json(marker)["settings"] == key:
            return root
        if root.exists():
            root.rmtree()  # half-written, or written with other settings
        logging.info(
            "prepare: writing the %s phantom (%d patients) to %s",
            name,
            settings["num_patients"],
            root,
        )
        if name == "rsna_ich":
            stats = phantom_ct.write_rsna_phantom(root, **settings)
        else:
            stats = phantom_cxr.write_chexpert_phantom(root, **settings)
        write_json_atomic(marker, {"settings": key, "stats": stats})
    return root


MANUAL_DIR_HINT = {
    "chexpert": "the folder holding CheXpert-v1.0-small/",
    "nih_cxr14": "the folder holding Data_Entry_2017.csv and images/",
    "rsna_ich": "the folder holding stage_2_train.csv and stage_2_train/",
    "folder": "your folder of images with its labels.csv",
}


def shards_dir(data_dir: epath.Path, manual_dir: epath.Path) -> epath.Path:
    """Where the prepared shards of `manual_dir` go under `data_dir`: a folder per source.

    A builder's config names its settings (resolution, label policy, windows), not the raw
    folder it read. Runs sharing `data_dir` (a sweep) with different raw folders, such as
    phantoms with different settings, would otherwise read whichever was built first.
    """
    path = str(manual_dir)
    if "://" not in path:
        path = os.path.realpath(path)
    return data_dir / f"source_{hashlib.sha256(path.encode()).hexdigest()[:10]}"


def _build(name: str, manual_dir: epath.Path, data_dir: epath.Path, ds) -> tuple:
    """Runs the dataset's builder: (dataset_dir, report)."""
    common = {
        "resolution": ds.resolution,
        "base_resolution": ds.base_resolution,
        "drop_no_positive": ds.drop_no_positive,
        "workers": ds.prepare_workers,
    }
    if name == "chexpert":
        return chexpert.prepare_chexpert(
            manual_dir, data_dir, uncertain_policy=ds.uncertain_policy, **common
        )
    if name == "nih_cxr14":
        return nih_cxr14.prepare_nih_cxr14(manual_dir, data_dir, **common)
    if name == "rsna_ich":
        return rsna_ich.prepare_rsna_ich(
            manual_dir, data_dir, windows=ds.ct.windows, context=ds.ct.context, **common
        )
    from synthjax.data import folder

    f = ds.folder
    return folder.prepare_folder(
        manual_dir,
        data_dir,
        labels_csv=f.labels_csv,
        image_column=f.image_column,
        patient_column=f.patient_column,
        label_columns=f.label_columns,
        channels=f.channels,
        dicom_window=f.dicom_window,
        allow_outside_paths=f.allow_outside_paths,
        **common,
    )


def run_stage(run: Run) -> dict[str, Any]:
    ds = run.config.dataset
    if ds.name not in DATASETS:
        raise ConfigError("dataset.name", f"unknown dataset {ds.name!r}", f"use one of {DATASETS}")
    if ds.manual_dir:
        manual_dir = epath.Path(ds.manual_dir)
    elif ds.phantom.enabled and ds.name in PHANTOM_DATASETS:
        manual_dir = ensure_phantom(run)
    else:
        has_phantom = ds.name in PHANTOM_DATASETS
        raise ConfigError(
            "dataset.manual_dir",
            f"no raw data folder given for {ds.name!r}"
            + (" and the phantom is disabled" if has_phantom else ""),
            f"pass --config.dataset.manual_dir=<{MANUAL_DIR_HINT[ds.name]}>"
            + (", or --config.dataset.phantom.enabled=True" if has_phantom else ""),
        )
    data_dir = shards_dir(
        epath.Path(ds.data_dir) if ds.data_dir else run.workdir / "data", manual_dir
    )
    tfds.disable_progress_bar()  # our own progress lines say the rate; tqdm bars garble logs
    phantom = not ds.manual_dir  # only the built-in phantom runs without a raw folder
    dataset_dir, report = _build(ds.name, manual_dir, data_dir, ds)
    print(chexpert.format_report(report), flush=True)
    stage_dir = run.stage_dir("prepare")
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stage_dir / "prepare_report.json", report)

    sources = {s: load_source(dataset_dir, s) for s in SPLITS}
    label_names = sources["train"].label_names
    split_labels = {s: src.labels for s, src in sources.items()}
    subset = select_subset(
        split_labels,
        num_classes=ds.num_classes,
        samples_per_class=ds.samples_per_class,
        validation_per_class=ds.validation_per_class,
        test_per_class=ds.test_per_class,
        min_class_count=ds.min_class_count,
        seed=run.config.seed,
        label_names=list(label_names),
    )
    for split in SPLITS:
        labels = split_labels[split][subset.indices[split]]
        # AUROC needs positives and negatives of some label, or there is nothing to select
        # the classifier on (validation) or to report (test).
        varying = len(labels) > 0 and bool(np.any(labels.min(0) != labels.max(0)))
        if not varying:
            raise ConfigError(
                "dataset.num_classes",
                f"the {split} split has {len(labels)} images of the kept label combinations "
                "and no label with both positive and negative images",
                "keep more label combinations (dataset.num_classes) or use a larger dataset",
            )
    with (stage_dir / "subset.npz").open("wb") as f:
        np.savez(f, combos=subset.combos, **{f"indices_{s}": subset.indices[s] for s in SPLITS})
    per_class = subset.counts(split_labels)
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
        "phantom": phantom,
        "attribution": nih_cxr14.ATTRIBUTION if ds.name == "nih_cxr14" else None,
        "num_combinations": len(subset.combos),
        "images": {s: len(subset.indices[s]) for s in SPLITS},
        "images_per_combination": per_class,
        "prepared_images": {s: len(src) for s, src in sources.items()},
        "duplicate_images": {k: len(v) for k, v in duplicates.items()},
    }


def find_duplicates(sources, indices: dict[str, np.ndarray]) -> dict[str, list]:
    """Pixel-identical images among the kept records, by content hash.

    "heldout_in_train": [split, index] of validation and test images identical to a
    training image (the audit leaves them out of its reference: they would make new
    patients look like copies); "within_splits": [split, index] of repeats inside a split
    after their first occurrence. Indices are records of the prepared splits.
    """
    seen: dict[str, dict[bytes, int]] = {}
    out: dict[str, list] = {"heldout_in_train": [], "within_splits": []}
    for split in SPLITS:
        seen[split] = {}
        for i in indices[split]:
            image = np.ascontiguousarray(sources[split][int(i)]["image"])
            key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).digest()
            if key in seen[split]:
                out["within_splits"].append([split, int(i)])
            else:
                seen[split][key] = int(i)
            if split != "train" and key in seen["train"]:
                out["heldout_in_train"].append([split, int(i)])
    return out
