"""HU conversion and windowing against pydicom's own modality LUT, every bad DICOM case, and the
rule for CT slices without rescale tags.

The reference files are the real CT and MR slices that ship inside the pydicom wheel.
"""

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from synthjax.data import dicom
from synthjax.data.phantoms.ct import writer as phantom_ct
from synthjax.data.workers import BadInput

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


def _reason(path) -> str:
    with pytest.raises(BadInput) as err:
        dicom.read_hu(path)
    return err.value.reason


def test_hu_matches_pydicoms_modality_lut_on_a_real_ct():
    ds = pydicom.dcmread(CT_SMALL)
    expected = apply_modality_lut(ds.pixel_array, ds)
    hu = dicom.read_hu(CT_SMALL)
    assert hu.dtype == np.float32 and hu.shape == (128, 128)
    np.testing.assert_array_equal(hu, expected.astype(np.float32))
    # The file is signed 16-bit with intercept -1024: a real range of tissue densities.
    assert int(ds.PixelRepresentation) == 1 and float(ds.RescaleIntercept) == -1024
    assert hu.min() < -500 and hu.max() > 500


@pytest.mark.parametrize("slope,intercept", [(1.0, -1024.0), (0.5, -8192.0), (2.0, 0.0)])
def test_slope_and_intercept_are_applied_like_pydicom(tmp_path, slope, intercept):
    ds = pydicom.dcmread(CT_SMALL)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    path = tmp_path / "rescaled.dcm"
    ds.save_as(path)
    expected = apply_modality_lut(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path))
    np.testing.assert_allclose(dicom.read_hu(path), expected, rtol=0, atol=1e-3)


def _wrapped_copy(tmp_path):
    """CT_small re-encoded the way the broken RSNA files are: unsigned 12-bit, intercept 1."""
    ds = pydicom.dcmread(CT_SMALL)
    hu = np.clip(apply_modality_lut(ds.pixel_array, ds), -1000, 3000).astype(np.int32)
    stored = np.mod(hu - 1, 4096).astype(np.uint16)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    ds.RescaleIntercept, ds.RescaleSlope = 1, 1
    ds.PixelData = stored.tobytes()
    path = tmp_path / "wrapped.dcm"
    ds.save_as(path)
    return path, hu


def test_rsna_wrapped_pixels_are_unwrapped(tmp_path):
    path, hu = _wrapped_copy(tmp_path)
    ds = pydicom.dcmread(path)
    naive = apply_modality_lut(ds.pixel_array, ds)
    assert dicom.is_rsna_wrapped(ds)
    assert (naive > 3000).any()  # air read naively as denser than bone
    np.testing.assert_array_equal(dicom.read_hu(path), hu.astype(np.float32))
    assert not dicom.is_rsna_wrapped(pydicom.dcmread(CT_SMALL))


def test_window_maps_the_range_linearly_and_clips():
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 1000.0], np.float32)
    np.testing.assert_allclose(
        dicom.window(hu, 40.0, 80.0), [0, 0, 63.75, 127.5, 191.25, 255, 255], atol=1e-4
    )
    channels = dicom.window_channels(hu[None], ("brain", "subdural", "bone"))
    assert channels.shape == (1, 7, 3)
    # Bone (600/2800) keeps the skull's range the brain window saturates.
    assert channels[0, -1, 0] == 255 and 0 < channels[0, -1, 2] < 255


def test_windows_are_named_and_validated():
    assert dicom.parse_windows("brain, subdural,bone") == ("brain", "subdural", "bone")
    assert dicom.parse_windows(["brain"]) == ("brain",)
    with pytest.raises(ValueError, match="unknown CT window"):
        dicom.parse_windows("brain,lungs")
    with pytest.raises(ValueError):
        dicom.parse_windows("")


def test_header_has_what_planning_needs():
    header = dicom.read_header(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    assert header.patient_id == str(ds.PatientID)
    assert header.series_uid == str(ds.SeriesInstanceUID)
    assert header.z == pytest.approx(float(ds.ImagePositionPatient[2]))


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is a text file\n" * 20)
    assert _reason(path) == "not_dicom"
    with pytest.raises(BadInput, match="not_dicom"):
        dicom.read_header(path)


def test_truncated_file(tmp_path):
    data = open(CT_SMALL, "rb").read()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 9000])
    assert _reason(path) in ("truncated_pixel_data", "corrupt_dicom")
    path.write_bytes(data[:300])  # cut inside the header
    assert _reason(path) in ("corrupt_dicom", "no_pixel_data", "wrong_modality")


def test_wrong_modality():
    assert _reason(MR_SMALL) == "wrong_modality"
    with pytest.raises(BadInput, match="wrong_modality"):
        dicom.read_header(MR_SMALL)


