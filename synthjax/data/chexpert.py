"""CheXpert as a TFDS dataset: the raw CSV + JPEG download -> array_record shards.

Data flow: `manual_dir` (the real CheXpert-v1.0[-small] download, or the phantom that
`synthjax.data.phantoms.cxr` writes in the same layout) -> `prepare_chexpert` / `Chexpert`
(this module: frontal views, label policy, patient-level 80/10/10 split, resize to the base
resolution and 2x2 box pyramid down to the stored one; the rest is `synthjax.data.builder`'s)
-> `data_dir/chexpert/<config>/<version>/` holding the shards, `dataset_info.json` and
`prepare_report.json` (`synthjax.data.builds`) -> `tfds.builder_from_directory(...)` -> grain.

Every CSV row is accounted for: kept, filtered (lateral view, no positive label) or skipped as
bad (cut short or with extra cells, no patient id, a path leading out of the dataset folder,
duplicate, unknown label value, missing or corrupt image), counted by reason and listed in the
report. Nothing outside the dataset folder is ever opened: `..`, absolute paths and symlinks
are followed on paper first (`Boundary`). The `id` feature
(`patientNNNNN/studyN/viewN_frontal`) is for internal bookkeeping only and never leaves the
private side.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builds
from synthjax.data.builder import (
    SourceBuilder,
    SourceRow,
    Tally,
    check_pyramid_sizes,
    patient_split,
)
from synthjax.data.source_files import Boundary, read_csv_rows, row_shape_problem

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

DATASET_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
INDEX_FILES = ("train.csv", "valid.csv")
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
DOWNLOAD_PAGE = (
    "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2"
)
INFO_PAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
# For the registry (`synthjax.data.registry`), like BUILDER, PREPARE and SETTINGS at the end.
DOWNLOAD = f"the Stanford AIMI CheXpert page ({DOWNLOAD_PAGE})"
MANUAL_DIR = "the folder holding CheXpert-v1.0-small/"
_LABEL_VALUES = {"": 0.0, "1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0}
_PATIENT = re.compile(r"^patient\d+$")


def config_name(
    resolution: int, uncertain_policy: str, drop_no_positive: bool, base_resolution: int
) -> str:
    """The TFDS config name, from every setting that changes the data: r32-u_ones-drop-b256."""
    keep = "drop" if drop_no_positive else "keep"
    return f"r{resolution}-{uncertain_policy}-{keep}-b{base_resolution}"


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


# ---------------------------------------------------------------------------------------------
# The TFDS builder


class Chexpert(SourceBuilder, skip_registration=True):
    """CheXpert frontal radiographs at one resolution, split 80/10/10 by patient.

    Not registered with TFDS (its catalogue has an unrelated `chexpert`); construct it
    directly or use `prepare_chexpert`.
    """

    TITLE = "CheXpert"
    LABELS: ClassVar[tuple[str, ...]] = CHEXPERT_LABELS
    SKIP_REASONS: ClassVar[tuple[str, ...]] = SKIP_REASONS
    DESCRIPTION = "CheXpert frontal chest radiographs, grayscale, box-downsampled."
    HOMEPAGE = INFO_PAGE
    CITATION = "Irvin et al., CheXpert, AAAI 2019. arXiv:1901.07031"
    RELEASE_NOTE = "Frontal views, patient-level hash split, box pyramid."

    def find_root(self, manual_dir: str | os.PathLike) -> epath.Path:
        return find_dataset_root(manual_dir, self.builder_config.base_resolution)

    def index_files(self) -> tuple[str, ...]:
        return INDEX_FILES

    def plan(self, root: epath.Path) -> dict[str, list[SourceRow]]:
        config = self.builder_config
        return plan_rows(
            root,
            uncertain_policy=config.uncertain_policy,
            drop_no_positive=config.drop_no_positive,
            tally=self.tally,
        )


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
      data_dir: TFDS data root; the dataset lands in `data_dir/chexpert/<config>/<version>/`.
      resolution, uncertain_policy, drop_no_positive, base_resolution: see `ChexpertConfig`.
      workers: processes decoding images (0 = every available core).

    Returns:
      (dataset_dir, report), as `builds.prepare_with_reuse`. A build is reused when its
      report exists and the source CSVs are unchanged (or the source is no longer there).

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
    return builds.prepare_with_reuse(Chexpert, config, manual_dir, data_dir, workers=workers)


# What the registry (`synthjax.data.registry`) reads; DOWNLOAD and MANUAL_DIR are above.
BUILDER = Chexpert
PREPARE = prepare_chexpert
# prepare_chexpert's settings beyond the common ones, by their place in `config.dataset`.
SETTINGS = {"uncertain_policy": "uncertain_policy"}
