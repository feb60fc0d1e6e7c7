"""Building a dataset once: the lock, the reuse rules and the shard writer.

Data flow: a dataset module's `prepare_*` makes its builder config and calls
`prepare_with_reuse`, which, under a lock beside the dataset directory, either reuses a
complete build of the same source or writes a new one: `write_dataset` streams the builder's
`examples_by_split` into array_record shards (`synthjax.data.shards`) in a temporary
directory, writes the preparation report and `dataset_info.json` last, and renames the
directory into place. `tfds.builder_from_directory(dataset_dir).as_data_source()` (the
loader) reads the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from synthjax.data import remote
from synthjax.data.builder import REPORT_FILE, SourceBuilder
from synthjax.data.shards import write_metadata, write_split
from synthjax.data.source_files import source_fingerprint
from synthjax.data.workers import process_pool


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


def prepare_with_reuse(
    builder_class: type[SourceBuilder],
    config: tfds.core.BuilderConfig,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    workers: int,
) -> tuple[epath.Path, dict]:
    """Builds `builder_class` with `config`, or reuses a complete, up-to-date build.

    The builder's `find_root(manual_dir)` locates the source (raising a people-facing
    DataNotFoundError before TFDS's own); the fingerprint of its index files must equal the
    report's `source_fingerprint` for a build to be reused (content, not modification time).
    A build whose source folder is gone is reused as it is. `workers` processes decode images
    (0 = every available core).

    Returns:
      (dataset_dir, report). `dataset_dir` (`data_dir/<name>/<config>/<version>/`) holds
      dataset_info.json and the shards. The report (JSON-able, also at
      `dataset_dir/prepare_report.json`) has the settings, the source rows read, `counts` of
      every row by outcome (kept + each skip reason = rows read), the listed bad rows (at most
      MAX_LISTED_BAD_ROWS, then `bad_rows_omitted`), and per split the images, patients and
      label prevalence; `builder.format_report` prints it.

    A build is complete only once `write_dataset` has renamed its temporary directory into
    place: a build killed halfway leaves only that directory, which the next call deletes
    before building afresh.
    """
    name = builder_class.name
    builder = builder_class(config=config, data_dir=os.fspath(data_dir))
    dataset_dir = epath.Path(builder.data_dir)
    report_path = dataset_dir / REPORT_FILE
    # One builder per dataset version at a time: sweep jobs sharing a data_dir wait here, then
    # reuse what the first one built.
    with build_lock(dataset_dir):
        if (dataset_dir / "dataset_info.json").exists():
            report = json.loads(report_path.read_text()) if report_path.exists() else None
            if report is not None and not epath.Path(manual_dir).exists():
                logging.info("%s: reusing %s (source folder no longer present)", name, dataset_dir)
                return dataset_dir, report
            root = builder.find_root(manual_dir)
            # Content, not modification time: a copied or touched CSV is the same source.
            fingerprint = source_fingerprint(root, builder.index_files())
            same = _content(report.get("source_fingerprint") if report else None) == _content(
                fingerprint
            )
            if report is not None and same:
                logging.info("%s: reusing %s", name, dataset_dir)
                return dataset_dir, report
            # Only this version directory goes; TFDS cannot re-prepare over a finished one.
            logging.warning("%s: %s is stale or has no report; rebuilding it", name, dataset_dir)
            dataset_dir.rmtree()
            builder = builder_class(config=config, data_dir=os.fspath(data_dir))
        else:
            builder.find_root(manual_dir)
        remove_killed_builds(dataset_dir)
        builder.workers = workers
        write_dataset(builder, manual_dir, dataset_dir)
        return dataset_dir, json.loads(report_path.read_text())


def _shard_size(features: tfds.features.FeaturesDict) -> int:
    """Records per shard: about 64 MB of pixels, between 256 and 8192 records."""
    shape = features["image"].shape
    image_bytes = int(np.prod(shape))
    return int(np.clip((64 << 20) // max(image_bytes, 1), 256, 8192))


def write_dataset(builder: SourceBuilder, manual_dir: str | os.PathLike, dataset_dir: epath.Path):
    """Streams every split of `builder` into array_record shards, then marks it complete.

    TFDS's own writer buffers each split to shuffle it and, past 1 GB, spills the buffer
    through TensorFlow's file API, which this project does not install. Writing here keeps
    one record in memory at a time, in the plan's order (training shuffles at read time),
    into the same format and directory layout `tfds.builder_from_directory` reads.

    Everything goes into `incomplete.<random>_<version>/` beside `dataset_dir` (TFDS's own
    convention), and `dataset_info.json` is written last, before the rename: a killed build
    is never read as complete.

    A `dataset_dir` in a bucket is built on this machine's disk, then uploaded
    (`remote.publish`, `dataset_info.json` last); the local build stays as its mirror.
    """
    if remote.is_remote(dataset_dir):
        scratch = epath.Path(tempfile.mkdtemp(prefix="build-", dir=remote.scratch_dir()))
        try:
            local_dir = scratch / dataset_dir.name
            write_dataset(builder, manual_dir, local_dir)
            remote.publish(Path(local_dir), dataset_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    suffix = hashlib.sha256(os.urandom(8)).hexdigest()[:6].upper()
    prefix = tfds.core.constants.INCOMPLETE_PREFIX
    tmp_dir = dataset_dir.parent / f"{prefix}{suffix}_{dataset_dir.name}"
    tmp_dir.mkdir(parents=True)
    info = builder.info
    features = info.features
    lengths = {}
    with process_pool(builder.workers) as builder.pool:
        for split, examples in builder.examples_by_split(epath.Path(manual_dir)).items():
            lengths[split] = write_split(
                tmp_dir,
                name=builder.name,
                split=split,
                features=features,
                records=(example for _, example in examples),
                shard_size=_shard_size(features),
            )
    builder.pool = None
    (tmp_dir / REPORT_FILE).write_text(json.dumps(builder.report(), indent=2))
    metadata = dict(info.metadata or {})
    label_names = metadata.pop("label_names", list(builder.LABELS))
    write_metadata(
        tmp_dir,
        name=builder.name,
        features=features,
        shard_lengths=lengths,
        label_names=label_names,
        description=info.description,
        version=str(builder.VERSION),
        metadata=metadata,
        homepage=info.homepage,
        citation=info.citation,
    )
    tmp_dir.rename(dataset_dir)


def _content(fingerprint: dict | None) -> dict:
    return {name: entry.get("sha256") for name, entry in (fingerprint or {}).items()}


@contextlib.contextmanager
def build_lock(dataset_dir: epath.Path) -> Iterator[None]:
    """An exclusive lock beside `dataset_dir` (local disks; elsewhere, no lock): builds, and
    phantoms, shared by several jobs are written by one at a time."""
    lock_path = dataset_dir.parent / f".{dataset_dir.name}.lock"
    if remote.is_remote(lock_path):  # a bucket: no flock there
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.fspath(lock_path), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remove_killed_builds(dataset_dir: epath.Path) -> None:
    """Deletes the temporary directories of builds that were killed before finishing.

    TFDS writes into `incomplete.<random>_<version>/` and renames it into place at the end, so
    a killed build is never read as complete; but its temporary directory would stay on disk.
    Called under the build lock, so no live build owns one.
    """
    prefix = tfds.core.constants.INCOMPLETE_PREFIX
    for stale in dataset_dir.parent.glob(f"{prefix}*_{dataset_dir.name}"):
        logging.warning("removing %s, left by a build that did not finish", stale)
        stale.rmtree()
