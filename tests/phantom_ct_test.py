"""Tests of the brain-CT phantom: RSNA layout and CSV, DICOM tags and pixel encodings (with
the RSNA wrap), series geometry, determinism across worker counts, label statistics, and that
every label is a bleed of its type drawn at blood density on that slice."""

import collections
import csv
import re

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from synthjax.core.errors import ConfigError
from synthjax.data.phantoms.ct import writer as phantom_ct
from synthjax.data.phantoms.ct.anatomy import HeadGrid, render_hu

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
SMALL = dict(image_size=64, slices_per_series=(12, 16), subtlety=1.0)


def _first_patients_with_every_encoding(seed: int) -> int:
    """How many patients (from index 0) it takes for all encodings to appear."""
    seen = set()
    for index in range(500):
        seen.add(phantom_ct.draw_patient(seed, index, **SMALL).encoding)
        if seen == set(phantom_ct.ENCODINGS):
            return index + 1
    raise AssertionError("some encoding never appears")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small phantom in which every encoding, rsna_wrapped included, occurs."""
    seed = 3
    num_patients = max(_first_patients_with_every_encoding(seed), 12)
    root = tmp_path_factory.mktemp("rsna")
    stats = phantom_ct.write_rsna_phantom(
        root, num_patients=num_patients, seed=seed, noise=1.0, workers=2, **SMALL
    )
    return root, seed, stats


def _read_csv(root):
    with open(root / phantom_ct.CSV_NAME, newline="") as f:
        return list(csv.reader(f))


def _slice_labels(rows) -> dict[str, np.ndarray]:
    """CSV rows -> {sop id: int[6] in CSV order}, checking the six-rows-per-slice layout."""
    labels = {}
    for start in range(0, len(rows), 6):
        group = rows[start : start + 6]
        sop = group[0][0][3:12]
        assert [r[0] for r in group] == [f"ID_{sop}_{name}" for name in (*SUBTYPES, "any")]
        assert sop not in labels
        labels[sop] = np.array([int(r[1]) for r in group])
    return labels


def _stored_to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """The modality LUT, after undoing the RSNA wrap where the header has its signature."""
    stored = ds.pixel_array.astype(np.int32)
    wrapped = (
        ds.PixelRepresentation == 0 and ds.BitsStored == 12 and float(ds.RescaleIntercept) > -100
    )
    if wrapped:
        stored = np.where(stored + 1000 >= 4096, stored - 4096, stored)
    return apply_modality_lut(stored, ds)


def _expected_hu(hu: np.ndarray, encoding: str) -> np.ndarray:
    """What each encoding promises to give back: round(HU), clipped to its range."""
    rounded = np.rint(hu)
    if encoding == "signed16":
        size = hu.shape[0]
        c = np.arange(size) + 0.5 - size / 2
        outside = c[:, None] ** 2 + c[None, :] ** 2 > (size / 2) ** 2
        return np.where(outside, -2000, rounded)
    low, high = {
        "unsigned12": (-1024, 3071),
        "unsigned16_slope": (-1024, 31743),
        "rsna_wrapped": (-999, 3000),
    }[encoding]
    return np.clip(rounded, low, high)


def _patient_slices(root, seed, num_patients):
    """{patient index: (Patient, [Dataset by slice index])}, every file read without force."""
    out = {}
    for index in range(num_patients):
        patient = phantom_ct.draw_patient(seed, index, **SMALL)
        files = [root / phantom_ct.IMAGE_DIR / f"ID_{sop}.dcm" for sop in patient.sop_ids]
        out[index] = (patient, [pydicom.dcmread(f) for f in files])
    return out


def test_layout_and_csv_match_rsna(phantom):
    root, _, stats = phantom
    rows = _read_csv(root)
    assert rows[0] == ["ID", "Label"]
    labels = _slice_labels(rows[1:])
    assert len(rows) - 1 == 6 * len(labels) == 6 * stats["slices"]
    assert all(re.fullmatch(r"[0-9a-f]{9}", sop) for sop in labels)
    files = {p.name for p in (root / phantom_ct.IMAGE_DIR).iterdir()}
    assert files == {f"ID_{sop}.dcm" for sop in labels}  # no leftovers of partial writes
    assert not list(root.glob("*.partial"))
    table = np.stack(list(labels.values()))
    assert set(np.unique(table)) <= {0, 1}
    np.testing.assert_array_equal(table[:, 5], table[:, :5].max(axis=1))
    prevalence = dict(zip((*SUBTYPES, "any"), table.mean(axis=0).round(4), strict=True))
    assert stats["prevalence"] == pytest.approx(prevalence, abs=1e-4)
    assert stats["patients"] == sum(stats["encodings"].values())
    assert all(stats["encodings"][name] > 0 for name in phantom_ct.ENCODINGS)
    assert stats["slices_per_s"] > 0


def test_dicom_tags_and_series_geometry(phantom):
    root, seed, stats = phantom
    labels = _slice_labels(_read_csv(root)[1:])
    windows = set()
    for patient, slices in _patient_slices(root, seed, stats["patients"]).values():
        assert re.fullmatch(r"ID_[0-9a-f]{9}", patient.patient_id)
        for sop, ds in zip(patient.sop_ids, slices, strict=True):
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.Modality == "CT" and ds.PatientID == patient.patient_id
            assert ds.StudyInstanceUID == patient.study_uid
            assert ds.SeriesInstanceUID == patient.series_uid
            for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
                assert pydicom.uid.UID(uid).is_valid
            assert ds.Rows == ds.Columns == 64 and ds.SamplesPerPixel == 1
            assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
            assert ds.HighBit == ds.BitsStored - 1
            assert ds.PixelSpacing[0] == ds.PixelSpacing[1]
            assert 0.43 * 8 <= float(ds.PixelSpacing[0]) <= 0.5 * 8  # 512 scanner, 64 px
            assert float(ds.SliceThickness) == pytest.approx(patient.slice_spacing)
            assert sop in labels
            windows.add(
                (
                    isinstance(ds.WindowCenter, pydicom.multival.MultiValue),
                    isinstance(ds.WindowWidth, pydicom.multival.MultiValue),
                )
            )
        # One series, base to vertex: z distinct and evenly spaced, one step along the normal.
        assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
        steps = np.diff(positions, axis=0)
        assert np.all(steps[:, 2] > 0)
        np.testing.assert_allclose(steps[:, 2], steps[0, 2], atol=1e-4)
        row, col = np.array([float(v) for v in slices[0].ImageOrientationPatient]).reshape(2, 3)
        normal = np.cross(row, col)
        np.testing.assert_allclose(steps @ normal, patient.slice_spacing, atol=1e-4)
        numbers = sorted(int(ds.InstanceNumber) for ds in slices)
        assert numbers == list(range(1, len(slices) + 1))
    assert windows == {(True, True), (False, False)}  # both ways of writing windows occur


def test_written_pixels_are_the_ground_truth_hu(phantom):
    root, seed, stats = phantom
    seen = collections.Counter()
    for patient, slices in _patient_slices(root, seed, stats["patients"]).values():
        grid = HeadGrid(patient.head, image_size=64, pixel_spacing=patient.pixel_spacing)
        for k, ds in enumerate(slices):
            hu = phantom_ct.render_slice(patient, k, noise=1.0, grid=grid)
            np.testing.assert_array_equal(_stored_to_hu(ds), _expected_hu(hu, patient.encoding))
        seen[patient.encoding] += 1
    assert set(seen) == set(phantom_ct.ENCODINGS)


def test_series_files_are_what_write_ct_dicom_writes(phantom, tmp_path):
    root, seed, _ = phantom
    patient = phantom_ct.draw_patient(seed, 1, **SMALL)
    k = patient.num_slices - 1
    ds = pydicom.dcmread(root / phantom_ct.IMAGE_DIR / f"ID_{patient.sop_ids[k]}.dcm")
    path = tmp_path / "again.dcm"
    phantom_ct.write_ct_dicom(
        path,
        phantom_ct.render_slice(patient, k, noise=1.0),
        encoding=patient.encoding,
        patient_id=patient.patient_id,
        study_uid=patient.study_uid,
        series_uid=patient.series_uid,
        sop_uid=ds.SOPInstanceUID,
        position=patient.position(k),
        pixel_spacing=patient.pixel_spacing,
        window=patient.window,
        orientation=patient.orientation(),
        slice_thickness=patient.slice_spacing,
        instance_number=int(ds.InstanceNumber),
    )
    assert (
        path.read_bytes()
        == (root / phantom_ct.IMAGE_DIR / f"ID_{patient.sop_ids[k]}.dcm").read_bytes()
    )


@pytest.mark.parametrize("encoding", phantom_ct.ENCODINGS)
def test_each_encoding_round_trips(tmp_path, encoding):
    patient = phantom_ct.draw_patient(0, 0, image_size=64, slices_per_series=(16, 32), subtlety=1.0)
    hu = phantom_ct.render_slice(patient, patient.num_slices // 2, noise=1.0)
    hu[0, :8] = [-1024.4, -1000.0, -999.0, -1.0, 0.0, 0.5, 3000.0, 3071.0]
    path = tmp_path / "slice.dcm"
    phantom_ct.write_ct_dicom(
        path,
        hu,
        encoding=encoding,
        patient_id="ID_000000001",
        study_uid=pydicom.uid.generate_uid(),
        series_uid=pydicom.uid.generate_uid(),
        sop_uid=pydicom.uid.generate_uid(),
        position=(-120.0, -110.0, 42.5),
        pixel_spacing=3.8,
        window=((40.0, 600.0), (80.0, 2800.0)),
    )
    ds = pydicom.dcmread(path)
    stored, fields = phantom_ct.encode_hu(hu, encoding)
    assert ds.pixel_array.dtype == stored.dtype
    assert [float(v) for v in ds.WindowCenter] == [40.0, 600.0]
    for name, value in fields.items():
        assert float(ds[name].value) == value
    expected = _expected_hu(hu, encoding)
    np.testing.assert_array_equal(_stored_to_hu(ds), expected)
    if encoding == "rsna_wrapped":
        # The plain modality LUT reads air as dense bone; the RSNA fix undoes it.
        naive = apply_modality_lut(ds.pixel_array, ds)
        assert naive[0, 1] == 3097 and naive.min() >= 1  # -1000 HU, clipped to -999
        assert np.mean(naive != expected) > 0.3
    else:
        np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), expected)
        if encoding == "unsigned16_slope":
            assert float(ds.RescaleSlope) == 0.5


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    kwargs = dict(
        num_patients=5, seed=11, image_size=32, slices_per_series=(4, 7), noise=1.0, subtlety=1.0
    )
    phantom_ct.write_rsna_phantom(tmp_path / "a", workers=1, **kwargs)
    phantom_ct.write_rsna_phantom(tmp_path / "b", workers=2, **kwargs)
    phantom_ct.write_rsna_phantom(tmp_path / "c", workers=1, **{**kwargs, "seed": 12})

    def files(root):
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    assert files(tmp_path / "a") == files(tmp_path / "b")
    for rel in files(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    csv_name = phantom_ct.CSV_NAME
    assert (tmp_path / "a" / csv_name).read_bytes() != (tmp_path / "c" / csv_name).read_bytes()


def test_written_labels_are_the_patients_bleeds_contiguous_along_z(phantom):
    root, seed, stats = phantom
    labels = _slice_labels(_read_csv(root)[1:])
    for patient, slices in _patient_slices(root, seed, stats["patients"]).values():
        # Sorted by position as a reader must, the labels are runs of adjacent slices.
        z = [float(ds.ImagePositionPatient[2]) for ds in slices]
        order = np.argsort(z)
        table = np.stack([labels[patient.sop_ids[k]] for k in order])
        np.testing.assert_array_equal(table, patient.labels())
        for column in table[:, :5].T:
            on = np.flatnonzero(column)
            if len(on):
                assert on[-1] - on[0] + 1 == len(on)


def test_written_prevalence_close_to_rsna_stage2(tmp_path):
    """A few hundred patients' worth of slices, written: per-slice label rates as in RSNA."""
    stats = phantom_ct.write_rsna_phantom(
        tmp_path,
        num_patients=120,
        image_size=32,
        slices_per_series=(16, 20),
        noise=1.0,
        subtlety=1.0,
        seed=8,
        workers=2,
    )
    prevalence = stats["prevalence"]
    assert 0.09 <= prevalence["any"] <= 0.20
    assert prevalence["epidural"] < 0.02
    assert prevalence["any"] < sum(prevalence[name] for name in SUBTYPES)  # types co-occur
    labels = _slice_labels(_read_csv(tmp_path)[1:])
    assert len(labels) == stats["slices"] > 120 * 16


