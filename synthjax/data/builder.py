"""What every dataset builder shares: the base TFDS builder, its rows, tally and report.

Data flow: a dataset module (`chexpert`, `nih_cxr14`, `rsna_ich`, `folder`) subclasses
`SourceBuilder` and says how to find its source (`find_root`), which index files identify it
(`index_files`), how to sort the source into per-split rows (`plan`) and how to decode one row
(`decoder`). This module turns that into the examples of each split
(`examples_by_split(manual_dir)`: rows decoded in worker processes, skipped rows counted,
statistics kept) and the preparation report; `synthjax.data.builds` writes the examples into
shards once and reuses them after.

Every source row is accounted for: kept, or skipped under one counted reason (the builder's
SKIP_REASONS, first that applies), and listed in the report when it is a data problem rather
than a choice (FILTER_REASONS). Patients are split 80/10/10 by a hash of their id alone
(`patient_split`), so no patient crosses splits and none moves when data is added.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data.image_ops import is_power_of_two, load_pyramid
from synthjax.data.shards import PATIENT, image_features
from synthjax.data.source_files import source_fingerprint
from synthjax.data.workers import BadInput, ordered_map

REPORT_FILE = "prepare_report.json"
# Skip reasons that are the builder's choices (a view it does not use, an image without a
# positive label when asked to drop those), not problems of the data: counted, not listed.
FILTER_REASONS = ("not_frontal", "no_positive_label")
MAX_LISTED_BAD_ROWS = 2000
PROGRESS_SECONDS = 10.0


def check_pyramid_sizes(resolution: int, base_resolution: int) -> None:
    """Refuses a pyramid level that 2x2 box steps from `base_resolution` cannot reach."""
    if not (is_power_of_two(base_resolution) and base_resolution >= 4):
        raise ConfigError(
            "dataset.base_resolution", f"got {base_resolution}", "use a power of two such as 256"
        )
    if not is_power_of_two(resolution) or resolution > base_resolution:
        raise ConfigError(
            "dataset.resolution",
            f"got {resolution}",
            f"use a power of two <= dataset.base_resolution ({base_resolution})",
        )


def patient_uniform(patient_id: str) -> float:
    """A number in [0, 1) fixed by the id alone: the first 8 bytes of its sha256.

    No seed, no dependence on which other patients exist, so a patient never changes split
    when data is added or removed.
    """
    digest = hashlib.sha256(patient_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def patient_split(patient_id: str) -> str:
    """'train' / 'validation' / 'test' with probabilities 0.8 / 0.1 / 0.1, stable forever."""
    u = patient_uniform(patient_id)
    return "train" if u < 0.8 else ("validation" if u < 0.9 else "test")


@dataclasses.dataclass(frozen=True)
class SourceRow:
    """One kept source row: where its image is and its final label vector (float32[K])."""

    key: str  # the record's `id`: private bookkeeping, e.g. patientNNNNN/studyN/viewN_frontal
    patient: str
    file: epath.Path
    csv_path: str
    labels: np.ndarray


class Tally:
    """Counts of every row by what happened to it, and the list of bad rows."""

    def __init__(self, reasons: Iterable[str]):
        self.rows_read: dict[str, int] = {}
        self.counts = {"kept": 0, **{reason: 0 for reason in reasons}}
        self.bad_rows: list[dict[str, str]] = []
        self.bad_rows_omitted = 0
        self.splits: dict[str, dict] = {}
        self.csv_duplicate_rows = 0  # exact repeats of an earlier row: counted, harmless

    def skip(self, reason: str, path: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if reason in FILTER_REASONS:
            return
        if len(self.bad_rows) < MAX_LISTED_BAD_ROWS:
            self.bad_rows.append({"path": path, "reason": reason, "detail": detail})
        else:
            self.bad_rows_omitted += 1


def decode_row(row: SourceRow, *, base_resolution: int, resolution: int) -> np.ndarray:
    """`image_ops.load_pyramid` of the row's file with a channel axis: uint8[r, r, 1]."""
    return load_pyramid(row.file, base_resolution, resolution)[:, :, None]


def config_settings(config: tfds.core.BuilderConfig) -> dict[str, Any]:
    """The fields a builder config adds to TFDS's own, in order, as JSON values."""
    own = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    return {
        f.name: list(value) if isinstance(value := getattr(config, f.name), tuple) else value
        for f in dataclasses.fields(config)
        if f.name not in own
    }


class SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A dataset read from a raw folder (`manual_dir`) at one resolution, split by patient.

    Subclasses set the class attributes below and implement `find_root`, `index_files`,
    `plan` and `decoder`; their config has `resolution` (and whatever else changes the data).
    There are no predefined variants (TFDS's BUILDER_CONFIGS): each module's prepare function
    makes the config from the run's settings.
    Not registered with TFDS; `synthjax.data.builds.prepare_with_reuse` builds them.
    """

    TITLE: ClassVar[str] = ""
    LABELS: ClassVar[tuple[str, ...]] = ()
    SKIP_REASONS: ClassVar[tuple[str, ...]] = ()
    DESCRIPTION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str | None] = None
    CITATION: ClassVar[str | None] = None
    UNIT: ClassVar[str] = "image"  # what one record is, in error messages
    REPORT_UNIT: ClassVar[str | None] = None  # the report's name for rows read, if not CSV rows
    EMPTY_SPLIT_WHY: ClassVar[str] = "too few patients for an 80/10/10 patient split"
    # The stored format's version and what it holds; a dataset that changes what it writes
    # sets its own VERSION and says what changed in RELEASE_NOTES. The version is part of the
    # dataset directory (`data_dir/<name>/<config>/<version>/`), so a build of an older
    # version is never reused: 1.1.0 added each record's patient id.
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTE: ClassVar[str] = ""
    PATIENT_NOTE: ClassVar[str] = "Each record keeps its patient id (`patient`)."
    # For TFDS's own `download_and_prepare`; `find_root`'s error says where to get the data.
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the folder holding the dataset's raw download as the manual dir "
        "(--config.dataset.manual_dir)."
    )
    # Processes decoding images (0 = every available core), and the pool `builds` opens for
    # them. Not part of the config: they change how fast, not what, is written.
    workers: int = 0
    pool = None

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS looks for a checksums file beside the builder's source, which needs the optional
        # importlib_resources package for an installed module. A manual-download dataset has
        # no checksums, so there is nothing to find.
        return None

    @tfds.core.utils.classproperty
    @classmethod
    def RELEASE_NOTES(cls) -> dict[str, str]:
        return {str(cls.VERSION): f"{cls.RELEASE_NOTE} {cls.PATIENT_NOTE}".strip()}

    # What each dataset says about its source --------------------------------------------------

    def find_root(self, manual_dir: str | os.PathLike) -> epath.Path:
        """The dataset folder in or at `manual_dir`; DataNotFoundError says where to get it."""
        raise NotImplementedError

    def index_files(self) -> tuple[str, ...]:
        """The files (relative to the root) whose content identifies the source."""
        raise NotImplementedError

    def plan(self, root: epath.Path) -> dict[str, list[SourceRow]]:
        """Every source row sorted into per-split rows to decode, or skipped on `self.tally`."""
        raise NotImplementedError

    def decoder(self) -> Callable[[SourceRow], np.ndarray]:
        """A picklable function: a kept row -> its stored image, uint8[r, r, channels].

        It runs in worker processes (`workers.ordered_map`); raising `BadInput` skips the row
        under that reason, any other exception skips it as `corrupt_image`. By default an
        8-bit grayscale image file (`decode_row`).
        """
        config = self.builder_config
        return functools.partial(
            decode_row, base_resolution=config.base_resolution, resolution=config.resolution
        )

    def channels(self) -> int:
        return 1

    def description(self) -> str:
        return self.DESCRIPTION

    def metadata(self) -> dict[str, Any]:
        """dataset_info.json's metadata; the loader names label columns from `label_names`."""
        return {"label_names": list(self.LABELS)}

    # The examples ------------------------------------------------------------------------------

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.description(),
            features=image_features((r, r, self.channels()), len(self.LABELS), with_patient=True),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(self.metadata()),
        )

    def examples_by_split(self, manual_dir: str | os.PathLike) -> dict[str, Iterator]:
        """Reads the raw folder: per split, a stream of (key, example) as it is decoded.

        Starts a new tally; the report (`report()`) is complete once every stream is drained.

        Raises:
          DataNotFoundError: no source under `manual_dir`, or a split left without a row.
        """
        root = self.find_root(manual_dir)
        self.tally = Tally(self.SKIP_REASONS)
        self.root = root
        plans = self.plan(root)
        empty = [split for split, rows in plans.items() if not rows]
        if empty:
            outside = self.tally.counts.get("outside_manual_dir", 0)
            hint = (
                f" {outside} {self.UNIT}(s) lead outside {root} (by `..`, an absolute path or "
                "a symlink): move or copy those files into it; symlinks out of it are not "
                "followed."
                if outside
                else ""
            )
            raise DataNotFoundError(
                f"no usable {self.UNIT} for the {empty} split(s) in {root}: "
                f"{self.EMPTY_SPLIT_WHY}, or every row was skipped ({self.tally.counts}).{hint}"
            )
        return {split: self._generate_examples(split, rows) for split, rows in plans.items()}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        # TFDS's own entry point, for `download_and_prepare`; `builds` calls the public one.
        return self.examples_by_split(dl_manager.manual_dir)

    def _generate_examples(self, split: str, rows: list[SourceRow]) -> Iterator:
        config, tally = self.builder_config, self.tally
        started = last_log = time.monotonic()
        kept, patients = 0, set()
        label_sums = np.zeros(len(self.LABELS), np.float64)
        decoded = ordered_map(self.decoder(), rows, workers=self.workers, pool=self.pool)
        for done, (row, image) in enumerate(decoded, start=1):
            if isinstance(image, BadInput):
                tally.skip(image.reason, row.csv_path, image.detail)
                continue
            if isinstance(image, Exception):  # any decoder failure is a corrupt file
                tally.skip("corrupt_image", row.csv_path, f"{type(image).__name__}: {image}")
                continue
            kept += 1
            patients.add(row.patient)
            label_sums += row.labels
            yield (
                row.key,
                {
                    "image": image,
                    "labels": row.labels,
                    "id": row.key,
                    PATIENT: row.patient,
                },
            )
            now = time.monotonic()
            if now - last_log >= PROGRESS_SECONDS:
                last_log = now
                logging.info(
                    "%s %s %s: %d/%d images, %.0f images/s",
                    self.name,
                    config.name,
                    split,
                    done,
                    len(rows),
                    done / (now - started),
                )
        if rows and not kept:
            last = tally.bad_rows[-1] if tally.bad_rows else {}
            raise DataNotFoundError(
                f"none of the {len(rows)} {split} images in {self.root} could be read "
                f"(counts so far: {tally.counts}); the last failure: "
                f"{last.get('path')}: {last.get('detail')}"
            )
        tally.counts["kept"] += kept
        tally.splits[split] = {
            "images": kept,
            "patients": len(patients),
            "label_prevalence": dict(
                zip(self.LABELS, (label_sums / max(kept, 1)).round(4).tolist(), strict=True)
            ),
        }
        logging.info(
            "%s %s %s: %d images from %d patients in %.0f s",
            self.name,
            config.name,
            split,
            kept,
            len(patients),
            time.monotonic() - started,
        )

    # The report --------------------------------------------------------------------------------

    def settings(self) -> dict:
        """The config fields recorded in the report, plus the source folder."""
        return {**config_settings(self.builder_config), "source": os.fspath(self.root)}

    def fingerprint(self) -> dict[str, dict]:
        """`source_fingerprint` of this dataset's index files."""
        return source_fingerprint(self.root, self.index_files())

    def report(self) -> dict:
        """The preparation report (see `builds.prepare_with_reuse`) from what was seen so far."""
        config, tally = self.builder_config, self.tally
        report = {
            "dataset": self.name,
            "title": self.TITLE,
            "config": config.name,
            "settings": self.settings(),
            "source_fingerprint": self.fingerprint(),
            "rows_read": dict(tally.rows_read),
            "counts": dict(tally.counts),
            "splits": {s: tally.splits[s] for s in SPLITS if s in tally.splits},
            "bad_rows": list(tally.bad_rows),
            "bad_rows_omitted": tally.bad_rows_omitted,
        }
        if self.REPORT_UNIT:
            report["unit"] = self.REPORT_UNIT
        return report


