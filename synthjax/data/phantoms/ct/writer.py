"""Brain-CT phantom: a fake hospital that writes the RSNA Intracranial Hemorrhage layout.

Data flow: `write_rsna_phantom` -> `root/stage_2_train.csv` + `root/stage_2_train/ID_*.dcm`,
in the layout and formats of the RSNA 2019 challenge download (the raw phantom folder) ->
`synthjax.data.rsna_ich` (the builder that reads the real download; `synthjax.data.dicom` turns
each slice into HU) -> array_record shards. The offline default therefore exercises the real
ingestion path: pixel encodings, sorting by position, labels by file id.

Layout, as in the real download. The CSV has the header `ID,Label` and six rows per slice,
`ID_<sop>_<subtype>,<0|1>` for epidural, intraparenchymal, intraventricular, subarachnoid,
subdural, any (in that order); `<sop>` is 9 lowercase hex digits and names the file
`stage_2_train/ID_<sop>.dcm`. Each patient has one study of one axial series from skull base to
vertex; files are written (and listed in the CSV) in shuffled order, so a reader must sort by
ImagePositionPatient. Some series are gantry-tilted, as many real ones are: ImageOrientation
then has a tilted column direction and positions step along the slice normal, so z still
increases evenly but by spacing * cos(tilt).

Scanners. Each patient is scanned on one of `_SCANNERS`, which fixes the pixel encoding and
how window centre/width are written (single or multi-valued). The encodings (`ENCODINGS`):
  unsigned12        PixelRepresentation 0, BitsStored 12, intercept -1024, slope 1;
                    stored = clip(round(HU) + 1024, 0, 4095).
  signed16          PixelRepresentation 1, BitsStored 16, intercept 0, slope 1; stored =
                    round(HU), and -2000 (PixelPaddingValue) outside the scanner's circular
                    field of view.
  unsigned16_slope  PixelRepresentation 0, BitsStored 16, intercept -1024, slope 0.5;
                    stored = (round(HU) + 1024) / 0.5.
  rsna_wrapped      (3% of patients) the RSNA quirk: claims unsigned 12-bit with intercept 1,
                    but stores (HU - 1) modulo 4096, so air reads as ~3096 HU through the plain
                    modality LUT. HU is clipped to [-999, 3000] first; the reader's fix
                    (`synthjax.data.dicom.stored_to_hu`: for PixelRepresentation 0,
                    BitsStored 12, intercept > -100, values v >= 3072 become v - 4096, then
                    slope * v + intercept) gives the rounded HU back.

Labels (drawn in `ct.anatomy.draw_bleeds`). A patient has a bleed with probability
`BLEED_RATE` (0.47); a bleeding patient gets one of `_PATTERNS`, clinical combinations of one
to three types (traumatic subdural with
subarachnoid, hypertensive intraparenchymal with ventricular extension, aneurysmal
subarachnoid with intraventricular, rare epidural...). Each bleed is a 3-D event over a
contiguous run of slices whose length follows the type's craniocaudal extent (a subdural
covers much of a hemisphere, a ventricular bleed a few slices), and the label of a slice is 1
for a type iff one of its bleeds spans the slice; `any` is their OR. Co-located types (IVH in
the ventricle next to a deep IPH, SAH in the sulci under a subdural) overlap on the same
slices, which gives the real ~1.4 types per positive slice. The pattern weights, rate and
extents are tuned so per-slice prevalences match the stage-2 train set (any ~14%, subdural
~6.3%, subarachnoid ~4.8%, intraparenchymal ~4.8%, intraventricular ~3.5%, epidural ~0.4%);
over 8000 drawn patients they come out at 14.1 / 6.0 / 5.0 / 5.0 / 3.4 / 0.44%, with 1.41
types per positive slice. `write_rsna_phantom` returns what it wrote.

Images come from `ct.anatomy` (head, bleeds, HU rendering) and are encoded by
`ct.dicom_files`; this module adds the scanners, the patients and the hospital's files.
Patients are written in parallel (one series in memory per worker) and every file is a pure
function of (seed, patient index), so the output does not depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time

import numpy as np
import pydicom
import pydicom.uid
from etils import epath

from synthjax.core.errors import ConfigError
from synthjax.core.progress import Progress
from synthjax.data.phantoms.ct.anatomy import (
    SUBTYPES,
    Bleed,
    Head,
    HeadGrid,
    draw_bleeds,
    draw_head,
    render_hu,
    slice_labels,
)
from synthjax.data.phantoms.ct.dicom_files import (
    ENCODINGS,
    encode_hu,
    save_dicom,
    set_slice,
    slice_dataset,
    write_ct_dicom,
)
from synthjax.data.workers import ordered_map

__all__ = [
    "CSV_NAME",
    "ENCODINGS",
    "IMAGE_DIR",
    "LABEL_NAMES",
    "SUBTYPES",
    "Bleed",
    "Head",
    "Patient",
    "draw_patient",
    "encode_hu",
    "render_slice",
    "write_ct_dicom",
    "write_rsna_phantom",
]

CSV_NAME = "stage_2_train.csv"
IMAGE_DIR = "stage_2_train"
LABEL_NAMES = (*SUBTYPES, "any")  # the six CSV rows of a slice, in order

_MAX_SLICES = 1024  # sop ids are a bijection of patient * _MAX_SLICES + slice


# ---------------------------------------------------------------------------------------------
# Scanners and patients


@dataclasses.dataclass(frozen=True)
class _Scanner:
    encoding: str
    weight: float
    window: tuple[tuple[float, ...], tuple[float, ...]]  # centres, widths
    tilt: float  # fraction of series with a gantry tilt (up to 25 degrees)
    count_down: bool  # InstanceNumber 1 at the vertex


_SCANNERS = (
    _Scanner("unsigned12", 0.22, ((40.0, 40.0), (80.0, 80.0)), 0.6, False),
    _Scanner("unsigned12", 0.18, ((40.0,), (80.0,)), 0.0, True),
    _Scanner("signed16", 0.20, ((40.0, 600.0), (80.0, 2800.0)), 0.0, False),
    _Scanner("signed16", 0.15, ((35.0,), (80.0,)), 0.3, True),
    _Scanner("unsigned16_slope", 0.22, ((36.0, 36.0), (80.0, 80.0)), 0.2, False),
    _Scanner("rsna_wrapped", 0.03, ((30.0,), (80.0,)), 0.0, False),
)


@dataclasses.dataclass(frozen=True)
class Patient:
    """Everything written for one patient: identifiers, scanner geometry, head and bleeds.

    Slices are indexed from the skull base (0) to the vertex; `sop_ids[k]` names slice k's
    file (`IMAGE_DIR/ID_<sop_ids[k]>.dcm`) and its CSV rows.
    """

    seed: int
    index: int
    patient_id: str
    study_uid: str
    series_uid: str
    sop_ids: tuple[str, ...]
    encoding: str
    window: tuple[tuple[float, ...], tuple[float, ...]]
    image_size: int
    pixel_spacing: float
    slice_spacing: float
    tilt_degrees: float
    first_position: tuple[float, float, float]
    count_down: bool
    head: Head
    bleeds: tuple[Bleed, ...]

    @property
    def num_slices(self) -> int:
        return len(self.sop_ids)

    def labels(self) -> np.ndarray:
        """uint8[num_slices, 6] in LABEL_NAMES order."""
        return slice_labels(self.bleeds, self.num_slices)

    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient: rows along x; columns tilted by the gantry angle."""
        tilt = math.radians(self.tilt_degrees)
        return (1.0, 0.0, 0.0, 0.0, math.cos(tilt), -math.sin(tilt))

    def position(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice k: steps of slice_spacing along the slice normal."""
        tilt = math.radians(self.tilt_degrees)
        x, y, z = self.first_position
        step = k * self.slice_spacing
        return (x, y + step * math.sin(tilt), z + step * math.cos(tilt))


@functools.lru_cache(maxsize=64)
def _id_keys(seed: int, tag: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng([seed, 7919, tag]).integers(0, 1 << 36, 4).tolist())


def _hex_id(seed: int, tag: int, value: int) -> str:
    """9 hex digits: a seed-keyed bijection of `value` < 2**36, so ids never collide."""
    mask = (1 << 36) - 1
    keys = _id_keys(seed, tag)
    x = (value ^ keys[0]) & mask
    x = (x * (keys[1] | 1)) & mask
    x ^= x >> 17
    x = (x * (keys[2] | 1)) & mask
    x ^= x >> 19
    x = (x + keys[3]) & mask
    return f"{x:09x}"


def _uid(seed: int, *parts: object) -> str:
    return pydicom.uid.generate_uid(entropy_srcs=["rsna-phantom", str(seed), *map(str, parts)])


def draw_patient(
    seed: int,
    index: int,
    *,
    image_size: int,
    slices_per_series: tuple[int, int],
    subtlety: float,
) -> Patient:
    """The patient `write_rsna_phantom` writes as number `index` (from 0) for `seed`."""
    rng = np.random.default_rng([seed, index, 0])
    weights = np.array([s.weight for s in _SCANNERS])
    scanner = _SCANNERS[rng.choice(len(_SCANNERS), p=weights / weights.sum())]
    low, high = slices_per_series
    num_slices = int(rng.integers(low, high + 1))
    # A 512 matrix over a 22-26 cm field, rescaled to image_size; written with 6 decimals.
    pixel_spacing = round(float(rng.uniform(0.43, 0.5)) * 512 / image_size, 6)
    head = draw_head(rng, num_slices=num_slices, field_of_view=pixel_spacing * image_size)
    bleeds = draw_bleeds(rng, head, subtlety=subtlety)
    # The series covers the head from skull base to vertex (~1.65 x its half-length high).
    span = head.half_length * 1.65 * (head.heights[-1] - head.heights[0])
    slice_spacing = round(span / max(num_slices - 1, 1), 1)
    tilted = rng.random() < scanner.tilt
    tilt_degrees = round(float(rng.uniform(10.0, 25.0)), 1) if tilted else 0.0
    half_field = pixel_spacing * image_size / 2
    first_position = (
        round(-half_field + float(rng.uniform(-2.0, 2.0)), 3),
        round(-half_field + float(rng.uniform(-20.0, 20.0)), 3),
        round(float(rng.uniform(-80.0, 120.0)), 3),
    )
    sop_ids = tuple(_hex_id(seed, 1, index * _MAX_SLICES + k) for k in range(num_slices))
    return Patient(
        seed=seed,
        index=index,
        patient_id=f"ID_{_hex_id(seed, 2, index)}",
        study_uid=_uid(seed, "study", index),
        series_uid=_uid(seed, "series", index),
        sop_ids=sop_ids,
        encoding=scanner.encoding,
        window=scanner.window,
        image_size=image_size,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        tilt_degrees=tilt_degrees,
        first_position=first_position,
        count_down=scanner.count_down,
        head=head,
        bleeds=bleeds,
    )


def render_slice(
    patient: Patient, k: int, *, noise: float, grid: HeadGrid | None = None
) -> np.ndarray:
    """Ground-truth HU of slice k (from the skull base) as written: float32[size, size].

    `grid` (the patient's `HeadGrid`) may be passed to save rebuilding it for every slice.
    """
    if grid is None:
        grid = _grid(patient)
    rng = np.random.default_rng([patient.seed, patient.index, 1, k])
    return render_hu(grid, k, patient.bleeds, noise=noise, rng=rng)


def _grid(patient: Patient) -> HeadGrid:
    return HeadGrid(
        patient.head, image_size=patient.image_size, pixel_spacing=patient.pixel_spacing
    )


# ---------------------------------------------------------------------------------------------
# The hospital: one series per patient, the label CSV


def _check(field: str, ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


@dataclasses.dataclass(frozen=True)
class _Settings:
    root: str
    seed: int
    image_size: int
    slices_per_series: tuple[int, int]
    noise: float
    subtlety: float


def _write_patient(settings: _Settings, index: int) -> tuple[list[tuple[str, np.ndarray]], str]:
    """Writes one patient's series; returns its slices' labels (file order) and its encoding.

    Each entry is (sop id, uint8[6] labels in LABEL_NAMES order). Runs in a worker process.
    """
    patient = draw_patient(
        settings.seed,
        index,
        image_size=settings.image_size,
        slices_per_series=settings.slices_per_series,
        subtlety=settings.subtlety,
    )
    grid = _grid(patient)
    labels = patient.labels()
    folder = os.path.join(settings.root, IMAGE_DIR)
    order = np.random.default_rng([settings.seed, index, 2]).permutation(patient.num_slices)
    lines, ds = [], None
    for k in order.tolist():
        stored, fields = encode_hu(
            render_slice(patient, k, noise=settings.noise, grid=grid), patient.encoding
        )
        this_slice = dict(
            sop_uid=_uid(settings.seed, "sop", patient.sop_ids[k]),
            position=patient.position(k),
            instance_number=patient.num_slices - k if patient.count_down else k + 1,
        )
        if ds is None:  # what `write_ct_dicom` writes, built once per series
            ds = slice_dataset(
                stored,
                fields,
                patient_id=patient.patient_id,
                study_uid=patient.study_uid,
                series_uid=patient.series_uid,
                pixel_spacing=patient.pixel_spacing,
                window=patient.window,
                orientation=patient.orientation(),
                slice_thickness=patient.slice_spacing,
                **this_slice,
            )
        else:
            set_slice(ds, stored, **this_slice)
        name = os.path.join(folder, f"ID_{patient.sop_ids[k]}.dcm")
        save_dicom(ds, name + ".partial")
        os.replace(name + ".partial", name)
        lines.append((patient.sop_ids[k], labels[k]))
    return lines, patient.encoding


def write_rsna_phantom(
    root: str | os.PathLike,
    *,
    num_patients: int,
    image_size: int,
    slices_per_series: tuple[int, int],
    noise: float,
    subtlety: float,
    seed: int,
    workers: int | None = None,
) -> dict:
    """Writes a phantom RSNA Intracranial Hemorrhage train set under `root`; returns stats.

    Layout: `root/stage_2_train.csv` and `root/stage_2_train/ID_<sop>.dcm` (module docstring).
    The DICOMs are streamed out one patient's series at a time per worker; the CSV is written
    last, under a temporary name renamed into place, so a CSV present means every file it
    lists was written (the caller still marks the folder complete itself).

    Args:
      root: the folder to write into.
      num_patients: patients, each with one series.
      image_size: Rows = Columns (a 512 scanner's geometry rescaled to this size).
      slices_per_series: (fewest, most) slices of a series, base to vertex.
      noise: image noise, ~4 HU standard deviation at 1 (0 = none).
      subtlety: > 1 makes bleeds smaller and fainter, < 1 larger and denser; labels unchanged.
      seed: everything written is a pure function of the arguments (not of `workers`).
      workers: processes (None = every available core, 1 = this process).

    Returns:
      JSON-able dict: `patients`, `slices`, per-slice `prevalence` of each LABEL_NAMES entry,
      `encodings` (patients per encoding), `seconds`, `slices_per_s`.
    """
    _check("num_patients", 1 <= num_patients < 2**26, f"got {num_patients}", "use 1 to 2**26-1")
    _check("image_size", image_size >= 32, f"got {image_size}", "use at least 32")
    low, high = slices_per_series
    _check(
        "slices_per_series",
        2 <= low <= high <= _MAX_SLICES,
        f"got {slices_per_series}",
        f"use (fewest, most) with 2 <= fewest <= most <= {_MAX_SLICES}",
    )
    _check("noise", noise >= 0, f"got {noise}", "use a value >= 0")
    _check("subtlety", subtlety > 0, f"got {subtlety}", "use a value > 0")
    _check("workers", workers is None or workers >= 1, f"got {workers}", "use None or >= 1")

    start = time.monotonic()
    root = epath.Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    settings = _Settings(str(root), seed, image_size, (low, high), noise, subtlety)
    write = functools.partial(_write_patient, settings)
    progress = Progress("phantom[rsna]", num_patients, items_per_step=1, item_name="patient")
    positives = np.zeros(len(LABEL_NAMES), np.int64)
    encodings = dict.fromkeys(ENCODINGS, 0)
    slices = 0
    partial = root / (CSV_NAME + ".partial")
    with partial.open("w") as csv_file:
        csv_file.write("ID,Label\n")
        results = ordered_map(write, range(num_patients), workers=workers or 0, chunk_size=1)
        for done, (index, result) in enumerate(results, start=1):
            if isinstance(result, Exception):
                raise RuntimeError(f"phantom patient {index} failed") from result
            lines, encoding = result
            for sop, labels in lines:
                csv_file.writelines(
                    f"ID_{sop}_{name},{value}\n"
                    for name, value in zip(LABEL_NAMES, labels.tolist(), strict=True)
                )
                positives += labels
            slices += len(lines)
            encodings[encoding] += 1
            progress.update(done, slices=slices)
    partial.replace(root / CSV_NAME)
    seconds = time.monotonic() - start
    return {
        "patients": num_patients,
        "slices": slices,
        "prevalence": dict(
            zip(LABEL_NAMES, (positives / max(slices, 1)).round(4).tolist(), strict=True)
        ),
        "encodings": encodings,
        "seconds": round(seconds, 2),
        "slices_per_s": round(slices / max(seconds, 1e-9), 1),
    }


# What the dataset registry (`synthjax.data.registry`) reads.
FOLDER = "phantom_rsna_ich"  # in the workdir, or the name's start under `phantom.dir`
# Settings beyond the registry's common ones, by their place in `config.dataset.phantom`.
SETTINGS = {"slices_per_series": ("min_slices", "max_slices")}


def write_phantom(root: str | os.PathLike, settings: dict, *, workers: int) -> dict:
    """`write_rsna_phantom` with the registry's settings (workers: 0 = every core)."""
    return write_rsna_phantom(root, **settings, workers=workers or None)
