"""Chest radiograph phantom: a fake hospital that writes CheXpert-v1.0-small to disk.

Data flow: `write_chexpert_phantom` -> `root/CheXpert-v1.0-small/{train,valid}.csv` + JPEGs,
in CheXpert's own layout and CSV format (the raw phantom folder) -> `synthjax.data.chexpert`
(the same TFDS builder that reads the real download) -> array_record shards. The offline default
therefore exercises the real ingestion path, bad rows and all.

This module is the public entry: it holds the label statistics (`load_label_table`,
`draw_label_values`), the CSV layout and `write_chexpert_phantom`, and re-exports the drawing
API. Label vectors follow the real joint frequencies of the 14 findings (the packaged table of
CheXpert frontal label combinations); uncertain (-1) findings are drawn with the per-label rate
implied by the table's u_ones / u_zeros marginals. The images come from `cxr.anatomy`
(detector, noise, patient anatomy), `cxr.findings` (finding layouts and renderers) and
`cxr.render` (frontal and lateral composition).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import io

import numpy as np
from etils import epath
from PIL import Image

from synthjax.core.errors import ConfigError
from synthjax.core.progress import Progress
from synthjax.data.chexpert import CHEXPERT_LABELS
from synthjax.data.phantoms.cxr.anatomy import (
    HEIGHT_RATIO,
    Anatomy,
    Detector,
    draw_anatomy,
    study_anatomy,
)
from synthjax.data.phantoms.cxr.findings import (
    LABEL_INDEX,
    UNCERTAIN_SEVERITY,
    FindingLayout,
    draw_layout,
)
from synthjax.data.phantoms.cxr.render import render_frontal, render_lateral

__all__ = [
    "CSV_COLUMNS",
    "DATASET_FOLDER",
    "HEIGHT_RATIO",
    "UNCERTAIN_SEVERITY",
    "Anatomy",
    "Detector",
    "FindingLayout",
    "LabelTable",
    "draw_anatomy",
    "draw_label_values",
    "draw_layout",
    "load_label_table",
    "render_frontal",
    "render_lateral",
    "study_anatomy",
    "write_chexpert_phantom",
]

CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
DATASET_FOLDER = "CheXpert-v1.0-small"

# Radiologists write "no pneumothorax" / "no effusion" far more often than "no fracture";
# in the real file those negatives are explicit 0.0, the rest blank. Rough rates.
_EXPLICIT_ZERO_RATE = np.array(
    [0.0, 0.06, 0.08, 0.05, 0.04, 0.12, 0.15, 0.06, 0.05, 0.3, 0.2, 0.03, 0.04, 0.05]
)


# ---------------------------------------------------------------------------------------------
# Label statistics


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Real CheXpert frontal label combinations under the u_ones policy.

    combinations: int8[N, 14] multi-hot vectors; probabilities: float64[N] (sum 1);
    uncertain_rate: float64[14], the chance a positive finding was written as -1.
    """

    combinations: np.ndarray
    probabilities: np.ndarray
    uncertain_rate: np.ndarray