def test_label_prevalence_close_to_rsna_stage2():
    totals, slices, positive_types = np.zeros(6), 0, 0
    runs = collections.defaultdict(list)
    for index in range(600):
        patient = phantom_ct.draw_patient(
            21, index, image_size=32, slices_per_series=(16, 32), subtlety=1.0
        )
        table = patient.labels()
        totals += table.sum(axis=0)
        slices += len(table)
        positive_types += table[:, :5].sum()
        for bleed in patient.bleeds:
            runs[bleed.subtype].append(bleed.last - bleed.first + 1)
    prevalence = dict(zip((*SUBTYPES, "any"), totals / slices, strict=True))
    assert 0.09 <= prevalence["any"] <= 0.20
    assert prevalence["epidural"] < 0.02
    assert 0.03 <= prevalence["subdural"] <= 0.10
    for name in ("subarachnoid", "intraparenchymal", "intraventricular"):
        assert 0.015 <= prevalence[name] <= 0.08, name
    # Types co-occur: more than one type per positive slice on average (real: ~1.4).
    assert 1.15 <= positive_types / totals[5] <= 1.7
    # A subdural covers more of the head than a ventricular bleed.
    assert np.mean(runs["subdural"]) > np.mean(runs["intraventricular"])
    assert min(min(r) for r in runs.values()) >= 2


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(mask, (dy, dx), axis=(0, 1))
    return out


