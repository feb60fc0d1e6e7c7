"""A researcher's own images as a TFDS dataset: a labels CSV + PNG/JPEG/DICOM files -> shards.

Data flow: `manual_dir` (any local folder holding a labels CSV with a header row: one row per
image, naming its file, its patient and one 0/1 cell per label) -> `prepare_folder` /
`FolderDataset` (this module: label cells to a multi-hot vector, patient-level 80/10/10 split,
each file decoded to 8-bit display values, padded to square with black, resized to the base
resolution and 2x2 box-downsampled to the stored one) -> `data_dir/folder/<config>/<version>/`
-> the same loader as every other dataset.

The builder is `synthjax.data.builder.SourceBuilder` with a generic reading of the source:
the per-split statistics, the report and its reuse rules are shared, so
`builder.format_report` prints the report. Every CSV row and every image file in the folder
that no row names is accounted for: kept, or skipped under one counted reason (SKIP_REASONS,
first that applies) and listed in the report. The `id` feature is the image path relative to
`manual_dir`, for the private side only.

Image paths (relative, or absolute) must lead to a file inside `manual_dir` once `..` and
symlinks are followed; others are skipped as `outside_manual_dir` and never opened, unless
the build is told they are wanted (`allow_outside_paths`).

Decoding, per file type (the same for every file, whatever its modality):
  - PNG / JPEG: 8-bit grayscale or colour as stored (colour to grayscale by ITU-R 601 luma
    when `channels` is 1); 16-bit (and 32-bit integer or float) grayscale is stretched from
    the image's own minimum..maximum to 0..255, so 12-bit data in a 16-bit PNG is not black.
  - DICOM (`.dcm`, or any file with b"DICM" at byte 128): pixels through the modality LUT
    (a CT without RescaleSlope/RescaleIntercept has no defined HU and is skipped as
    `no_rescale`, as in `synthjax.data.dicom`, unless the window is 'minmax', which no linear
    scale changes), then the display window `dicom_window`: 'file' = the file's own first
    WindowCenter/WindowWidth (linear), or min..max when it has none; 'minmax' = always the
    image's min..max; a name from `dicom.WINDOWS` ('brain', 'bone', ...) = that window in HU.
    MONOCHROME1 is inverted so that dense tissue is bright, as in MONOCHROME2. Multi-frame and
    colour DICOMs are refused (`wrong_dimensions`).
Non-square images are centred on a black square (never cropped, never stretched); images
smaller than `dicom.MIN_SIDE` pixels a side or further from square than `dicom.MAX_ASPECT`
are refused (`wrong_dimensions`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pydicom
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builds, dicom, image_ops
from synthjax.data.builder import (
    REPORT_FILE,
    SourceBuilder,
    SourceRow,
    Tally,
    check_pyramid_sizes,
    patient_split,
)
from synthjax.data.folder_labels import (
    FIELD,
    LabelTable,
    label_signature,
    layout_help,
    parse_label_cell,
    read_label_table,
)
from synthjax.data.image_ops import box_pyramid
from synthjax.data.source_files import Boundary
from synthjax.data.workers import BadInput

# Each skipped CSV row (or unlabelled file) is counted once, under the first reason that
# applies, in this order. contradictory_labels is the duplicate_image whose labels differ.
SKIP_REASONS = (
    "no_patient_id",
    "duplicate_image",
    "contradictory_labels",
    "unknown_label_value",
    "outside_manual_dir",
    "missing_file",
    "no_positive_label",
    "corrupt_image",
    "wrong_dimensions",
    "no_rescale",
    "unlabelled_file",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
DICOM_WINDOWS = ("file", "minmax", *dicom.WINDOWS)
UNLABELLED_KEY = "image files without a CSV row"
# For the registry (`synthjax.data.registry`), like BUILDER, PREPARE and SETTINGS at the end.
DOWNLOAD = None  # the researcher's own images
MANUAL_DIR = "your folder of images with its labels.csv"


def config_name(
    resolution: int,
    channels: int,
    dicom_window: str,
    drop_no_positive: bool,
    base_resolution: int,
    columns_hash: str,
    allow_outside_paths: bool = False,
) -> str:
    """The TFDS config name, from every setting that changes the data.

    e.g. r64-c1-file-keep-b256-1a2b3c4d; the hex part is `columns_hash`, and `-outside` is
    appended when images outside manual_dir are allowed.
    """
    keep = "drop" if drop_no_positive else "keep"
    outside = "-outside" if allow_outside_paths else ""
    return (
        f"r{resolution}-c{channels}-{dicom_window}-{keep}-b{base_resolution}-{columns_hash}"
        f"{outside}"
    )


def columns_hash(
    labels_csv: str, image_column: str, patient_column: str, label_names: Sequence[str]
) -> str:
    """8 hex digits fixed by which CSV and which of its columns make the dataset."""
    spec = json.dumps([labels_csv, image_column, patient_column, list(label_names)])
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:8]


def check_settings(channels: int, dicom_window: str) -> None:
    """Refuses a channel count or DICOM window this builder cannot produce."""
    if channels not in (1, 3):
        raise ConfigError(
            "dataset.folder.channels", f"got {channels}", "use 1 (grayscale) or 3 (RGB)"
        )
    if dicom_window not in DICOM_WINDOWS:
        raise ConfigError(
            "dataset.folder.dicom_window", f"got {dicom_window!r}", f"use one of {DICOM_WINDOWS}"
        )


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """One stored variant of a folder dataset. The name is derived from the fields.

    resolution / base_resolution: as for CheXpert. channels: 1 (grayscale) or 3 (RGB; a
    grayscale source is repeated). dicom_window: see the module docstring. drop_no_positive:
    drop images whose label vector is all zero. labels_csv, image_column, patient_column:
    the CSV (relative to manual_dir) and its columns of image paths and patient ids.
    label_columns: as given ('' = every other column); label_names: the label columns it
    resolves to, in CSV order (`prepare_folder` reads them from the CSV header).
    allow_outside_paths: use images whose paths lead outside manual_dir (off: skipped as
    `outside_manual_dir`).
    """

    name: str = ""
    resolution: int = 64
    channels: int = 1
    dicom_window: str = "file"
    drop_no_positive: bool = False
    base_resolution: int = 256
    labels_csv: str = "labels.csv"
    image_column: str = "image"
    patient_column: str = "patient"
    label_columns: str = ""
    label_names: tuple[str, ...] = ()
    allow_outside_paths: bool = False

    def __post_init__(self):
        check_pyramid_sizes(self.resolution, self.base_resolution)
        check_settings(self.channels, self.dicom_window)
        self.label_names = tuple(self.label_names)
        if not self.label_names:
            raise ConfigError(
                "dataset.folder.label_columns",
                "no label columns",
                "name the CSV's 0/1 label columns (prepare_folder reads them from the CSV)",
            )
        digest = columns_hash(
            self.labels_csv, self.image_column, self.patient_column, self.label_names
        )
        self.name = config_name(
            self.resolution,
            self.channels,
            self.dicom_window,
            self.drop_no_positive,
            self.base_resolution,
            digest,
            self.allow_outside_paths,
        )


# ---------------------------------------------------------------------------------------------
# Finding the data, reading the CSV


def find_dataset_root(manual_dir: str | os.PathLike, labels_csv: str = "labels.csv") -> epath.Path:
    """`manual_dir` as an absolute path, once it is known to hold `labels_csv`."""
    root = epath.Path(os.path.abspath(os.fspath(manual_dir)))
    if not root.is_dir():
        raise DataNotFoundError(
            f"folder dataset not found: {root} is not a folder.\n{layout_help(labels_csv)}"
        )
    if not (root / labels_csv).is_file():
        found = sorted(p.name for p in root.glob("*.csv"))
        raise DataNotFoundError(
            f"folder dataset: no {labels_csv} in {root} (CSV files there: {found or 'none'}). "
            f"If the labels are in another file, set {FIELD}.labels_csv=<name>.\n"
            + layout_help(labels_csv)
        )
    return root


def find_unlabelled(root: epath.Path, referenced: set[str]) -> list[str]:
    """Image files (IMAGE_EXTENSIONS) under `root` that no CSV row names, sorted.

    Hidden folders and files (names starting with '.') are not looked at.
    """
    found = []
    for folder, subfolders, files in os.walk(os.fspath(root)):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.normpath(os.path.join(folder, name))
            if path not in referenced:
                found.append(path)
    return found


def plan_rows(
    root: epath.Path,
    table: LabelTable,
    *,
    drop_no_positive: bool,
    tally: Tally,
    allow_outside_paths: bool = False,
) -> dict[str, list[SourceRow]]:
    """Sorts every CSV row (and every unlabelled file) into per-split rows to decode or skips.

    A row whose image resolves outside `root` (`..`, an absolute path elsewhere, a symlink
    out) is skipped as `outside_manual_dir` without opening it, unless `allow_outside_paths`.
    """
    plans: dict[str, list[SourceRow]] = {split: [] for split in SPLITS}
    seen: dict[str, tuple[tuple, int]] = {}
    referenced: set[str] = set()
    root_text = os.fspath(root)
    boundary = Boundary(root)

    def cell(cells: list[str], index: int) -> str | None:
        return cells[index].strip() if index < len(cells) else None

    for number, cells in enumerate(table.rows, start=1):
        image = cell(cells, table.image_index) or ""
        where = image or f"<row {number}: no image path>"
        key = os.path.normpath(os.path.join(root_text, image)) if image else None
        if key is not None:
            referenced.add(key)
        label_cells = [cell(cells, i) for i in table.label_indices]
        patient = cell(cells, table.patient_index) or ""
        if not patient:
            tally.skip(
                "no_patient_id", where, f"row {number}: blank {table.header[table.patient_index]!r}"
            )
            continue
        if key is not None:
            signature = label_signature(label_cells)
            if key in seen:
                first_signature, first_number = seen[key]
                reason = (
                    "duplicate_image" if signature == first_signature else "contradictory_labels"
                )
                tally.skip(reason, where, f"row {number} names the image of row {first_number}")
                continue
            seen[key] = (signature, number)
        values = [parse_label_cell(c) for c in label_cells]
        unknown = [
            f"{n}={c!r}"
            for n, c, v in zip(table.label_names, label_cells, values, strict=True)
            if v is None
        ]
        if unknown:
            tally.skip("unknown_label_value", where, f"row {number}: " + ", ".join(unknown))
            continue
        if key is not None and not allow_outside_paths and not boundary.contains(key):
            tally.skip("outside_manual_dir", where, f"row {number}: {boundary.outside(key)}")
            continue
        if key is None or not os.path.isfile(key):
            tally.skip("missing_file", where, f"row {number}: no file {key or '(blank cell)'}")
            continue
        labels = np.array(values, np.float32)
        if drop_no_positive and not labels.any():
            tally.skip("no_positive_label", where)
            continue
        relative = os.path.relpath(key, root_text)
        ident = key if relative.startswith("..") else relative.replace(os.sep, "/")
        plans[patient_split(patient)].append(
            SourceRow(
                key=ident, patient=patient, file=epath.Path(key), csv_path=image, labels=labels
            )
        )
    unlabelled = find_unlabelled(root, referenced)
    tally.rows_read[f"{table.path.name} rows"] = len(table.rows)
    tally.rows_read[UNLABELLED_KEY] = len(unlabelled)
    for path in unlabelled:
        tally.skip("unlabelled_file", os.path.relpath(path, root_text), "no row in the CSV")
    return plans


# ---------------------------------------------------------------------------------------------
# Decoding one file (runs in worker processes)


def read_display(
    file: epath.Path, *, channels: int, dicom_window: str, draft_size: int
) -> np.ndarray:
    """One image file -> float32[H, W, 1 or 3] display values in 0..255 (see module docstring).

    `draft_size` lets libjpeg decode a large JPEG at a reduced size no smaller than it.

    Raises:
      BadInput: corrupt_image, wrong_dimensions. Pillow's own errors (a truncated PNG)
        propagate and are counted as corrupt_image by the builder.
    """
    path = os.fspath(file)
    with file.open("rb") as f:
        data = f.read()
    has_preamble = data[128:132] == b"DICM"
    if has_preamble or path.lower().endswith(".dcm"):
        try:
            # Some old files lack the preamble; `force` reads them, and anything else fails
            # below for want of pixel data.
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        except Exception as error:  # pydicom raises many types for non-DICOM bytes
            raise BadInput("corrupt_image", f"{path}: not DICOM: {error}") from None
        if not has_preamble and "PixelData" not in ds:
            raise BadInput("corrupt_image", f"{path}: not DICOM (no DICM preamble, no pixels)")
        return dicom.display_values(ds, path, dicom_window)[:, :, None]
    image = Image.open(io.BytesIO(data))
    dicom.check_shape(image.height, image.width, path)
    image.draft("RGB" if channels == 3 else "L", (draft_size, draft_size))
    image.load()
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit (or wider) grayscale
        return image_ops.stretch(np.asarray(image))[:, :, None]
    if channels == 3 and image.mode not in ("L", "LA", "1", "I", "F"):
        return np.asarray(image.convert("RGB"), np.float32)
    return np.asarray(image.convert("L"), np.float32)[:, :, None]


def decode_folder_row(
    row: SourceRow, *, channels: int, dicom_window: str, base_resolution: int, resolution: int
) -> np.ndarray:
    """A kept row's file -> uint8[resolution, resolution, channels]."""
    display = read_display(
        row.file, channels=channels, dicom_window=dicom_window, draft_size=base_resolution
    )
    base = image_ops.resize_square(image_ops.pad_to_square(display), base_resolution)
    if base.shape[2] != channels:  # a grayscale source stored as RGB
        base = np.repeat(base, channels, axis=2)
    return box_pyramid(base, resolution)