def test_missing_pixel_data(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    assert _reason(path) == "no_pixel_data"


def test_wrong_dimensions(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    small = ds.pixel_array[:16, :16].copy()
    ds.Rows, ds.Columns, ds.PixelData = 16, 16, small.tobytes()
    path = tmp_path / "tiny.dcm"
    ds.save_as(path)
    assert _reason(path) == "wrong_dimensions"
    ds = pydicom.dcmread(CT_SMALL)
    strip = ds.pixel_array[:40, :].copy()
    ds.Rows, ds.PixelData = 40, strip.tobytes()
    path = tmp_path / "strip.dcm"
    ds.save_as(path)
    assert _reason(path) == "wrong_dimensions"


def test_missing_patient_id(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PatientID = ""
    path = tmp_path / "anonymous.dcm"
    ds.save_as(path)
    with pytest.raises(BadInput, match="no_patient_id"):
        dicom.read_header(path)


def test_non_square_slices_are_padded_with_air(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    part = ds.pixel_array[:100, :].copy()
    ds.Rows, ds.PixelData = 100, part.tobytes()
    path = tmp_path / "wide.dcm"
    ds.save_as(path)
    hu = dicom.read_hu(path)
    assert hu.shape == (128, 128)
    assert (hu[:14] == dicom.AIR_HU).all() and (hu[-14:] == dicom.AIR_HU).all()


def test_bad_input_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(BadInput("not_dicom", "x.dcm: nope")))
    assert error.reason == "not_dicom" and error.detail == "x.dcm: nope"


def test_compressed_pixel_data_is_not_mistaken_for_truncated():
    path = get_testdata_file("MR_small_RLE.dcm")  # RLE: fewer bytes than rows x cols x 2
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    np.testing.assert_array_equal(dicom.read_hu(path, modality="MR"), expected)


def _head(side=64):
    """HU of a disk of brain (40 HU) in air (-1000 HU), as a head slice has."""
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    return np.where(yy**2 + xx**2 < (side / 3) ** 2, 40.0, -1000.0).astype(np.float32)


def _phantom_slice(tmp_path, encoding, name, drop=("RescaleSlope", "RescaleIntercept")):
    """A phantom CT slice in `encoding`, written again without the tags in `drop`."""
    path = tmp_path / f"{name}.dcm"
    phantom_ct.write_ct_dicom(
        path,
        _head(),
        encoding=encoding,
        patient_id="P1",
        study_uid=pydicom.uid.generate_uid(),
        series_uid=pydicom.uid.generate_uid(),
        sop_uid=pydicom.uid.generate_uid(),
        position=(0.0, 0.0, 0.0),
        pixel_spacing=0.5,
    )
    ds = pydicom.dcmread(path)
    for keyword in drop:
        delattr(ds, keyword)
    ds.save_as(path)
    return path


def test_ct_without_rescale_tags_is_refused_unless_signed_hu(tmp_path):
    # Unsigned offset data (stored = HU + 1024) read as HU would be water at 1064: refused.
    assert _reason(_phantom_slice(tmp_path, "unsigned12", "unsigned")) == "no_rescale"
    assert _reason(_phantom_slice(tmp_path, "unsigned16_slope", "slope")) == "no_rescale"
    # Signed offset data (CT_small: intercept -1024, no air at -1000 stored): refused.
    ds = pydicom.dcmread(CT_SMALL)
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(tmp_path / "ct_small.dcm")
    assert _reason(tmp_path / "ct_small.dcm") == "no_rescale"
    # One of the pair alone is refused too: the other cannot be guessed.
    one = _phantom_slice(tmp_path, "unsigned12", "one", drop=("RescaleIntercept",))
    assert _reason(one) == "no_rescale"
    # Signed pixels with the air around the head at -1000 are HU already.
    signed = _phantom_slice(tmp_path, "signed16", "signed")
    hu = dicom.read_hu(signed)
    inside = pydicom.dcmread(signed).pixel_array != -2000  # the padding outside the circle
    np.testing.assert_array_equal(hu[inside], _head()[inside])
    brain = dicom.window(hu, *dicom.WINDOWS["brain"])
    assert brain[32, 32] == pytest.approx(127.5) and brain[inside].min() == 0


def test_rescale_rule_on_its_own():
    ds = pydicom.Dataset()
    ds.Modality, ds.PixelRepresentation = "CT", 1
    air = np.full((8, 8), -1000, np.int16)
    assert dicom.rescale(ds, air) == (1.0, 0.0)
    with pytest.raises(BadInput, match="no_rescale"):
        dicom.rescale(ds, air + 1024)
    ds.RescaleSlope, ds.RescaleIntercept = 0, -1024
    with pytest.raises(BadInput, match="RescaleSlope is 0"):
        dicom.rescale(ds, air)
    ds.RescaleSlope = 1
    assert dicom.rescale(ds, air) == (1.0, -1024.0)
    mr = pydicom.Dataset()
    mr.Modality = "MR"
    assert dicom.rescale(mr, air + 1024) == (1.0, 0.0)  # optional outside CT


def test_jpeg2000_ct_decodes_to_the_same_hu_with_the_dicom_extra(tmp_path):
    """JPEG 2000 slices (common in hospital archives) need the `dicom` extra's decoder;
    lossless, they give the HU of the uncompressed slice, to the bit."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.compress(pydicom.uid.JPEG2000Lossless, encoding_plugin="pylibjpeg")
    path = tmp_path / "ct_j2k.dcm"
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    np.testing.assert_array_equal(dicom.read_hu(path), dicom.read_hu(CT_SMALL))


def test_jpeg_ls_decodes_to_the_same_values_as_the_uncompressed_file():
    """pydicom's MR_small in JPEG-LS lossless against the same slice uncompressed."""
    compressed = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    assert pydicom.dcmread(compressed).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    np.testing.assert_array_equal(
        dicom.read_hu(compressed, modality="MR"), dicom.read_hu(MR_SMALL, modality="MR")
    )