@functools.cache
def load_label_table() -> LabelTable:
    """Reads the packaged `chexpert_frontal_label_combinations.csv`."""
    resource = importlib.resources.files("synthjax.data") / "tables"
    text = (resource / "chexpert_frontal_label_combinations.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    marginals = {}
    for policy in ("u_ones", "u_zeros"):
        sub = [r for r in rows if r["uncertain_policy"] == policy]
        vectors = np.array([[int(r[name]) for name in CHEXPERT_LABELS] for r in sub], np.int8)
        counts = np.array([float(r["count"]) for r in sub])
        marginals[policy] = (vectors, counts, counts @ vectors / counts.sum())
    vectors, counts, p_ones = marginals["u_ones"]
    p_zeros = marginals["u_zeros"][2]
    # -1 counts as positive under u_ones only, so P(-1 | positive) = 1 - P_zeros / P_ones.
    rate = np.clip(1.0 - p_zeros / np.maximum(p_ones, 1e-12), 0.0, 1.0)
    return LabelTable(vectors, counts / counts.sum(), rate)


def draw_label_values(
    rng: np.random.Generator, table: LabelTable, *, uncertain: bool = True
) -> np.ndarray:
    """One image's findings as CSV values: int8[14] of 1 (positive), -1 (uncertain), 0.

    The combination is drawn with its real frequency; with `uncertain`, each positive finding
    becomes -1 with the table's per-label rate, so that -1 -> 0 (u_zeros) reproduces the
    table's u_zeros marginals.
    """
    combo = table.combinations[rng.choice(len(table.probabilities), p=table.probabilities)]
    if not uncertain:
        return combo.copy()
    unsure = (combo == 1) & (rng.random(combo.shape) < table.uncertain_rate)
    return np.where(unsure, -1, combo).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# The hospital: patients, studies, CSV rows, JPEG files


def _check(field: str, ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


def _label_cells(values: np.ndarray, rng: np.random.Generator, explicit_zeros: bool) -> list:
    """CSV cells for one label vector of 1 / -1 / 0 (int8[14]): '1.0', '-1.0', '0.0' or ''."""
    cells = []
    for value, zero_rate in zip(values, _EXPLICIT_ZERO_RATE, strict=True):
        if value != 0:
            cells.append(f"{float(value):.1f}")
        elif explicit_zeros or rng.random() < zero_rate:
            cells.append("0.0")
        else:
            cells.append("")
    return cells


def _save_jpeg(path: epath.Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def write_chexpert_phantom(
    root: str | epath.PathLike,
    *,
    num_patients: int,
    seed: int,
    image_size: int,
    noise: float,
    subtlety: float,
    anatomy_variation: float,
    lateral_fraction: float = 0.15,
    max_studies_per_patient: int = 3,
    uncertain: bool = True,
    valid_patients: int | None = None,
) -> dict:
    """Writes a phantom CheXpert-v1.0-small under `root` and returns its statistics.

    Layout, as in the real download: `root/CheXpert-v1.0-small/{train,valid}.csv` and
    `root/CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`,
    with CSV paths relative to `root`. valid.csv holds `valid_patients` further patients
    (default: 2% of `num_patients`, at least 1, at most 200) whose labels are certain 1.0 / 0.0,
    like the real expert-labelled validation set.

    Args:
      root: the folder to write into (what `--config.dataset.manual_dir` then points at).
      num_patients: patients in train.csv.
      seed: everything written is a pure function of the arguments.
      image_size: image width in pixels; height is 1.2x.
      noise: quantum noise and texture mottle (0 = none).
      subtlety: > 1 makes every finding fainter, < 1 more obvious.
      anatomy_variation: between-patient variation of size, pose, anatomy and exposure.
      lateral_fraction: fraction of all images that are lateral views (0 to 0.5).
      max_studies_per_patient: follow-up studies per patient, 1 to this many.
      uncertain: write some positive findings as -1 (uncertain), at the real per-label rates.
      valid_patients: patients in valid.csv (None = default above).

    Returns:
      JSON-able dict: `images`, `frontal`, `lateral`, `patients`, `train_patients`,
      `valid_patients`, `studies`, and per-label `label_prevalence` (1 or -1) and
      `uncertain_fraction` (-1) over frontal images.
    """
    _check("num_patients", num_patients >= 1, f"got {num_patients}", "use at least 1")
    _check("image_size", image_size >= 32, f"got {image_size}", "use at least 32")
    _check("noise", noise >= 0, f"got {noise}", "use a value >= 0")
    _check("subtlety", subtlety > 0, f"got {subtlety}", "use a value > 0")
    _check(
        "anatomy_variation", anatomy_variation >= 0, f"got {anatomy_variation}", "use a value >= 0"
    )
    _check(
        "lateral_fraction",
        0 <= lateral_fraction <= 0.5,
        f"got {lateral_fraction}",
        "use a fraction in [0, 0.5]",
    )
    _check(
        "max_studies_per_patient",
        max_studies_per_patient >= 1,
        f"got {max_studies_per_patient}",
        "use at least 1",
    )
    if valid_patients is None:
        valid_patients = min(200, max(1, round(0.02 * num_patients)))
    _check("valid_patients", valid_patients >= 0, f"got {valid_patients}", "use >= 0")

    table = load_label_table()
    detector = Detector(image_size, seed=seed)
    dataset_dir = epath.Path(root) / DATASET_FOLDER
    # What `_write_patient` draws each patient with, in the order it uses them.
    settings = dict(
        variation=anatomy_variation,
        max_studies=max_studies_per_patient,
        uncertain=uncertain,
        # P(second frontal) = 0.04; pick P(lateral) so laterals are the fraction asked.
        lateral_rate=lateral_fraction * 1.04 / (1.0 - lateral_fraction),
        noise=noise,
        subtlety=subtlety,
    )
    counts = {"images": 0, "frontal": 0, "lateral": 0, "studies": 0}
    frontal_labels = []
    for split, first, count in (
        ("train", 1, num_patients),
        ("valid", num_patients + 1, valid_patients),
    ):
        rows = []
        progress = Progress(f"phantom[{split}]", count, items_per_step=1, item_name="patient")
        for i, number in enumerate(range(first, first + count), start=1):
            patient_rows = _write_patient(
                dataset_dir, split, number, seed, table, detector, settings, counts, frontal_labels
            )
            rows.extend(patient_rows)
            progress.update(i, images=counts["images"])
        (dataset_dir / split).mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        (dataset_dir / f"{split}.csv").write_text(text.getvalue())

    labels = np.array(frontal_labels, dtype=np.int8).reshape(-1, len(CHEXPERT_LABELS))
    return {
        "root": str(dataset_dir),
        **counts,
        "patients": num_patients + valid_patients,
        "train_patients": num_patients,
        "valid_patients": valid_patients,
        "label_prevalence": dict(
            zip(CHEXPERT_LABELS, (labels != 0).mean(0).round(4).tolist(), strict=True)
        ),
        "uncertain_fraction": dict(
            zip(CHEXPERT_LABELS, (labels == -1).mean(0).round(4).tolist(), strict=True)
        ),
    }


def _write_patient(
    dataset_dir, split, number, seed, table, detector, settings, counts, frontal_labels
) -> list[list[str]]:
    """Draws one patient's studies, writes their JPEGs, returns their CSV rows."""
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, number])
    female = bool(rng.random() < 0.41)
    age = int(np.clip(round(rng.normal(61.0, 17.0)), 18, 90))
    anatomy = draw_anatomy(rng, variation=settings["variation"], female=female, age=age)
    n_studies = 1
    while n_studies < settings["max_studies"] and rng.random() < 0.45:
        n_studies += 1
    certain_only = split == "valid" or not settings["uncertain"]
    rows, previous = [], None
    for study in range(1, n_studies + 1):
        # Follow-up studies often repeat the last findings. Reusing an earlier draw keeps each
        # study's marginal distribution equal to the table's.
        if previous is not None and rng.random() < 0.5:
            values = previous
        else:
            values = draw_label_values(rng, table, uncertain=not certain_only)
        previous = values
        has_devices = values[LABEL_INDEX["Support Devices"]] != 0
        ap = bool(rng.random() < (0.93 if has_devices else 0.62))
        this_study = study_anatomy(anatomy, rng, variation=settings["variation"], ap=ap)
        views = ["frontal"] + (["frontal"] if rng.random() < 0.04 else [])
        if rng.random() < settings["lateral_rate"]:
            views.append("lateral")
        cells = _label_cells(values, rng, explicit_zeros=split == "valid")
        study_age = age + (study - 1) // 2
        folder = dataset_dir / split / f"patient{number:05d}" / f"study{study}"
        folder.mkdir(parents=True, exist_ok=True)
        counts["studies"] += 1
        for view_index, view in enumerate(views, start=1):
            if view == "frontal":
                severity = np.where(values == -1, UNCERTAIN_SEVERITY, values.astype(np.float32))
                image = render_frontal(
                    detector,
                    this_study,
                    draw_layout(rng),
                    severity,
                    rng,
                    noise=settings["noise"],
                    subtlety=settings["subtlety"],
                )
                frontal_labels.extend(values.tolist())
            else:
                image = render_lateral(detector, this_study, rng, noise=settings["noise"])
            name = f"view{view_index}_{view}.jpg"
            _save_jpeg(folder / name, image)
            counts["images"] += 1
            counts[view] += 1
            rows.append(
                [
                    f"{DATASET_FOLDER}/{split}/patient{number:05d}/study{study}/{name}",
                    "Female" if female else "Male",
                    str(study_age),
                    view.capitalize(),
                    ("AP" if ap else "PA") if view == "frontal" else "",
                    *cells,
                ]
            )
    return rows


# What the dataset registry (`synthjax.data.registry`) reads.
FOLDER = "phantom"  # in the workdir, or the name's start under `phantom.dir`
# Settings beyond the registry's common ones, by their place in `config.dataset.phantom`.
SETTINGS = {"anatomy_variation": "anatomy_variation"}


def write_phantom(root: str | epath.PathLike, settings: dict, *, workers: int) -> dict:
    """`write_chexpert_phantom` with the registry's settings, in this process."""
    del workers  # one process writes this phantom
    return write_chexpert_phantom(root, **settings)
