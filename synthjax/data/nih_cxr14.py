"""NIH ChestX-ray14 as a TFDS dataset: Data_Entry_2017.csv + PNGs -> array_record shards.

Data flow: `manual_dir` (the NIH Clinical Center download, or the 1,000-image sample in the
same layout) -> `prepare_nih_cxr14` / `NihCxr14` (this module: `|`-separated finding labels
to a 14-vector, the official patient-disjoint test list plus a patient-hash train/validation
split, resize to the base resolution and 2x2 box pyramid down to the stored one) ->
`data_dir/nih_cxr14/<config>/<version>/` holding the shards, `dataset_info.json` and
`prepare_report.json` -> `tfds.builder_from_directory(...).as_data_source()` -> grain.

The builder is `synthjax.data.builder.SourceBuilder` with NIH's reading of the source and
its default decoding of 8-bit images (`builder.decode_row`): the per-split statistics, the
report and its reuse rules are shared, so `builder.format_report` prints either report.
Every CSV row is kept or skipped under one counted reason (cut short or with extra cells,
duplicate image index, unknown finding, not in the official split lists, an image that
resolves outside the dataset folder through a symlink, missing file, no positive label when
asked to drop those, corrupt image).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from synthjax.core.errors import DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builds
from synthjax.data.builder import (
    SourceBuilder,
    SourceRow,
    Tally,
    check_pyramid_sizes,
    patient_split,
    patient_uniform,
)
from synthjax.data.source_files import Boundary, read_csv_rows, read_csv_text, row_shape_problem

NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

CITATION = (
    "Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest "
    "X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization of "
    "Common Thorax Diseases. IEEE CVPR 2017, pp. 3462-3471."
)
# NIH's terms ask for this wherever its images are shown (grids, reports, exports).
ATTRIBUTION = (
    "Images: NIH Clinical Center, ChestX-ray14 (nihcc.app.box.com/v/ChestXray-NIHCC); "
    "Wang et al., CVPR 2017."
)
NO_FINDING = "No Finding"
# NIH renamed the file in 2020 (same columns); either name is accepted, the first found used.
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
# Each skipped row is counted once, under the first reason that applies, in this order.
SKIP_REASONS = (
    "short_row",
    "long_row",
    "duplicate_image_index",
    "unknown_label",
    "not_in_split_lists",
    "outside_manual_dir",
    "missing_file",
    "no_positive_label",
    "corrupt_image",
)
VALIDATION_SHARE = 1.0 / 9.0  # of the official train_val patients
DOWNLOAD_PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
# For the registry (`synthjax.data.registry`), like BUILDER, PREPARE and SETTINGS at the end.
DOWNLOAD = f"the NIH Clinical Center ChestX-ray14 page ({DOWNLOAD_PAGE})"
MANUAL_DIR = f"the folder holding {CSV_NAMES[0]} and images/"
_LABEL_INDEX = {name: i for i, name in enumerate(NIH_LABELS)}


def config_name(resolution: int, drop_no_positive: bool, base_resolution: int) -> str:
    """The TFDS config name, from every setting that changes the data: r32-keep-b256."""
    keep = "drop" if drop_no_positive else "keep"
    return f"r{resolution}-{keep}-b{base_resolution}"


@dataclasses.dataclass(eq=False)
class NihCxr14Config(tfds.core.BuilderConfig):
    """One stored variant of ChestX-ray14. The name is derived from the fields; do not pass it.

    resolution: stored side (power of two <= base_resolution); drop_no_positive: drop "No
    Finding" images (off by default: here they are a class of their own); base_resolution:
    side the source image is resized to before the 2x2 box pyramid.
    """

    name: str = ""
    resolution: int = 32
    drop_no_positive: bool = False
    base_resolution: int = 256

    def __post_init__(self):
        check_pyramid_sizes(self.resolution, self.base_resolution)
        self.name = config_name(self.resolution, self.drop_no_positive, self.base_resolution)


# ---------------------------------------------------------------------------------------------
# Finding the data, reading the CSV, splitting patients


def _where_to_get_it(manual_dir: epath.Path, problem: str) -> str:
    return (
        f"NIH ChestX-ray14 not found: {problem}.\n"
        f"Download it from the NIH Clinical Center ChestX-ray14 page ({DOWNLOAD_PAGE}): "
        f"{CSV_NAMES[0]} (or {CSV_NAMES[1]}), {TRAIN_VAL_LIST}, {TEST_LIST} and the "
        "images_001 ... images_012 archives (about 42 GB). Unpack the archives beside the CSV "
        "(images/ or images_NNN/images/ both work), then pass the folder holding "
        f"{CSV_NAMES[0]} as --config.dataset.manual_dir=<FOLDER>. You passed: {manual_dir}"
    )


def _csv_in(folder: epath.Path) -> epath.Path | None:
    return next((folder / n for n in CSV_NAMES if (folder / n).exists()), None)


def find_dataset_root(manual_dir: str | os.PathLike) -> epath.Path:
    """The folder holding Data_Entry_2017.csv: `manual_dir` itself or one folder below it."""
    manual_dir = epath.Path(manual_dir)
    if not manual_dir.exists():
        raise DataNotFoundError(_where_to_get_it(manual_dir, f"{manual_dir} does not exist"))
    if _csv_in(manual_dir) is not None:
        return manual_dir
    for child in sorted(manual_dir.iterdir()):
        if child.is_dir() and _csv_in(child) is not None:
            return child
    raise DataNotFoundError(
        _where_to_get_it(manual_dir, f"no {' or '.join(CSV_NAMES)} in {manual_dir}")
    )


def index_images(root: epath.Path) -> dict[str, epath.Path]:
    """Image file name -> path, over `images*/` and `images*/images/` under `root`.

    One directory listing per folder, instead of one existence check per CSV row (the full
    dataset has 112,120 images in 12 folders). The first folder in sorted order wins.
    """
    found: dict[str, epath.Path] = {}
    for folder in sorted(root.glob("images*")):
        if not folder.is_dir():
            continue
        for where in (folder, folder / "images"):
            if where.is_dir():
                for file in where.iterdir():
                    found.setdefault(file.name, file)
    return found


def _read_list(path: epath.Path) -> set[str]:
    return {line.strip() for line in read_csv_text(path).splitlines() if line.strip()}


def _patient_key(patient_id: str, image_index: str) -> str:
    """A canonical patient id ('nih00000061'), from the column or the image name's prefix."""
    raw = patient_id.strip() or image_index.split("_", 1)[0]
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    return f"nih{int(raw):08d}" if raw.isascii() and raw.isdigit() else f"nih{raw}"