def _patients_with(subtype: str, count: int, image_size: int):
    found = []
    for index in range(2000):
        patient = phantom_ct.draw_patient(
            5, index, image_size=image_size, slices_per_series=(16, 32), subtlety=1.0
        )
        if any(b.subtype == subtype for b in patient.bleeds):
            found.append(patient)
            if len(found) == count:
                return found
    raise AssertionError(f"no {subtype} in 2000 patients")


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_every_labelled_slice_shows_blood_of_its_type(subtype):
    """Drawn alone, each bleed puts blood-density pixels on every slice it labels, only there."""
    for patient in _patients_with(subtype, 2, image_size=96):
        grid = HeadGrid(patient.head, image_size=96, pixel_spacing=patient.pixel_spacing)
        bleed = next(b for b in patient.bleeds if b.subtype == subtype)
        for k in range(patient.num_slices):
            plain = render_hu(grid, k, (), noise=0.0)
            bloody = render_hu(grid, k, (bleed,), noise=0.0)
            if not bleed.first <= k <= bleed.last:
                np.testing.assert_array_equal(bloody, plain)
                continue
            # New pixels at acute-blood density (50-95 HU) where there was brain or CSF.
            blood = (bloody >= 50) & (bloody <= 95) & (plain < 45)
            assert blood.sum() >= 2, (subtype, k)
            # Away from bone and calcifications (which mass effect may shift), nothing the
            # bleed adds is denser than blood.
            added = (bloody > plain + 8) & ~_dilate((plain > 150) | (bloody > 150), 1)
            assert np.all(bloody[added] <= 95), (subtype, k)


