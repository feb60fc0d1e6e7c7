"""CT DICOM files -> Hounsfield units -> windowed 8-bit channels.

Also `display_values`: any single-frame grayscale DICOM (the folder builder's) -> 8-bit
display values, through the same modality LUT and windows.

Data flow: a slice file -> `read_header` (tags only, for planning: patient, series, position)
-> `read_hu` (pixels through the modality LUT, with the RSNA wrap fixed) -> `window_channels`
(one uint8 channel per display window) -> the builders' resize and box pyramid.

Why each step is explicit: the study read ready-made PNGs whose windowing was never
written down. Here every number is from the file (RescaleSlope, RescaleIntercept,
PixelRepresentation, BitsStored) or from the config (window centre/width), and every file
that cannot be read raises `BadInput` with a reason the preparation report counts.

The RSNA wrap: some RSNA Intracranial Hemorrhage files claim unsigned 12-bit pixels with
RescaleIntercept near 0 (instead of -1024), but store HU - intercept modulo 4096, so air
(-1000 HU) appears as ~3096 and would read as dense bone. Those files are recognised by
(PixelRepresentation 0, BitsStored 12, intercept > -100), and stored values at or above 3072
(which would read above 3071 HU, the top of the 12-bit range every other file in the set
uses) are brought back down by 4096: the correction used throughout the RSNA 2019
challenge, with its threshold set so that -1024..3071 HU round-trips whatever the intercept.

Missing RescaleSlope / RescaleIntercept: both are Type 1 (required) in the CT Image Module
(DICOM PS3.3 C.8.2.1), so without them stored values have no defined HU. Reading them as
slope 1, intercept 0 turns the usual unsigned encoding (stored = HU + 1024) into HU 1064 for
water and an all-white brain window, so such a slice is refused (`no_rescale`), with one
exception that cannot be misread: signed pixel data where at least AIR_SHARE of the pixels
lie in the air band -1100..-900. Those are HU already (slope 1, intercept 0): the air around a
head is -1000 HU, unsigned offset data has no negative values at all, and signed offset data
would put that much of the slice at -2000 HU or below, which no tissue or air has.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import pydicom
import pydicom.errors
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from synthjax.data.image_ops import stretch
from synthjax.data.workers import BadInput

# name -> (centre, width) in HU. brain/subdural/bone are the three windows radiologists read
# head CT in; the study's single channel was the brain window.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "bone": (600.0, 2800.0),
    "stroke": (40.0, 40.0),
    "soft_tissue": (40.0, 380.0),
}
AIR_HU = -1024.0
MIN_SIDE = 32  # smaller images are not CT slices (scouts, thumbnails, corrupt headers)
MAX_ASPECT = 1.5  # non-square images are padded to square; beyond this they are refused
_WRAP_THRESHOLD = 4096 - 1024
AIR_BAND = (-1100.0, -900.0)  # HU of air, with noise
AIR_SHARE = 0.05  # pixels in AIR_BAND for signed data without rescale tags to count as HU
_HEADER_TAGS = [
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "InstanceNumber",
    "Rows",
    "Columns",
]


@dataclasses.dataclass(frozen=True)
class SliceHeader:
    """What planning needs from a slice, without its pixels."""

    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    z: float  # ImagePositionPatient[2] (InstanceNumber if absent): the order within a series


def parse_windows(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'brain,subdural,bone' (or a sequence of names) -> validated window names."""
    names = tuple(n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec))
    names = tuple(n for n in names if n)
    unknown = [n for n in names if n not in WINDOWS]
    if not names or unknown:
        raise ValueError(
            f"unknown CT window(s) {unknown or names!r}; use comma-separated names from "
            f"{sorted(WINDOWS)}"
        )
    return names


def _open(path: str | os.PathLike, **kwargs) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(os.fspath(path), **kwargs)
    except pydicom.errors.InvalidDicomError as error:
        raise BadInput("not_dicom", f"{path}: {error}") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput("corrupt_dicom", f"{path}: {type(error).__name__}: {error}") from None


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip() if value is not None else ""