# ---------------------------------------------------------------------------------------------
# The TFDS builder


class FolderDataset(SourceBuilder, skip_registration=True):
    """A researcher's own labelled images at one resolution, split 80/10/10 by patient.

    Reads a generic labels CSV and PNG/JPEG/DICOM files; the statistics, the report and the
    reuse rules are the shared ones. Not registered with TFDS; use `prepare_folder`.
    """

    name = "folder"
    TITLE = "Folder dataset"
    SKIP_REASONS: ClassVar[tuple[str, ...]] = SKIP_REASONS
    REPORT_UNIT = "images"
    EMPTY_SPLIT_WHY = (
        "too few patients for an 80/10/10 patient split (about 10 or more are needed, 30+ "
        "to be safe)"
    )
    RELEASE_NOTE = "Labels CSV + PNG/JPEG/DICOM, patient split, black square padding, box pyramid."

    @property
    def LABELS(self) -> tuple[str, ...]:  # the base class names it so; here per config
        return self.builder_config.label_names

    def find_root(self, manual_dir: str | os.PathLike) -> epath.Path:
        return find_dataset_root(manual_dir, self.builder_config.labels_csv)

    def index_files(self) -> tuple[str, ...]:
        """The labels CSV (the images are not hashed)."""
        return (self.builder_config.labels_csv,)

    def plan(self, root: epath.Path) -> dict[str, list[SourceRow]]:
        config = self.builder_config
        table = read_label_table(
            root, config.labels_csv, config.image_column, config.patient_column, config.label_names
        )
        return plan_rows(
            root,
            table,
            drop_no_positive=config.drop_no_positive,
            tally=self.tally,
            allow_outside_paths=config.allow_outside_paths,
        )

    def decoder(self) -> Callable[[SourceRow], np.ndarray]:
        config = self.builder_config
        return functools.partial(
            decode_folder_row,
            channels=config.channels,
            dicom_window=config.dicom_window,
            base_resolution=config.base_resolution,
            resolution=config.resolution,
        )

    def channels(self) -> int:
        return self.builder_config.channels

    def description(self) -> str:
        config = self.builder_config
        return (
            f"Labelled images from {config.labels_csv}, {config.channels} channel(s), "
            f"DICOM window {config.dicom_window}, padded square, box-downsampled."
        )

    def metadata(self) -> dict[str, Any]:
        config = self.builder_config
        return {
            **super().metadata(),
            "channels": config.channels,
            "dicom_window": config.dicom_window,
        }


