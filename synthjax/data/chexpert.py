"""CheXpert as a TFDS dataset: the raw CSV + JPEG download -> array_record shards.

Data flow: `manual_dir` (the real CheXpert-v1.0[-small] download, or the phantom that
`synthjax.data.phantoms.cxr` writes in the same layout) -> `prepare_chexpert` / `Chexpert`
(this module: frontal views, label policy, patient-level 80/10/10 split, resize to the base
resolution and 2x2 box pyramid down to the stored one) ->
`data_dir/chexpert/<config>/1.0.0/` holding the shards, `dataset_info.json` and
`prepare_report.json` -> `tfds.builder_from_directory(...).as_data_source()` -> grain.

Every CSV row is accounted for: kept, filtered (lateral view, no positive label) or skipped as
bad (cut short or with extra cells, no patient id, a path leading out of the dataset folder,
duplicate, unknown label value, missing or corrupt image), counted by reason and listed in the
report. Nothing outside the dataset folder is ever opened: `..`, absolute paths and symlinks
are followed on paper first (`Boundary`). The `id` feature
(`patientNNNNN/studyN/viewN_frontal`) is for internal bookkeeping only and never leaves the
private side.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import functools
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.data import remote
from synthjax.data.image_ops import box_pyramid, is_power_of_two, resize_square
from synthjax.data.shards import image_features, write_metadata, write_split
from synthjax.data.workers import BadInput, ordered_map, process_pool

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
UNCERTAIN_POLICIES = ("u_ones", "u_zeros")
SPLITS = ("train", "validation", "test")
DATASET_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
REPORT_FILE = "prepare_report.json"
# Each skipped row is counted once, under the first reason that applies, in this order.
SKIP_REASONS = (
    "short_row",
    "long_row",
    "not_frontal",
    "no_patient_id",
    "outside_manual_dir",
    "duplicate_path",
    "unknown_label_value",
    "missing_file",
    "no_positive_label",
    "corrupt_image",
)
FILTER_REASONS = ("not_frontal", "no_positive_label")  # choices, not data problems
MAX_LISTED_BAD_ROWS = 2000
DOWNLOAD_PAGE = (
    "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2"
)
INFO_PAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
_LABEL_VALUES = {"": 0.0, "1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0}
_PATIENT = re.compile(r"^patient\d+$")
_PROGRESS_SECONDS = 10.0


def config_name(
    resolution: int, uncertain_policy: str, drop_no_positive: bool, base_resolution: int
) -> str:
    """The TFDS config name, from every setting that changes the data: r32-u_ones-drop-b256."""
    keep = "drop" if drop_no_positive else "keep"
    return f"r{resolution}-{uncertain_policy}-{keep}-b{base_resolution}"


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


@dataclasses.dataclass(eq=False)
class ChexpertConfig(tfds.core.BuilderConfig):
    """One stored variant of CheXpert. The name is derived from the fields; do not pass it.

    resolution: stored side (power of two <= base_resolution); uncertain_policy: 'u_ones'
    (-1 -> 1, the study's choice) or 'u_zeros' (-1 -> 0); drop_no_positive: drop images whose
    final label vector is all zero (the study's choice); base_resolution: side the source
    image is resized to before the 2x2 box pyramid.
    """

    name: str = ""
    resolution: int = 32
    uncertain_policy: str = "u_ones"
    drop_no_positive: bool = True
    base_resolution: int = 256

    def __post_init__(self):
        check_pyramid_sizes(self.resolution, self.base_resolution)
        if self.uncertain_policy not in UNCERTAIN_POLICIES:
            raise ConfigError(
                "dataset.uncertain_policy",
                f"got {self.uncertain_policy!r}",
                f"use one of {UNCERTAIN_POLICIES}",
            )
        self.name = config_name(
            self.resolution, self.uncertain_policy, self.drop_no_positive, self.base_resolution
        )


# ---------------------------------------------------------------------------------------------
# Finding the data, reading the CSVs, splitting patients


def _where_to_get_it(manual_dir: epath.Path, problem: str) -> str:
    return (
        f"CheXpert not found: {problem}.\n"
        f"Download it from the Stanford AIMI CheXpert page ({DOWNLOAD_PAGE}; background at "
        f"{INFO_PAGE}): sign the research use agreement and download 'CheXpert-v1.0-small' "
        "(about 11 GB; the full 'CheXpert-v1.0' works too). Unzip it so that "
        "<FOLDER>/CheXpert-v1.0-small/train.csv exists, then pass that <FOLDER> (the one "
        "holding CheXpert-v1.0-small/, not the CSV itself) as "
        "--config.dataset.manual_dir=<FOLDER>. You passed: "
        f"{manual_dir}"
    )


def find_dataset_root(manual_dir: str | os.PathLike, base_resolution: int = 256) -> epath.Path:
    """The CheXpert folder (the one holding train.csv) inside or at `manual_dir`.

    When both the small and the full download are present, the small one (~320 px) is used up
    to base_resolution 320 and the full one above that.
    """
    manual_dir = epath.Path(manual_dir)
    if not manual_dir.exists():
        raise DataNotFoundError(_where_to_get_it(manual_dir, f"{manual_dir} does not exist"))
    if (manual_dir / "train.csv").exists():
        return manual_dir
    found = [
        manual_dir / name for name in DATASET_FOLDERS if (manual_dir / name / "train.csv").exists()
    ]
    if not found:
        raise DataNotFoundError(
            _where_to_get_it(
                manual_dir, f"no {' or '.join(DATASET_FOLDERS)}/train.csv in {manual_dir}"
            )
        )
    if base_resolution > 320 and len(found) > 1:
        return found[1]
    return found[0]


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
    """One kept CSV row: where its image is and its final label vector (float32[14])."""

    key: str  # patientNNNNN/studyN/viewN_frontal
    patient: str
    file: epath.Path
    csv_path: str
    labels: np.ndarray


class Tally:
    """Counts of every row by what happened to it, and the list of bad rows."""

    def __init__(self, reasons: Iterable[str] = SKIP_REASONS):
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


def read_csv_text(path: epath.Path) -> str:
    """A source CSV (or list) as text: UTF-8, with or without a byte-order mark.

    Spreadsheet programs save UTF-8 with a BOM, which would otherwise stick to the first
    column's name ('\ufeffPath') and make the file look like it lacks that column.

    Raises:
      DataNotFoundError: the bytes are not UTF-8; the message says to re-save the file.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataNotFoundError(
            f"{path} is not UTF-8 text ({error}). Point manual_dir at an unmodified download, "
            "or re-save the file as UTF-8 CSV."
        ) from None


def parse_csv(path: epath.Path, reader: Callable[[io.StringIO], Iterable[Any]]) -> list[Any]:
    """Every row `reader` (`csv.reader`, `csv.DictReader`) yields from a dataset's CSV file.

    Raises:
      DataNotFoundError: not UTF-8, or not parseable as CSV (e.g. a cell over the csv
        module's size limit).
    """
    try:
        # newline='': a stray carriage return ends a row instead of failing the parse
        return list(reader(io.StringIO(read_csv_text(path), newline="")))
    except csv.Error as error:
        raise DataNotFoundError(
            f"{path} is not a readable CSV file ({error}). Point manual_dir at an unmodified "
            "download."
        ) from None


def read_csv_rows(
    path: epath.Path, required: Iterable[str], kind: str
) -> list[dict[str, str | None]]:
    """The rows of a CSV with a header row, as `csv.DictReader` dicts; see `row_shape_problem`.

    `kind` names the file in messages ('a CheXpert CSV').

    Raises:
      DataNotFoundError: not UTF-8, not parseable as CSV (e.g. a cell over the csv module's
        size limit), or a header without the `required` columns.
    """
    rows = parse_csv(path, csv.DictReader)
    header = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in header]
    if rows and missing:
        raise DataNotFoundError(
            f"{path} does not look like {kind}: missing columns {missing}. Point manual_dir "
            "at an unmodified download."
        )
    return rows


def row_shape_problem(row: dict[str | None, str | None]) -> tuple[str, str] | None:
    """('short_row' | 'long_row', detail) for a CSV row whose cells do not line up, else None.

    short_row: a named column has no cell at all (`csv.DictReader` fills it with None): the
    row was cut, and its last cell may be cut too. long_row: non-blank cells past the last
    column (an unquoted comma, which shifts every cell after it onto the wrong column).
    Trailing empty cells and unnamed trailing columns are harmless and pass.
    """
    missing = [name for name, cell in row.items() if name and cell is None]
    if missing:
        return "short_row", f"no cell for {missing}"
    extra = [cell for cell in row.get(None) or () if cell and cell.strip()]
    if extra:
        return "long_row", f"{len(extra)} non-blank cell(s) past the last column: {extra[:3]!r}"
    return None


class Boundary:
    """Tells whether a file, with every symlink followed, lies inside a folder.

    CSV paths with `..`, absolute paths and symlinks out of the source folder would otherwise
    pull files from elsewhere (another cohort, another dataset) into this one. Each folder's
    real path is resolved once, so checking a file costs one lstat. Paths on a bucket
    ('gs://...', no symlinks there) are compared as written, `..` resolved.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = self.resolve(folder, cache=False)
        self._parents: dict[str, str] = {}

    @staticmethod
    def _remote(path: str) -> bool:
        return "://" in path

    def resolve(self, path: str | os.PathLike, cache: bool = True) -> str:
        """The real path of `path` (lexically normalised for a bucket)."""
        path = os.fspath(path)
        if self._remote(path):
            scheme, rest = path.split("://", 1)
            return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
        try:
            if not cache:
                return os.path.realpath(path)
            parent, name = os.path.split(os.path.abspath(path))
            real_parent = self._parents.get(parent)
            if real_parent is None:
                real_parent = self._parents[parent] = os.path.realpath(parent)
            full = os.path.join(real_parent, name)
            return os.path.realpath(full) if os.path.islink(full) else full
        except ValueError:  # a NUL character: no such file can exist, so none is followed
            return os.path.abspath(path)

    def contains(self, path: str | os.PathLike) -> bool:
        """True when `path` resolves to the folder or anything below it."""
        resolved = self.resolve(path)
        sep = "/" if self._remote(resolved) else os.sep
        return resolved == self.folder or resolved.startswith(self.folder.rstrip(sep) + sep)

    def outside(self, path: str | os.PathLike) -> str:
        """The detail of an `outside_manual_dir` skip: where `path` really leads, and the fix."""
        return (
            f"resolves to {self.resolve(path)}, outside {self.folder}; move or copy the file "
            "into that folder (symlinks out of it are not followed)"
        )


def _csv_parts(csv_path: str, root: epath.Path) -> list[str]:
    """A CSV path -> its parts below the dataset folder, with `.` and `..` resolved on paper.

    Relative paths start with the dataset folder's own name, which is dropped; an absolute
    path is taken as it is, relative to the folder. A leading `..` part remains when the path
    leads out of the folder.
    """
    if csv_path.startswith("/"):
        relative = posixpath.relpath(posixpath.normpath(csv_path), os.fspath(root))
    else:
        parts = [p for p in csv_path.split("/") if p]
        if parts and parts[0].startswith("CheXpert-v1.0"):
            parts = parts[1:]  # CSV paths start with the dataset folder's own name
        relative = posixpath.normpath("/".join(parts)) if parts else ""
    return [p for p in relative.split("/") if p not in ("", ".")]


def plan_rows(
    root: epath.Path, *, uncertain_policy: str, drop_no_positive: bool, tally: Tally
) -> dict[str, list[SourceRow]]:
    """Reads train.csv and valid.csv (if present) into per-split lists of rows to decode.

    Both CSVs are pooled and split by patient (`patient_split`), as the study did.
    """
    uncertain_value = 1.0 if uncertain_policy == "u_ones" else 0.0
    plans: dict[str, list[SourceRow]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    boundary = Boundary(root)
    for csv_name in ("train.csv", "valid.csv"):
        if not (root / csv_name).exists():
            continue
        rows = read_csv_rows(
            root / csv_name, ("Path", "Frontal/Lateral", *CHEXPERT_LABELS), "a CheXpert CSV"
        )
        tally.rows_read[csv_name] = len(rows)
        for number, row in enumerate(rows, start=1):
            csv_path = (row.get("Path") or "").strip()
            where = csv_path or f"{csv_name} row {number}"
            problem = row_shape_problem(row)
            if problem is not None:
                tally.skip(problem[0], where, f"{csv_name} row {number}: {problem[1]}")
                continue
            parts = _csv_parts(csv_path, root)
            if row["Frontal/Lateral"].strip() != "Frontal":
                tally.skip("not_frontal", where)
                continue
            at = next((i for i, p in enumerate(parts) if _PATIENT.match(p)), None)
            if at is None:
                tally.skip("no_patient_id", where, "no patientNNNNN folder in the path")
                continue
            file = root.joinpath(*parts)
            if parts[0] == ".." or not boundary.contains(file):
                tally.skip("outside_manual_dir", where, boundary.outside(file))
                continue
            key = "/".join(parts[at:]).rsplit(".", 1)[0]
            if key in seen:
                tally.skip("duplicate_path", csv_path)
                continue
            seen.add(key)
            cells = [row[name].strip() for name in CHEXPERT_LABELS]
            unknown = [
                (n, c)
                for n, c in zip(CHEXPERT_LABELS, cells, strict=True)
                if c not in _LABEL_VALUES
            ]
            if unknown:
                tally.skip(
                    "unknown_label_value", csv_path, ", ".join(f"{n}={c!r}" for n, c in unknown)
                )
                continue
            if not file.is_file():
                tally.skip("missing_file", csv_path, f"{file} is not a file")
                continue
            values = np.array([_LABEL_VALUES[c] for c in cells], dtype=np.float32)
            labels = np.where(values < 0, uncertain_value, values).astype(np.float32)
            if drop_no_positive and not labels.any():
                tally.skip("no_positive_label", csv_path)
                continue
            plans[patient_split(parts[at])].append(
                SourceRow(key=key, patient=parts[at], file=file, csv_path=csv_path, labels=labels)
            )
    return plans


def load_pyramid(file: epath.Path, base_resolution: int, resolution: int) -> np.ndarray:
    """Decodes an image, resizes it to the base resolution, box-downsamples it.

    Returns uint8[resolution, resolution]. For large JPEGs (the full CheXpert download),
    `draft` lets libjpeg decode directly at a power-of-two reduction that is still at least
    the base size: several times faster, and no coarser than the resize that follows.
    """
    with file.open("rb") as f:
        image = Image.open(f)
        image.draft("L", (base_resolution, base_resolution))
        base = resize_square(image, base_resolution)
    return box_pyramid(base, resolution)


def decode_row(row: SourceRow, *, base_resolution: int, resolution: int) -> np.ndarray:
    """`load_pyramid` of the row's file with a channel axis: uint8[r, r, 1]."""
    return load_pyramid(row.file, base_resolution, resolution)[:, :, None]


def source_fingerprint(
    root: epath.Path, names: Iterable[str] = ("train.csv", "valid.csv")
) -> dict[str, dict]:
    """Content hash and modification time of the index files `names`, to notice a change."""
    out = {}
    for csv_name in names:
        path = root / csv_name
        if path.exists():
            out[csv_name] = {
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "mtime_ns": _mtime_ns(path),
            }
    return out


def _mtime_ns(path: epath.Path) -> int:
    if remote.is_remote(path):  # a bucket: the object's update time, to the microsecond
        return round(float(path.stat().mtime) * 1e6) * 1000
    return os.stat(path).st_mtime_ns


# ---------------------------------------------------------------------------------------------
# The TFDS builder


class Chexpert(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """CheXpert frontal radiographs at one resolution, split 80/10/10 by patient.

    Not registered with TFDS (its catalogue has an unrelated `chexpert`); construct it
    directly or use `prepare_chexpert`.
    """

    TITLE = "CheXpert"
    # Processes decoding images (0 = every available core), and the pool `write_dataset`
    # opens for them. Not part of the config: they change how fast, not what, is written.
    workers: int = 0
    pool = None
    LABELS: ClassVar[tuple[str, ...]] = CHEXPERT_LABELS
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Frontal views, patient-level hash split, box pyramid.",
    }
    BUILDER_CONFIGS: ClassVar[list[ChexpertConfig]] = [
        ChexpertConfig(resolution=r) for r in (32, 64, 128, 256)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download CheXpert-v1.0-small from the Stanford AIMI CheXpert page ({DOWNLOAD_PAGE}) "
        "and pass the folder that contains CheXpert-v1.0-small/ as the manual dir "
        "(--config.dataset.manual_dir)."
    )

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS looks for a checksums file beside the builder's source, which needs the optional
        # importlib_resources package for an installed module. A manual-download dataset has
        # no checksums, so there is nothing to find.
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        return tfds.core.DatasetInfo(
            builder=self,
            description="CheXpert frontal chest radiographs, grayscale, box-downsampled.",
            features=image_features((r, r, 1), len(CHEXPERT_LABELS)),
            homepage=INFO_PAGE,
            citation="Irvin et al., CheXpert, AAAI 2019. arXiv:1901.07031",
            # The loader names label columns from here, for real and synthetic data alike.
            metadata=tfds.core.MetadataDict(label_names=list(CHEXPERT_LABELS)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        root = find_dataset_root(dl_manager.manual_dir, config.base_resolution)
        self._tally = Tally()
        self._root = root
        plans = plan_rows(
            root,
            uncertain_policy=config.uncertain_policy,
            drop_no_positive=config.drop_no_positive,
            tally=self._tally,
        )
        return self.split_generators(plans, unit="image")

    def split_generators(
        self,
        plans: dict[str, list[SourceRow]],
        *,
        unit: str = "image",
        why: str = "too few patients for an 80/10/10 patient split",
    ) -> dict[str, Iterator]:
        """One example generator per split; refuses a split left without a single row."""
        empty = [split for split, rows in plans.items() if not rows]
        if empty:
            outside = self._tally.counts.get("outside_manual_dir", 0)
            hint = (
                f" {outside} {unit}(s) lead outside {self._root} (by `..`, an absolute path or "
                "a symlink): move or copy those files into it; symlinks out of it are not "
                "followed."
                if outside
                else ""
            )
            raise DataNotFoundError(
                f"no usable {unit} for the {empty} split(s) in {self._root}: {why}, or every "
                f"row was skipped ({self._tally.counts}).{hint}"
            )
        return {split: self._generate_examples(split, rows) for split, rows in plans.items()}

    def decoder(self) -> Callable[[SourceRow], np.ndarray]:
        """A picklable function: a kept row -> its stored image, uint8[r, r, channels].

        It runs in worker processes (`workers.ordered_map`); raising `BadInput` skips the row
        under that reason, any other exception skips it as `corrupt_image`.
        """
        config = self.builder_config
        return functools.partial(
            decode_row, base_resolution=config.base_resolution, resolution=config.resolution
        )

    def _generate_examples(self, split: str, rows: list[SourceRow]) -> Iterator:
        config = self.builder_config
        started = last_log = time.monotonic()
        kept, patients = 0, set()
        label_sums = np.zeros(len(self.LABELS), np.float64)
        decoded = ordered_map(self.decoder(), rows, workers=self.workers, pool=self.pool)
        for done, (row, image) in enumerate(decoded, start=1):
            if isinstance(image, BadInput):
                self._tally.skip(image.reason, row.csv_path, image.detail)
                continue
            if isinstance(image, Exception):  # any decoder failure is a corrupt file
                self._tally.skip("corrupt_image", row.csv_path, f"{type(image).__name__}: {image}")
                continue
            kept += 1
            patients.add(row.patient)
            label_sums += row.labels
            yield row.key, {"image": image, "labels": row.labels, "id": row.key}
            now = time.monotonic()
            if now - last_log >= _PROGRESS_SECONDS:
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
            first = self._tally.bad_rows[-1] if self._tally.bad_rows else {}
            raise DataNotFoundError(
                f"none of the {len(rows)} {split} images in {self._root} could be read "
                f"(counts so far: {self._tally.counts}); the last failure: "
                f"{first.get('path')}: {first.get('detail')}"
            )
        self._tally.counts["kept"] += kept
        self._tally.splits[split] = {
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

    def settings(self) -> dict:
        """The config fields recorded in the report, plus the source folder."""
        config = self.builder_config
        return {
            "resolution": config.resolution,
            "uncertain_policy": config.uncertain_policy,
            "drop_no_positive": config.drop_no_positive,
            "base_resolution": config.base_resolution,
            "source": os.fspath(self._root),
        }

    def fingerprint(self) -> dict[str, dict]:
        """`source_fingerprint` of this dataset's index files."""
        return source_fingerprint(self._root)

    def report(self) -> dict:
        """The preparation report (see `prepare_chexpert`) from what was seen so far."""
        config, tally = self.builder_config, self._tally
        return {
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


# ---------------------------------------------------------------------------------------------
# Entry points


def prepare_chexpert(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    resolution: int,
    uncertain_policy: str = "u_ones",
    drop_no_positive: bool = True,
    base_resolution: int = 256,
    workers: int = 0,
) -> tuple[epath.Path, dict]:
    """Builds CheXpert at one resolution (or reuses a complete build) and reports on it.

    Args:
      manual_dir: the folder holding `CheXpert-v1.0-small/` (or that folder itself).
      data_dir: TFDS data root; the dataset lands in `data_dir/chexpert/<config>/1.0.0/`.
      resolution, uncertain_policy, drop_no_positive, base_resolution: see `ChexpertConfig`.
      workers: processes decoding images (0 = every available core).

    Returns:
      (dataset_dir, report). `dataset_dir` holds dataset_info.json and the shards, so
      `tfds.builder_from_directory(dataset_dir).as_data_source()` reads it. The report
      (JSON-able, also at `dataset_dir/prepare_report.json`) has the settings, CSV rows read,
      `counts` of every row by outcome (kept + each skip reason = rows read), the listed bad
      rows (at most MAX_LISTED_BAD_ROWS, then `bad_rows_omitted`), and per split the images,
      patients and label prevalence. A build is reused when its report exists and the source
      CSVs are unchanged (or the source is no longer there).

    Raises:
      DataNotFoundError: no CheXpert under `manual_dir`; the message says where to get it.
      ConfigError: an impossible resolution or policy.
    """
    config = ChexpertConfig(
        resolution=resolution,
        uncertain_policy=uncertain_policy,
        drop_no_positive=drop_no_positive,
        base_resolution=base_resolution,
    )
    return prepare_with_reuse(
        Chexpert,
        config,
        manual_dir,
        data_dir,
        find_root=lambda folder: find_dataset_root(folder, base_resolution),
        fingerprint=source_fingerprint,
        workers=workers,
    )


def prepare_with_reuse(
    builder_class: type[Chexpert],
    config: tfds.core.BuilderConfig,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    find_root: Callable[[str | os.PathLike], epath.Path],
    fingerprint: Callable[[epath.Path], dict],
    workers: int = 0,
) -> tuple[epath.Path, dict]:
    """Builds `builder_class` with `config`, or reuses a complete, up-to-date build.

    `find_root(manual_dir)` locates the source (raising a people-facing DataNotFoundError
    before TFDS's own); `fingerprint(root)` must equal the report's `source_fingerprint` for a
    build to be reused. A build whose source folder is gone is reused as it is. `workers`
    processes decode images (0 = every available core).

    A build is complete only once `write_dataset` has renamed its temporary directory into
    place: a build killed halfway leaves only that directory, which the next call deletes
    before building afresh.
    """
    name = builder_class.name
    config = builder_class.builder_configs.get(config.name) or config
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
            root = find_root(manual_dir)
            # Content, not modification time: a copied or touched CSV is the same source.
            same = _content(report.get("source_fingerprint") if report else None) == _content(
                fingerprint(root)
            )
            if report is not None and same:
                logging.info("%s: reusing %s", name, dataset_dir)
                return dataset_dir, report
            # Only this version directory goes; TFDS cannot re-prepare over a finished one.
            logging.warning("%s: %s is stale or has no report; rebuilding it", name, dataset_dir)
            dataset_dir.rmtree()
            builder = builder_class(config=config, data_dir=os.fspath(data_dir))
        else:
            find_root(manual_dir)
        _remove_killed_builds(dataset_dir)
        builder.workers = workers
        write_dataset(builder, manual_dir, dataset_dir)
        return dataset_dir, json.loads(report_path.read_text())


def _shard_size(features: tfds.features.FeaturesDict) -> int:
    """Records per shard: about 64 MB of pixels, between 256 and 8192 records."""
    shape = features["image"].shape
    image_bytes = int(np.prod(shape))
    return int(np.clip((64 << 20) // max(image_bytes, 1), 256, 8192))


def write_dataset(builder: Chexpert, manual_dir: str | os.PathLike, dataset_dir: epath.Path):
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
        source = types.SimpleNamespace(manual_dir=epath.Path(manual_dir))
        for split, examples in builder._split_generators(source).items():
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


def _remove_killed_builds(dataset_dir: epath.Path) -> None:
    """Deletes the temporary directories of builds that were killed before finishing.

    TFDS writes into `incomplete.<random>_<version>/` and renames it into place at the end, so
    a killed build is never read as complete; but its temporary directory would stay on disk.
    Called under the build lock, so no live build owns one.
    """
    prefix = tfds.core.constants.INCOMPLETE_PREFIX
    for stale in dataset_dir.parent.glob(f"{prefix}*_{dataset_dir.name}"):
        logging.warning("removing %s, left by a build that did not finish", stale)
        stale.rmtree()


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