def test_epidural_blood_lies_against_the_bone():
    """Labelled epidural slices have many 50-90 HU pixels next to bone; others few."""
    counts = {True: [], False: []}
    for patient in _patients_with("epidural", 3, image_size=128):
        grid = HeadGrid(patient.head, image_size=128, pixel_spacing=patient.pixel_spacing)
        labelled = patient.labels()[:, 0]
        for k in range(patient.num_slices):
            hu = phantom_ct.render_slice(patient, k, noise=1.0, grid=grid)
            blood = (hu >= 50) & (hu <= 90) & _dilate(hu > 300, 2)
            counts[bool(labelled[k])].append(int(blood.sum()))
    # Unlabelled slices have a few from partial volume at the inner table.
    assert np.median(counts[True]) > 2.5 * np.median(counts[False])


def test_subtlety_makes_bleeds_smaller_and_fainter():
    patient = _patients_with("intraparenchymal", 1, image_size=64)[0]
    grid = HeadGrid(patient.head, image_size=64, pixel_spacing=patient.pixel_spacing)
    bleed = next(b for b in patient.bleeds if b.subtype == "intraparenchymal")
    k = (bleed.first + bleed.last) // 2
    plain = render_hu(grid, k, (), noise=0.0)
    sizes = []
    for subtlety in (0.5, 3.0):
        again = phantom_ct.draw_patient(
            patient.seed,
            patient.index,
            image_size=64,
            slices_per_series=(16, 32),
            subtlety=subtlety,
        )
        (changed,) = [b for b in again.bleeds if b.subtype == "intraparenchymal"]
        assert (changed.first, changed.last) == (bleed.first, bleed.last)  # same labels
        hu = render_hu(grid, k, (changed,), noise=0.0)
        blood = (hu - plain > 8) & (hu < 150)
        sizes.append((blood.sum(), np.median(hu[blood])))
    assert sizes[0][0] > sizes[1][0] and sizes[0][1] > sizes[1][1]