# ---------------------------------------------------------------------------------------------
# Entry point


def _label_names_of_earlier_build(data_dir: epath.Path, wanted: dict) -> tuple[str, ...] | None:
    """The label names of the newest complete build with settings `wanted`, if any.

    Lets a build be reused after its source folder is gone, when its label names (part of
    the config name) can no longer be read from the CSV.
    """
    version = str(FolderDataset.VERSION)
    reports = [
        p
        for p in (data_dir / FolderDataset.name).glob(f"*/{version}/{REPORT_FILE}")
        if (p.parent / "dataset_info.json").exists()
    ]
    defaults = {"allow_outside_paths": False}  # reports written before the setting existed
    for path in sorted(reports, key=lambda p: os.path.getmtime(p), reverse=True):
        settings = json.loads(path.read_text()).get("settings", {})
        if all(settings.get(k, defaults.get(k)) == v for k, v in wanted.items()):
            return tuple(settings["label_names"])
    return None


def prepare_folder(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    resolution: int,
    base_resolution: int = 256,
    labels_csv: str = "labels.csv",
    image_column: str = "image",
    patient_column: str = "patient",
    label_columns: str = "",
    channels: int = 1,
    dicom_window: str = "file",
    drop_no_positive: bool = False,
    allow_outside_paths: bool = False,
    workers: int = 0,
) -> tuple[epath.Path, dict]:
    """Builds a folder of labelled images at one resolution (or reuses a build) and reports.

    Args:
      manual_dir: the folder holding `labels_csv` and the images it names.
      data_dir: TFDS data root; the dataset lands in `data_dir/folder/<config>/<version>/`.
      resolution, base_resolution: stored side, and the side images are resized to before the
        2x2 box pyramid (powers of two, resolution <= base_resolution).
      labels_csv: the CSV, relative to manual_dir, with a header row.
      image_column: its column of image paths (relative to manual_dir, or absolute). A path
        that leads outside manual_dir (`..`, elsewhere on disk, a symlink out) skips its row
        as `outside_manual_dir` without opening the file.
      patient_column: its column of patient ids; the 80/10/10 split hashes them
        (`builder.patient_split`), so no patient is in two splits.
      label_columns: comma-separated label columns ('' = every column but the image and
        patient ones); the stored label names are these in CSV order. Cells are 1/0 (also
        1.0/0.0, true/false, yes/no in any case); a blank cell is 0; anything else skips the
        row as `unknown_label_value`.
      channels: 1 (grayscale) or 3 (RGB).
      dicom_window: 'file', 'minmax' or a name from `dicom.WINDOWS` (module docstring).
      drop_no_positive: skip images whose labels are all 0 (`no_positive_label`).
      allow_outside_paths: use image paths that lead outside manual_dir too (for a CSV that
        deliberately names files elsewhere); adds `-outside` to the config name.
      workers: processes decoding images (0 = every available core).

    Returns:
      (dataset_dir, report), as `builds.prepare_with_reuse`, with report["unit"] = "images":
      `rows_read` has the CSV rows and the image files no row names; `counts` has each of them
      by outcome (kept + each of SKIP_REASONS = both totals); `bad_rows` lists the skipped
      ones. The config name encodes every setting that changes the data, e.g.
      r64-c1-file-keep-b256-1a2b3c4d (the hash covers the CSV name and its columns). A build
      is reused while the CSV is unchanged (images are not hashed: after replacing image
      files, edit or touch the CSV to rebuild).

    Raises:
      DataNotFoundError: no folder or CSV, a CSV without the named columns (the message says
        which config field to set), or too few patients for three splits.
      ConfigError: an impossible resolution, channel count or DICOM window.
    """
    check_pyramid_sizes(resolution, base_resolution)
    check_settings(channels, dicom_window)
    wanted = {
        "resolution": resolution,
        "channels": channels,
        "dicom_window": dicom_window,
        "drop_no_positive": drop_no_positive,
        "base_resolution": base_resolution,
        "labels_csv": labels_csv,
        "image_column": image_column,
        "patient_column": patient_column,
        "label_columns": label_columns,
        "allow_outside_paths": allow_outside_paths,
    }
    label_names = None
    if not epath.Path(manual_dir).exists():
        label_names = _label_names_of_earlier_build(epath.Path(data_dir), wanted)
    if label_names is None:
        root = find_dataset_root(manual_dir, labels_csv)
        label_names = read_label_table(
            root, labels_csv, image_column, patient_column, label_columns
        ).label_names
    config = FolderConfig(**wanted, label_names=label_names)
    manual_dir = os.path.abspath(os.fspath(manual_dir))
    return builds.prepare_with_reuse(FolderDataset, config, manual_dir, data_dir, workers=workers)


# What the registry (`synthjax.data.registry`) reads; DOWNLOAD and MANUAL_DIR are above.
BUILDER = FolderDataset
PREPARE = prepare_folder
# prepare_folder's settings beyond the common ones, by their place in `config.dataset`.
SETTINGS = {
    name: f"folder.{name}"
    for name in (
        "labels_csv",
        "image_column",
        "patient_column",
        "label_columns",
        "channels",
        "dicom_window",
        "allow_outside_paths",
    )
}