def hash_split(patient: str, official: bool) -> str:
    """The split of a patient not in the official test list (or of any, without the lists).

    official: the patient is in NIH's train_val list, which is split about 8/9 train, 1/9
    validation; otherwise 80/10/10 as `builder.patient_split`. Both hash the patient id
    alone, so no patient crosses splits.
    """
    if official:
        return "validation" if patient_uniform(patient) >= 1.0 - VALIDATION_SHARE else "train"
    return patient_split(patient)


def parse_findings(cell: str) -> tuple[np.ndarray | None, list[str]]:
    """A 'Finding Labels' cell -> (float32[14] multi-hot, []), or (None, unknown names).

    'No Finding' is all zeros; an empty cell counts as unknown.
    """
    labels = np.zeros(len(NIH_LABELS), np.float32)
    names = [n.strip() for n in cell.split("|") if n.strip()]
    unknown = [n for n in names if n != NO_FINDING and n not in _LABEL_INDEX]
    if unknown or not names:
        return None, unknown or ["<empty>"]
    for name in names:
        if name != NO_FINDING:
            labels[_LABEL_INDEX[name]] = 1.0
    return labels, []


def plan_rows(
    root: epath.Path, *, drop_no_positive: bool, tally: Tally
) -> dict[str, list[SourceRow]]:
    """Reads the CSV (and the official lists, if both present) into per-split rows to decode."""
    csv_path = _csv_in(root)
    if csv_path is None:
        raise DataNotFoundError(_where_to_get_it(root, f"no {' or '.join(CSV_NAMES)} in {root}"))
    rows = read_csv_rows(csv_path, REQUIRED_COLUMNS, "NIH's Data_Entry_2017.csv")
    tally.rows_read[csv_path.name] = len(rows)
    official = (root / TRAIN_VAL_LIST).exists() and (root / TEST_LIST).exists()
    train_val = _read_list(root / TRAIN_VAL_LIST) if official else set()
    test = _read_list(root / TEST_LIST) if official else set()
    images = index_images(root)
    boundary = Boundary(root)
    plans: dict[str, list[SourceRow]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        index = (row.get("Image Index") or "").strip()
        problem = row_shape_problem(row)
        if problem is not None:
            where = index or f"{csv_path.name} row {number}"
            tally.skip(problem[0], where, f"{csv_path.name} row {number}: {problem[1]}")
            continue
        if index in seen:
            tally.skip("duplicate_image_index", index)
            continue
        seen.add(index)
        labels, unknown = parse_findings(row["Finding Labels"])
        if labels is None:
            tally.skip("unknown_label", index, ", ".join(repr(n) for n in unknown))
            continue
        patient = _patient_key(row["Patient ID"], index)
        if not official:
            split = hash_split(patient, official=False)
        elif index in test:
            split = "test"
        elif index in train_val:
            split = hash_split(patient, official=True)
        else:
            tally.skip("not_in_split_lists", index, f"in neither {TRAIN_VAL_LIST} nor {TEST_LIST}")
            continue
        file = images.get(index)
        if file is None:
            tally.skip("missing_file", index, f"no {index} in {root}/images*/")
            continue
        if not boundary.contains(file):
            tally.skip("outside_manual_dir", index, boundary.outside(file))
            continue
        if drop_no_positive and not labels.any():
            tally.skip("no_positive_label", index)
            continue
        plans[split].append(
            SourceRow(key=index, patient=patient, file=file, csv_path=index, labels=labels)
        )
    return plans


# ---------------------------------------------------------------------------------------------
# The TFDS builder


class NihCxr14(SourceBuilder, skip_registration=True):
    """NIH ChestX-ray14 radiographs at one resolution: official test list, patient-hash rest.

    Decodes as the CheXpert builder does; only reading the source differs. Not registered
    with TFDS; construct it directly or use `prepare_nih_cxr14`.
    """

    TITLE = "NIH ChestX-ray14"
    LABELS: ClassVar[tuple[str, ...]] = NIH_LABELS
    SKIP_REASONS: ClassVar[tuple[str, ...]] = SKIP_REASONS
    DESCRIPTION = "NIH ChestX-ray14 chest radiographs, grayscale, box-downsampled."
    HOMEPAGE = DOWNLOAD_PAGE
    CITATION = CITATION
    RELEASE_NOTE = "Official test list, patient-hash train/validation, box pyramid."

    def find_root(self, manual_dir: str | os.PathLike) -> epath.Path:
        return find_dataset_root(manual_dir)

    def index_files(self) -> tuple[str, ...]:
        return (*CSV_NAMES, TRAIN_VAL_LIST, TEST_LIST)

    def plan(self, root: epath.Path) -> dict[str, list[SourceRow]]:
        return plan_rows(
            root, drop_no_positive=self.builder_config.drop_no_positive, tally=self.tally
        )


# ---------------------------------------------------------------------------------------------
# Entry point


def prepare_nih_cxr14(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    resolution: int,
    base_resolution: int = 256,
    drop_no_positive: bool = False,
    workers: int = 0,
) -> tuple[epath.Path, dict]:
    """Builds ChestX-ray14 at one resolution (or reuses a complete build) and reports on it.

    Args:
      manual_dir: the folder holding Data_Entry_2017.csv and images*/ (or its parent).
      data_dir: TFDS data root; the dataset lands in `data_dir/nih_cxr14/<config>/<version>/`.
      resolution, base_resolution, drop_no_positive: see `NihCxr14Config`.
      workers: processes decoding images (0 = every available core).

    Returns:
      (dataset_dir, report), as `builds.prepare_with_reuse`: `counts` has every CSV row by
      outcome (kept + each of SKIP_REASONS = rows read), `splits` the images, patients and
      label prevalence per split. The `id` feature is the NIH image index.

    Raises:
      DataNotFoundError: no Data_Entry_2017.csv under `manual_dir`; the message says where to
        get it.
      ConfigError: an impossible resolution.
    """
    config = NihCxr14Config(
        resolution=resolution, drop_no_positive=drop_no_positive, base_resolution=base_resolution
    )
    return builds.prepare_with_reuse(NihCxr14, config, manual_dir, data_dir, workers=workers)


# What the registry (`synthjax.data.registry`) reads; ATTRIBUTION, DOWNLOAD and MANUAL_DIR
# are above.
BUILDER = NihCxr14
PREPARE = prepare_nih_cxr14
SETTINGS: dict[str, str] = {}  # only the common ones