def test_series_goes_from_skull_base_to_vertex():
    """The head outline grows then shrinks; the ventricles show in the middle slices."""
    patient = phantom_ct.draw_patient(0, 1, image_size=64, slices_per_series=(24, 24), subtlety=1.0)
    grid = HeadGrid(patient.head, image_size=64, pixel_spacing=patient.pixel_spacing)
    slices = [render_hu(grid, k, (), noise=0.0) for k in range(24)]
    area = np.array([np.sum(s > -500) for s in slices])
    widest = int(np.argmax(area))
    assert 3 <= widest <= 16 and area[-1] < 0.7 * area[widest]
    csf = [np.sum((s > -5) & (s < 20)) for s in slices]
    assert np.argmax(csf[4:-4]) + 4 in range(6, 18)


def test_bad_arguments_raise_config_errors(tmp_path):
    knobs = dict(image_size=32, slices_per_series=(4, 7), noise=1.0, subtlety=1.0, seed=0)
    with pytest.raises(ConfigError, match="num_patients"):
        phantom_ct.write_rsna_phantom(tmp_path, num_patients=0, **knobs)
    with pytest.raises(ConfigError, match="slices_per_series"):
        phantom_ct.write_rsna_phantom(
            tmp_path, num_patients=1, **{**knobs, "slices_per_series": (8, 4)}
        )
    with pytest.raises(ValueError, match="encoding"):
        phantom_ct.encode_hu(np.zeros((4, 4), np.float32), "unsigned8")