def read_header(path: str | os.PathLike, *, modality: str = "CT") -> SliceHeader:
    """Reads the planning tags of one slice (no pixels).

    Raises:
      BadInput: not_dicom, corrupt_dicom, wrong_modality (Modality is not `modality`),
        no_patient_id.
    """
    ds = _open(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    found = _text(ds, "Modality")
    if found != modality:
        raise BadInput("wrong_modality", f"{path}: Modality {found or '<missing>'!r}")
    patient = _text(ds, "PatientID")
    if not patient:
        raise BadInput("no_patient_id", f"{path}: no PatientID")
    position = ds.get("ImagePositionPatient")
    if position is not None and len(position) == 3:
        z = float(position[2])
    else:
        z = float(ds.get("InstanceNumber") or 0)
    return SliceHeader(
        path=os.fspath(path),
        patient_id=patient,
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID") or f"{patient}/unknown-series",
        sop_uid=_text(ds, "SOPInstanceUID"),
        z=z,
    )


def is_rsna_wrapped(ds: pydicom.Dataset) -> bool:
    """True for the header signature of the RSNA files whose negative HUs wrapped (see top)."""
    return (
        int(ds.get("PixelRepresentation", 0)) == 0
        and int(ds.get("BitsStored", 16)) == 12
        and float(ds.get("RescaleIntercept", 0.0)) > -100
    )


def looks_like_hu(stored: np.ndarray) -> bool:
    """True when at least AIR_SHARE of the pixels lie in AIR_BAND (see the module docstring)."""
    low, high = AIR_BAND
    share = np.count_nonzero((stored >= low) & (stored <= high)) / max(stored.size, 1)
    return share >= AIR_SHARE


def _number(ds: pydicom.Dataset, keyword: str) -> float | None:
    """A numeric tag as a finite float, None when absent; BadInput when it is not a number."""
    if keyword not in ds:
        return None
    try:
        value = float(ds[keyword].value)
    except (TypeError, ValueError) as error:
        raise BadInput("no_rescale", f"{keyword} is not a number: {error}") from None
    if not np.isfinite(value):
        raise BadInput("no_rescale", f"{keyword} is {value}")
    return value


def rescale(
    ds: pydicom.Dataset, stored: np.ndarray, path: str | os.PathLike = ""
) -> tuple[float, float]:
    """(slope, intercept) of a slice's linear modality LUT (see the module docstring).

    Only CT requires the two tags; for other modalities a missing one is the identity.

    Raises:
      BadInput: no_rescale (either tag missing, unless the pixels are signed and already HU;
        a tag that is not a finite number; a slope of 0, which would flatten the image).
    """
    slope, intercept = _number(ds, "RescaleSlope"), _number(ds, "RescaleIntercept")
    if _text(ds, "Modality") != "CT":  # optional elsewhere (MR): absent means identity
        slope = 1.0 if slope is None else slope
        intercept = 0.0 if intercept is None else intercept
    if slope is None and intercept is None:
        if int(ds.get("PixelRepresentation", 0) or 0) == 1 and looks_like_hu(stored):
            return 1.0, 0.0
        raise BadInput(
            "no_rescale",
            f"{path}: no RescaleSlope/RescaleIntercept (required for CT) and the pixels are not "
            f"signed HU with air near -1000, so their HU cannot be known",
        )
    if slope is None or intercept is None:
        missing = "RescaleSlope" if slope is None else "RescaleIntercept"
        raise BadInput("no_rescale", f"{path}: {missing} missing (required for CT)")
    if slope == 0:
        raise BadInput("no_rescale", f"{path}: RescaleSlope is 0")
    return slope, intercept


def stored_to_hu(
    stored: np.ndarray, ds: pydicom.Dataset, path: str | os.PathLike = ""
) -> np.ndarray:
    """Stored pixel values -> HU: slope * value + intercept (the linear modality LUT).

    Stored values of an RSNA-wrapped file are unwrapped first. Returns float32.

    Raises:
      BadInput: no_rescale (see `rescale`).
    """
    slope, intercept = rescale(ds, stored, path)
    values = stored.astype(np.float32)
    if is_rsna_wrapped(ds):
        values = np.where(values >= _WRAP_THRESHOLD, values - 4096.0, values)
    return values * np.float32(slope) + np.float32(intercept)


def read_hu(path: str | os.PathLike, *, modality: str = "CT") -> np.ndarray:
    """One slice in Hounsfield units, float32[H, W], padded to square with air.

    Raises:
      BadInput: not_dicom, corrupt_dicom, wrong_modality, no_pixel_data, truncated_pixel_data
        (fewer bytes than Rows x Columns x BitsAllocated say), wrong_dimensions (not a single
        2-D grayscale frame, smaller than MIN_SIDE, or further from square than MAX_ASPECT),
        no_rescale (no defined HU; see the module docstring).
    """
    ds = _open(path)
    found = _text(ds, "Modality")
    if found != modality:
        raise BadInput("wrong_modality", f"{path}: Modality {found or '<missing>'!r}")
    if "PixelData" not in ds:
        raise BadInput("no_pixel_data", f"{path}: no PixelData element")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames != 1 or samples != 1:
        raise BadInput(
            "wrong_dimensions", f"{path}: {frames} frames of {samples} samples, not one 2-D slice"
        )
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    expected = rows * cols * int(ds.get("BitsAllocated", 16)) // 8
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = syntax is not None and syntax.is_compressed  # sizes vary; the decoder checks
    if not compressed and len(ds.PixelData) < expected:
        raise BadInput(
            "truncated_pixel_data",
            f"{path}: {len(ds.PixelData)} pixel bytes, {rows}x{cols} needs {expected}",
        )
    try:
        stored = ds.pixel_array
    except Exception as error:  # an unsupported or broken encoding
        raise BadInput("corrupt_dicom", f"{path}: {type(error).__name__}: {error}") from None
    if stored.ndim != 2:
        raise BadInput("wrong_dimensions", f"{path}: pixel array of shape {stored.shape}")
    check_shape(*stored.shape, path)
    return pad_square(stored_to_hu(stored, ds, path))


def pad_square(hu: np.ndarray) -> np.ndarray:
    """Centres a non-square slice on a square of air (a head CT's field of view is round)."""
    height, width = hu.shape
    if height == width:
        return hu
    side = max(height, width)
    out = np.full((side, side), AIR_HU, np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = hu
    return out


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """The display window: HU in [center - width/2, center + width/2] -> 0..255, clipped.

    Float32 in, float32 out (not yet rounded), so resizing can happen before quantising.
    """
    low = center - width / 2.0
    return np.clip((hu - np.float32(low)) * np.float32(255.0 / width), 0.0, 255.0)


def window_channels(hu: np.ndarray, windows: Sequence[str]) -> np.ndarray:
    """float32[H, W] HU -> float32[H, W, len(windows)] in 0..255, one channel per window."""
    return np.stack([window(hu, *WINDOWS[name]) for name in windows], axis=-1)


def check_shape(height: int, width: int, path: str | os.PathLike) -> None:
    """Refuses (`wrong_dimensions`) a slice under MIN_SIDE a side or beyond MAX_ASPECT:1."""
    if min(height, width) < MIN_SIDE:
        raise BadInput(
            "wrong_dimensions", f"{path}: {height}x{width} is under {MIN_SIDE} px a side"
        )
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise BadInput(
            "wrong_dimensions",
            f"{path}: {height}x{width} is further from square than {MAX_ASPECT}:1",
        )


def _first_number(value) -> float | None:
    """The first value of a possibly multi-valued numeric element, if finite."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def display_values(ds: pydicom.Dataset, path: str, dicom_window: str) -> np.ndarray:
    """A single-frame grayscale DICOM of any modality -> float32[H, W] display values, 0..255.

    `dicom_window`: 'file' (the file's own first WindowCenter/WindowWidth, or min..max when it
    has none), 'minmax' (always the image's min..max) or a name from WINDOWS (that window in
    HU). MONOCHROME1 is inverted so that dense tissue is bright. The folder builder's DICOM
    reader; CT slices for the RSNA builder go through `read_hu` instead.

    Raises:
      BadInput: corrupt_image (no or undecodable pixel data), wrong_dimensions (multi-frame,
        colour, not 2-D, too small or too far from square), no_rescale (a CT without a
        defined HU scale, unless the window is 'minmax'; see `dicom.rescale`).
    """
    if "PixelData" not in ds:
        raise BadInput("corrupt_image", f"{path}: DICOM without pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if frames != 1 or samples != 1 or photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        raise BadInput(
            "wrong_dimensions",
            f"{path}: {frames} frame(s) of {samples} sample(s), {photometric or 'no'} "
            "photometric interpretation; only single-frame grayscale images are used",
        )
    try:
        stored = ds.pixel_array
    except Exception as error:  # truncated or in an encoding pydicom cannot decode here
        raise BadInput("corrupt_image", f"{path}: {type(error).__name__}: {error}") from None
    if stored.ndim != 2:
        raise BadInput("wrong_dimensions", f"{path}: pixel array of shape {stored.shape}")
    check_shape(*stored.shape, path)
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality == "CT" and dicom_window != "minmax" and "ModalityLUTSequence" not in ds:
        rescale(ds, stored, path)  # refuses a CT whose HU are not defined
    values = np.asarray(apply_modality_lut(stored, ds), np.float32)
    if dicom_window in WINDOWS:
        shown = window(values, *WINDOWS[dicom_window])
    else:
        center = _first_number(ds.get("WindowCenter"))
        width = _first_number(ds.get("WindowWidth"))
        if dicom_window == "file" and center is not None and width is not None and width > 0:
            shown = window(values, center, width)
        else:
            shown = stretch(values)
    if photometric == "MONOCHROME1":  # stored with dense tissue dark
        shown = 255.0 - shown
    return shown
