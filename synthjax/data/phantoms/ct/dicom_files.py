"""Brain-CT phantom, part 2: one slice of known HU as a DICOM file, in a scanner's encoding.

Holds `encode_hu` (HU -> stored pixels and pixel-module fields, for each of `ENCODINGS`: see
`synthjax.data.phantoms.ct.writer` for what each scanner writes), `write_ct_dicom` (one slice
file) and the pieces `writer` reuses across a series (`slice_dataset`, `set_slice`,
`save_dicom`). Reading a file back through `synthjax.data.dicom` gives round(HU).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import FileMetaDataset

ENCODINGS = ("unsigned12", "signed16", "unsigned16_slope", "rsna_wrapped")
PADDING = -2000  # signed16: outside the reconstruction circle


def encode_hu(hu: np.ndarray, encoding: str) -> tuple[np.ndarray, dict[str, Any]]:
    """HU float32[H, W] -> (stored pixels, DICOM pixel-module fields) for one encoding.

    Stored pixels are uint16[H, W] (PixelRepresentation 0) or int16[H, W] (1). The fields
    are PixelRepresentation, BitsAllocated, BitsStored, HighBit, RescaleIntercept,
    RescaleSlope and, for signed16, PixelPaddingValue. See the module docstring for each
    encoding; reading back through the modality LUT (with the RSNA fix for rsna_wrapped)
    gives round(HU), clipped to the encoding's range.
    """
    rounded = np.rint(hu)
    if encoding == "unsigned12":
        stored = np.clip(rounded + 1024, 0, 4095).astype(np.uint16)
        fields = dict(PixelRepresentation=0, BitsStored=12, RescaleIntercept=-1024)
    elif encoding == "signed16":
        stored = np.clip(rounded, -32768, 32767).astype(np.int16)
        height, width = hu.shape
        yy = (np.arange(height) + 0.5 - height / 2)[:, None]
        xx = (np.arange(width) + 0.5 - width / 2)[None, :]
        stored[yy**2 + xx**2 > (min(height, width) / 2) ** 2] = PADDING
        fields = dict(
            PixelRepresentation=1, BitsStored=16, RescaleIntercept=0, PixelPaddingValue=PADDING
        )
    elif encoding == "unsigned16_slope":
        stored = np.clip((rounded + 1024) * 2, 0, 65535).astype(np.uint16)
        fields = dict(PixelRepresentation=0, BitsStored=16, RescaleIntercept=-1024)
        fields["RescaleSlope"] = 0.5
    elif encoding == "rsna_wrapped":
        wrapped = np.remainder(np.clip(rounded, -999, 3000) - 1, 4096)
        stored = wrapped.astype(np.uint16)
        fields = dict(PixelRepresentation=0, BitsStored=12, RescaleIntercept=1)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    fields.setdefault("RescaleSlope", 1)
    fields["BitsAllocated"] = 16
    fields["HighBit"] = fields["BitsStored"] - 1
    return stored, fields


def _ds_text(value: float) -> str:
    """A decimal string as scanners write them (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1e7 else f"{value:.6g}"
    return text if text not in ("-0", "") else "0"


def write_ct_dicom(
    path: str | os.PathLike,
    hu: np.ndarray,
    *,
    encoding: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    position: tuple[float, float, float],
    pixel_spacing: float,
    window: tuple[tuple[float, ...], tuple[float, ...]] = ((40.0,), (80.0,)),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_thickness: float = 5.0,
    instance_number: int = 1,
) -> None:
    """Writes one axial CT slice with known HU as a DICOM file (readable without force).

    Args:
      path: the .dcm file to write.
      hu: float32[H, W] Hounsfield units; encoded with `encode_hu(hu, encoding)`.
      encoding: one of ENCODINGS.
      patient_id, study_uid, series_uid, sop_uid: identifiers (the UIDs must be valid).
      position: ImagePositionPatient (mm) of the first pixel.
      pixel_spacing: mm per pixel, rows and columns.
      window: (centres, widths) of the display windows; one value each is written as a
        single value, more as a multi-valued element.
      orientation: ImageOrientationPatient, row then column direction cosines.
      slice_thickness: SliceThickness (mm).
      instance_number: InstanceNumber.
    """
    stored, fields = encode_hu(hu, encoding)
    ds = slice_dataset(
        stored,
        fields,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        position=position,
        pixel_spacing=pixel_spacing,
        window=window,
        orientation=orientation,
        slice_thickness=slice_thickness,
        instance_number=instance_number,
    )
    save_dicom(ds, path)


def save_dicom(ds: pydicom.Dataset, path: str | os.PathLike) -> None:
    # Serialising to memory first is twice as fast as pydicom's many small file writes.
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def slice_dataset(
    stored,
    fields,
    *,
    patient_id,
    study_uid,
    series_uid,
    sop_uid,
    position,
    pixel_spacing,
    window,
    orientation,
    slice_thickness,
    instance_number,
) -> pydicom.Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.ImageOrientationPatient = [_ds_text(v) for v in orientation]
    ds.SliceThickness = _ds_text(slice_thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [_ds_text(pixel_spacing)] * 2
    ds.BitsAllocated = fields["BitsAllocated"]
    ds.BitsStored = fields["BitsStored"]
    ds.HighBit = fields["HighBit"]
    ds.PixelRepresentation = fields["PixelRepresentation"]
    if "PixelPaddingValue" in fields:
        vr = "SS" if fields["PixelRepresentation"] else "US"
        ds.add_new(0x00280120, vr, fields["PixelPaddingValue"])
    centres, widths = window
    ds.WindowCenter = [_ds_text(c) for c in centres] if len(centres) > 1 else _ds_text(centres[0])
    ds.WindowWidth = [_ds_text(w) for w in widths] if len(widths) > 1 else _ds_text(widths[0])
    ds.RescaleIntercept = _ds_text(fields["RescaleIntercept"])
    ds.RescaleSlope = _ds_text(fields["RescaleSlope"])
    set_slice(ds, stored, sop_uid=sop_uid, position=position, instance_number=instance_number)
    return ds


def set_slice(ds: pydicom.Dataset, stored: np.ndarray, *, sop_uid, position, instance_number):
    """The elements that differ between the slices of a series (the rest is reused)."""
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = str(instance_number)
    ds.ImagePositionPatient = [_ds_text(v) for v in position]
    if "PixelData" in ds:
        ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    else:
        ds.add_new(0x7FE00010, "OW", stored.astype(stored.dtype.newbyteorder("<")).tobytes())