def format_report(report: dict) -> str:
    """A short table of a preparation report: rows by outcome, split sizes."""
    rows_read = sum(report["rows_read"].values())
    unit = report.get("unit", "CSV rows")
    lines = [
        f"{report.get('title', 'CheXpert')} {report['config']}  "
        f"(source: {report['settings']['source']})",
        f"  {unit + ' read':28s}{rows_read:>10d}",
    ]
    for reason, count in report["counts"].items():
        kind = "filtered" if reason in FILTER_REASONS else ("" if reason == "kept" else "bad")
        lines.append(f"  {reason:28s}{count:>10d}  {kind}".rstrip())
    if report.get("csv_duplicate_rows"):
        lines.append(f"  {'(repeated CSV rows)':28s}{report['csv_duplicate_rows']:>10d}  ignored")
    lines.append(f"  {'split':16s}{'images':>10s}{'patients':>10s}")
    for split, stats in report["splits"].items():
        lines.append(f"  {split:16s}{stats['images']:>10d}{stats['patients']:>10d}")
    listed = len(report["bad_rows"])
    if listed:
        more = report["bad_rows_omitted"]
        lines.append(
            f"  {listed} bad rows listed in prepare_report.json"
            + (f" ({more} more not listed)" if more else "")
        )
    return "\n".join(lines)
