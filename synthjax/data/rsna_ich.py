"""RSNA Intracranial Hemorrhage Detection as a TFDS dataset: DICOM slices -> windowed shards.

Data flow: `manual_dir` (the Kaggle download: `stage_2_train.csv` + `stage_2_train/*.dcm`, or
the CT phantom `synthjax.data.phantoms.ct` writes in the same layout) -> `prepare_rsna_ich` /
`RsnaIch` (this module: labels from the CSV, tags from each DICOM header, patient split from
the DICOM PatientID, series order from ImagePositionPatient) -> `synthjax.data.dicom` (HU
through the modality LUT, RSNA wrap fixed, one 8-bit channel per display window, optionally
the slices above and below) -> resize to the base resolution, 2x2 box pyramid ->
`data_dir/rsna_ich/<config>/<version>/` -> the same loader as every other dataset.

Labels are the study's six classes: the five subtypes and `no_finding`. The CSV's `any` is
checked against the subtypes (it must be their OR) and kept in the report's prevalence; as a
label it would be `1 - no_finding`, so its AUROC is `no_finding`'s.

Every slice is accounted for. A CSV id or a DICOM file is kept or skipped under one counted
reason (malformed CSV row, a label that is not a number 0 or 1, contradictory or incomplete
labels, CSV id without a file, a file that resolves outside the dataset folder through a
symlink, file without CSV rows, not DICOM, corrupt, not CT, no patient id, no or truncated
pixel data, wrong dimensions, no defined HU), and the report lists the skipped ones.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builds, dicom
from synthjax.data.builder import (
    SourceBuilder,
    SourceRow,
    Tally,
    check_pyramid_sizes,
    patient_split,
)
from synthjax.data.image_ops import box_pyramid, resize_square
from synthjax.data.source_files import Boundary, parse_csv
from synthjax.data.workers import BadInput, ordered_map

SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
RSNA_LABELS: tuple[str, ...] = (*SUBTYPES, "no_finding")
CSV_LABELS = (*SUBTYPES, "any")
CSV_NAME = "stage_2_train.csv"
IMAGE_DIR = "stage_2_train"
ALTERNATIVE_LAYOUTS = (("stage_1_train.csv", "stage_1_train_images"),)
DATASET_FOLDER = "rsna-intracranial-hemorrhage-detection"
DOWNLOAD_PAGE = "https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection/data"
# For the registry (`synthjax.data.registry`), like BUILDER, PREPARE and SETTINGS at the end.
DOWNLOAD = f"the Kaggle RSNA Intracranial Hemorrhage Detection competition ({DOWNLOAD_PAGE})"
MANUAL_DIR = f"the folder holding {CSV_NAME} and {IMAGE_DIR}/"
CITATION = (
    "Flanders AE, Prevedello LM, Shih G, et al. Construction of a Machine Learning Dataset "
    "through Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiology: "
    "Artificial Intelligence 2020; 2(3):e190211."
)
# Each skipped slice is counted once, under the first reason that applies, in this order.
SKIP_REASONS = (
    "bad_csv_row",
    "unknown_label_value",
    "contradictory_labels",
    "incomplete_labels",
    "missing_file",
    "outside_manual_dir",
    "unlabelled_file",
    "not_dicom",
    "corrupt_dicom",
    "wrong_modality",
    "no_patient_id",
    "no_positive_label",
    "no_pixel_data",
    "truncated_pixel_data",
    "wrong_dimensions",
    "no_rescale",
    "corrupt_image",
)
_SUBTYPE_INDEX = {name: i for i, name in enumerate(CSV_LABELS)}


def config_name(
    resolution: int, windows: Sequence[str], context: int, drop_no_positive: bool, base: int
) -> str:
    """The TFDS config name, from every setting that changes the data.

    e.g. r64-brain+subdural+bone-c0-keep-b256.
    """
    keep = "drop" if drop_no_positive else "keep"
    return f"r{resolution}-{'+'.join(windows)}-c{context}-{keep}-b{base}"


CONTEXTS = (0, 1, 2)  # neighbouring slices stacked per side


def num_channels(windows: Sequence[str], context: int) -> int:
    return len(windows) * (2 * context + 1)


@dataclasses.dataclass(eq=False)
class RsnaIchConfig(tfds.core.BuilderConfig):
    """One stored variant of the RSNA brain CT. The name is derived from the fields.

    resolution / base_resolution: as for CheXpert. windows: comma-separated display windows
    from `dicom.WINDOWS`, one channel each ('brain' alone reproduces the study).
    context: slices on each side stacked as extra channels (0 = the slice alone; 1 = the
    slice below, the slice, the slice above, each with every window), ordered by
    ImagePositionPatient within the series. drop_no_positive: drop slices without any
    hemorrhage (off: `no_finding` is one of the study's six classes).
    """

    name: str = ""
    resolution: int = 64
    windows: str = "brain,subdural,bone"
    context: int = 0
    drop_no_positive: bool = False
    base_resolution: int = 256

    def __post_init__(self):
        check_pyramid_sizes(self.resolution, self.base_resolution)
        try:
            names = dicom.parse_windows(self.windows)
        except ValueError as error:
            raise ConfigError(
                "dataset.ct.windows", str(error), "e.g. 'brain,subdural,bone'"
            ) from None
        if self.context not in CONTEXTS:
            raise ConfigError(
                "dataset.ct.context", f"got {self.context}", "use 0, 1 or 2 slices per side"
            )
        self.windows = ",".join(names)
        self.name = config_name(
            self.resolution, names, self.context, self.drop_no_positive, self.base_resolution
        )


@dataclasses.dataclass(frozen=True)
class CtRow(SourceRow):
    """A kept slice: `SourceRow` plus the files of its neighbours, nearest first per side.

    `below` and `above` hold `context` paths each (None past the end of the series).
    """

    below: tuple[str | None, ...] = ()
    above: tuple[str | None, ...] = ()


# ---------------------------------------------------------------------------------------------
# Finding the data, reading the CSV


def _where_to_get_it(manual_dir: epath.Path, problem: str) -> str:
    return (
        f"RSNA Intracranial Hemorrhage Detection not found: {problem}.\n"
        f"Download it from the challenge page ({DOWNLOAD_PAGE}; accept the rules first): "
        f"{CSV_NAME} and the {IMAGE_DIR}/ folder of DICOM files (about 450 GB unpacked). "
        f"Pass the folder holding {CSV_NAME} and {IMAGE_DIR}/ as "
        f"--config.dataset.manual_dir=<FOLDER>. You passed: {manual_dir}"
    )


def _layout(folder: epath.Path) -> tuple[str, str] | None:
    for csv_name, image_dir in ((CSV_NAME, IMAGE_DIR), *ALTERNATIVE_LAYOUTS):
        if (folder / csv_name).exists() and (folder / image_dir).is_dir():
            return csv_name, image_dir
    return None


def find_dataset_root(manual_dir: str | os.PathLike) -> epath.Path:
    """The folder holding stage_2_train.csv and stage_2_train/: `manual_dir` or one below."""
    manual_dir = epath.Path(manual_dir)
    if not manual_dir.exists():
        raise DataNotFoundError(_where_to_get_it(manual_dir, f"{manual_dir} does not exist"))
    for folder in (manual_dir, manual_dir / DATASET_FOLDER):
        if _layout(folder) is not None:
            return folder
    for child in sorted(manual_dir.iterdir()):
        if child.is_dir() and _layout(child) is not None:
            return child
    raise DataNotFoundError(
        _where_to_get_it(manual_dir, f"no {CSV_NAME} beside a {IMAGE_DIR}/ folder in {manual_dir}")
    )


@dataclasses.dataclass
class CsvLabels:
    """The CSV read into per-slice labels, with every problem found on the way."""

    labels: dict[str, np.ndarray]  # slice id -> float32[6] over CSV_LABELS, complete & consistent
    problems: dict[str, tuple[str, str]]  # slice id -> (reason, detail)
    bad_rows: list[tuple[str, str]]  # (row text, detail) of rows that name no slice
    duplicate_rows: int  # rows repeating an earlier row with the same value (harmless)
    rows: int


def parse_label(cell: str) -> float | None:
    """A label cell -> 0.0 or 1.0 when it is a number equal to 0 or 1, else None.

    Read as a number, so '1', '1.0' and ' 0 ' (as some tools rewrite the file) all count.
    """
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if value in (0.0, 1.0) else None


def read_labels(path: epath.Path) -> CsvLabels:
    """Reads `ID_<sop>_<subtype>,<0|1>` rows into complete, consistent label vectors.

    A slice with a label cell that is not 0 or 1 (`parse_label`) has an unknown label value;
    one whose rows disagree (the same subtype 0 and 1, or `any` not the OR of the subtypes)
    is contradictory; one missing a subtype's row is incomplete. Rows that repeat an earlier
    row exactly (the real stage_2_train.csv has some) are counted, not refused. A row
    that is cut short or has non-blank cells past `Label` names no label and is a bad row.

    Raises:
      DataNotFoundError: not UTF-8, not parseable as CSV, or no `ID,Label` header.
    """
    records = parse_csv(path, csv.reader)
    reader = iter(records)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ID", "Label"]:
        raise DataNotFoundError(
            f"{path} does not look like the RSNA label file: its header is {header!r}, "
            "expected 'ID,Label'. Point manual_dir at an unmodified download."
        )
    values: dict[str, dict[str, float]] = collections.defaultdict(dict)
    problems: dict[str, tuple[str, str]] = {}
    bad_rows: list[tuple[str, str]] = []
    duplicates = rows = 0
    for row in reader:
        if not row or not "".join(row).strip():
            continue
        rows += 1
        ident = row[0].strip()
        slice_id, _, subtype = ident.rpartition("_")
        extra = any(cell.strip() for cell in row[2:])
        if not slice_id.startswith("ID_") or subtype not in _SUBTYPE_INDEX or len(row) < 2 or extra:
            bad_rows.append((",".join(row), "not ID_<id>_<subtype>,<label>"))
            continue
        value = parse_label(row[1])
        if value is None:
            problems.setdefault(slice_id, ("unknown_label_value", f"{subtype}={row[1]!r}"))
            continue
        seen = values[slice_id].get(subtype)
        if seen is None:
            values[slice_id][subtype] = value
        elif seen == value:
            duplicates += 1
        else:
            problems.setdefault(
                slice_id, ("contradictory_labels", f"{subtype} given as both 0 and 1")
            )
    labels: dict[str, np.ndarray] = {}
    for slice_id, by_subtype in values.items():
        if slice_id in problems:
            continue
        missing = [s for s in CSV_LABELS if s not in by_subtype]
        if missing:
            problems[slice_id] = ("incomplete_labels", f"no row for {missing}")
            continue
        vector = np.array([by_subtype[s] for s in CSV_LABELS], np.float32)
        if vector[-1] != vector[:-1].max():
            problems[slice_id] = (
                "contradictory_labels",
                f"any={int(vector[-1])} but subtypes {vector[:-1].astype(int).tolist()}",
            )
            continue
        labels[slice_id] = vector
    return CsvLabels(labels, problems, bad_rows, duplicates, rows)


def index_files(image_dir: epath.Path) -> dict[str, str]:
    """Slice id (file name without .dcm) -> path, from one listing of the image folder."""
    return {
        entry.name[: -len(".dcm")]: os.fspath(entry)
        for entry in image_dir.iterdir()
        if entry.name.endswith(".dcm")
    }


def plan_rows(
    root: epath.Path,
    *,
    context: int,
    drop_no_positive: bool,
    tally: Tally,
    workers: int,
    pool=None,
) -> dict[str, list[CtRow]]:
    """Reads the CSV and every DICOM header into per-split rows to decode."""
    layout = _layout(root)
    if layout is None:
        raise DataNotFoundError(_where_to_get_it(root, f"no {CSV_NAME} + {IMAGE_DIR}/ in {root}"))
    csv_name, image_dir = layout
    table = read_labels(root / csv_name)
    files = index_files(root / image_dir)
    unlabelled = sorted(set(files) - set(table.labels) - set(table.problems))
    tally.rows_read[f"{csv_name} slices"] = len(table.labels) + len(table.problems)
    tally.rows_read[f"{csv_name} malformed rows"] = len(table.bad_rows)
    tally.rows_read[f"{image_dir}/ files without rows"] = len(unlabelled)
    tally.csv_duplicate_rows = table.duplicate_rows
    for text, detail in table.bad_rows:
        tally.skip("bad_csv_row", text, detail)
    for slice_id, (reason, detail) in sorted(table.problems.items()):
        tally.skip(reason, slice_id, detail)
    for slice_id in unlabelled:
        tally.skip("unlabelled_file", files[slice_id], "no row in the label CSV")
    boundary = Boundary(root)
    candidates = []
    for slice_id in sorted(table.labels):
        if slice_id not in files:
            tally.skip("missing_file", slice_id, f"no {image_dir}/{slice_id}.dcm")
        elif not boundary.contains(files[slice_id]):
            tally.skip("outside_manual_dir", slice_id, boundary.outside(files[slice_id]))
        else:
            candidates.append(slice_id)

    headers: dict[str, dicom.SliceHeader] = {}
    for slice_id, header in ordered_map(
        dicom.read_header,
        [files[s] for s in candidates],
        workers=workers,
        pool=pool,
        chunk_size=64,
    ):
        key = os.path.basename(slice_id)[: -len(".dcm")]
        if isinstance(header, BadInput):
            tally.skip(header.reason, key, header.detail)
        elif isinstance(header, Exception):
            tally.skip("corrupt_dicom", key, f"{type(header).__name__}: {header}")
        else:
            headers[key] = header

    # Neighbours come from every readable slice of the series, labelled or filtered or not.
    series: dict[str, list[dicom.SliceHeader]] = collections.defaultdict(list)
    for header in headers.values():
        series[header.series_uid].append(header)
    neighbours: dict[str, tuple[tuple, tuple]] = {}
    for members in series.values():
        members.sort(key=lambda h: (h.z, h.path))
        paths = [h.path for h in members]
        for i, h in enumerate(members):
            below = tuple(paths[i - k] if i - k >= 0 else None for k in range(1, context + 1))
            above = tuple(
                paths[i + k] if i + k < len(paths) else None for k in range(1, context + 1)
            )
            neighbours[h.path] = (below, above)

    plans: dict[str, list[CtRow]] = {split: [] for split in SPLITS}
    for slice_id in candidates:
        header = headers.get(slice_id)
        if header is None:
            continue
        csv_labels = table.labels[slice_id]
        if drop_no_positive and not csv_labels[-1]:
            tally.skip("no_positive_label", slice_id)
            continue
        labels = np.concatenate([csv_labels[:-1], 1.0 - csv_labels[-1:]]).astype(np.float32)
        below, above = neighbours[header.path]
        plans[patient_split(header.patient_id)].append(
            CtRow(
                key=slice_id,
                patient=header.patient_id,
                file=epath.Path(header.path),
                csv_path=slice_id,
                labels=labels,
                below=below,
                above=above,
            )
        )
    return plans


# ---------------------------------------------------------------------------------------------
# Decoding one slice (runs in worker processes)


def decode_ct_row(
    row: CtRow, *, windows: Sequence[str], base_resolution: int, resolution: int
) -> np.ndarray:
    """A slice (and its neighbours) -> uint8[r, r, num_channels].

    Channels are ordered slice-major: for each of below..., the slice, above... (farthest
    below first), every window in order. Windowing happens on full-resolution HU, before
    resizing, so the skull's 1,000+ HU edge cannot ring into the brain window. A neighbour
    past the end of the series, or unreadable, repeats the slice itself.
    """
    center = dicom.read_hu(row.file)
    stack = []
    for path in (*reversed(row.below), None, *row.above):
        hu = center
        if path is not None and path != os.fspath(row.file):
            try:
                hu = dicom.read_hu(path)
            except BadInput:
                hu = center
        stack.append(hu)
    # An integer reduction (RSNA's 512 to a base of 256) is the exact box mean.
    channels = [
        resize_square(dicom.window(hu, *dicom.WINDOWS[name]), base_resolution, exact_box=True)
        for hu in stack
        for name in windows
    ]
    return box_pyramid(np.stack(channels, axis=-1), resolution)


# ---------------------------------------------------------------------------------------------
# The TFDS builder


class RsnaIch(SourceBuilder, skip_registration=True):
    """RSNA brain CT slices, windowed into channels, split 80/10/10 by DICOM PatientID.

    Reads DICOM slices (`synthjax.data.dicom`) instead of JPEGs; the statistics, the report
    and the reuse rules are the shared ones. Not registered with TFDS; use `prepare_rsna_ich`.
    """

    TITLE = "RSNA Intracranial Hemorrhage"
    LABELS: ClassVar[tuple[str, ...]] = RSNA_LABELS
    SKIP_REASONS: ClassVar[tuple[str, ...]] = SKIP_REASONS
    HOMEPAGE = DOWNLOAD_PAGE
    CITATION = CITATION
    UNIT = "slice"
    REPORT_UNIT = "slices"
    RELEASE_NOTE = "HU via the modality LUT, RSNA wrap fixed, windowed channels, patient split."

    def find_root(self, manual_dir: str | os.PathLike) -> epath.Path:
        return find_dataset_root(manual_dir)

    def index_files(self) -> tuple[str, ...]:
        """The label CSV (the DICOMs are not hashed)."""
        return (CSV_NAME, *(c for c, _ in ALTERNATIVE_LAYOUTS))

    def plan(self, root: epath.Path) -> dict[str, list[SourceRow]]:
        config = self.builder_config
        return plan_rows(
            root,
            context=config.context,
            drop_no_positive=config.drop_no_positive,
            tally=self.tally,
            workers=self.workers,
            pool=self.pool,
        )

    def decoder(self) -> Callable[[SourceRow], np.ndarray]:
        config = self.builder_config
        return functools.partial(
            decode_ct_row,
            windows=dicom.parse_windows(config.windows),
            base_resolution=config.base_resolution,
            resolution=config.resolution,
        )

    def channels(self) -> int:
        config = self.builder_config
        return num_channels(dicom.parse_windows(config.windows), config.context)

    def description(self) -> str:
        config = self.builder_config
        return (
            "RSNA Intracranial Hemorrhage Detection head CT slices in HU, windowed "
            f"({config.windows}; context {config.context}), box-downsampled."
        )

    def metadata(self) -> dict[str, Any]:
        config = self.builder_config
        return {**super().metadata(), "windows": config.windows, "context": config.context}

    def report(self) -> dict:
        report = super().report()
        report["csv_duplicate_rows"] = self.tally.csv_duplicate_rows
        for stats in report["splits"].values():
            stats["label_prevalence"]["any"] = round(
                1.0 - stats["label_prevalence"]["no_finding"], 4
            )
        return report


# ---------------------------------------------------------------------------------------------
# Entry point


def prepare_rsna_ich(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    resolution: int,
    windows: str = "brain,subdural,bone",
    context: int = 0,
    drop_no_positive: bool = False,
    base_resolution: int = 256,
    workers: int = 0,
) -> tuple[epath.Path, dict]:
    """Builds the RSNA brain CT at one resolution (or reuses a complete build) and reports.

    Args:
      manual_dir: the folder holding stage_2_train.csv and stage_2_train/ (or its parent).
      data_dir: TFDS data root; the dataset lands in `data_dir/rsna_ich/<config>/<version>/`.
      resolution, windows, context, drop_no_positive, base_resolution: see `RsnaIchConfig`.
      workers: processes reading DICOMs (0 = every available core).

    Returns:
      (dataset_dir, report), as `builds.prepare_with_reuse`; `counts` has every slice (CSV
      ids and files without CSV rows) by outcome, and `csv_duplicate_rows` the exact repeats.
      The `id` feature is the slice id (`ID_<sop>`), which stays on the private side.

    Raises:
      DataNotFoundError: no RSNA layout under `manual_dir`, or a label file that is not one.
      ConfigError: an impossible resolution, window or context.
    """
    config = RsnaIchConfig(
        resolution=resolution,
        windows=windows,
        context=context,
        drop_no_positive=drop_no_positive,
        base_resolution=base_resolution,
    )
    return builds.prepare_with_reuse(RsnaIch, config, manual_dir, data_dir, workers=workers)


# What the registry (`synthjax.data.registry`) reads; DOWNLOAD and MANUAL_DIR are above.
BUILDER = RsnaIch
PREPARE = prepare_rsna_ich
# prepare_rsna_ich's settings beyond the common ones, by their place in `config.dataset`.
SETTINGS = {"windows": "ct.windows", "context": "ct.context"}
