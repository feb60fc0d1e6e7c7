"""The RSNA brain-CT builder on the CT phantom with every kind of bad input injected (a label
file saved with a byte-order mark, labels written 1.0, rows cut short or with extra cells, a
DICOM without rescale tags, a symlink out of the dataset folder): each slice is accounted for
under one reason, HU windowing matches an independent reference,
splits are patient-disjoint, neighbouring slices land in the context channels, builds are
reused, and a missing download says where to get it."""

import csv
import itertools
import shutil

import numpy as np
import pydicom
import pytest
from data_fixtures import write_ct_phantom
from pydicom.pixels import apply_modality_lut

from synthjax.core.errors import DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builder, dicom, rsna_ich
from synthjax.data.loader import load_source

RESOLUTION, BASE = 16, 64
LABEL_ROWS = rsna_ich.CSV_LABELS  # the six per-slice rows, in the file's order


def _append_rows(root, rows):
    with open(root / rsna_ich.CSV_NAME, "a", newline="") as f:
        csv.writer(f).writerows(rows)


def _label_rows(slice_id, values):
    return [(f"{slice_id}_{name}", value) for name, value in zip(LABEL_ROWS, values, strict=True)]


def _read_csv(root):
    with open(root / rsna_ich.CSV_NAME, newline="") as f:
        return list(csv.reader(f))[1:]


def _dicom_of(root, slice_id):
    return root / rsna_ich.IMAGE_DIR / f"{slice_id}.dcm"


# (slice id, reason the builder must give). Each is made by `_inject` below.
INJECTED = {
    "ID_bad000001": "not_dicom",
    "ID_bad000002": "truncated_pixel_data",
    "ID_bad000003": "wrong_modality",
    "ID_bad000004": "no_pixel_data",
    "ID_bad000005": "wrong_dimensions",
    "ID_bad000006": "missing_file",
    "ID_bad000007": "unlabelled_file",
    "ID_bad000008": "contradictory_labels",  # epidural given as 0 and as 1
    "ID_bad000009": "contradictory_labels",  # any = 0 with a subtype = 1
    "ID_bad00000a": "incomplete_labels",
    "ID_bad00000b": "no_patient_id",
    "ID_bad00000c": "unknown_label_value",  # subdural = 'maybe'
    "ID_bad00000d": "no_rescale",  # unsigned offset pixels, no RescaleSlope/Intercept
    "ID_bad00000e": "outside_manual_dir",  # a symlink to a valid slice outside the folder
}
WRAPPED = "ID_wrap00001"  # a copy of a phantom slice in the RSNA-wrapped encoding
FLOATS = "ID_float0001"  # a copy of a phantom slice whose label cells read 1.0, ' 0 ', 0.0


def _inject(root, template_id):
    template = pydicom.dcmread(_dicom_of(root, template_id))
    data = _dicom_of(root, template_id).read_bytes()
    healthy = [0, 0, 0, 0, 0, 0]

    def save(slice_id, ds):
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[slice_id])
        ds.save_as(_dicom_of(root, slice_id))

    _dicom_of(root, "ID_bad000001").write_text("not a DICOM file\n" * 50)
    _dicom_of(root, "ID_bad000002").write_bytes(data[: len(data) - 1000])
    mr = pydicom.dcmread(_dicom_of(root, template_id))
    mr.Modality = "MR"
    save("ID_bad000003", mr)
    nopix = pydicom.dcmread(_dicom_of(root, template_id))
    del nopix.PixelData
    save("ID_bad000004", nopix)
    tiny = pydicom.dcmread(_dicom_of(root, template_id))
    corner = tiny.pixel_array[:8, :8].copy()
    tiny.Rows = tiny.Columns = 8
    tiny.PixelData = corner.tobytes()
    save("ID_bad000005", tiny)
    # ID_bad000006 has rows but no file; ID_bad000007 a file but no rows.
    save("ID_bad000007", pydicom.dcmread(_dicom_of(root, template_id)))
    for slice_id in ("ID_bad000008", "ID_bad000009", "ID_bad00000a", "ID_bad00000b"):
        save(slice_id, pydicom.dcmread(_dicom_of(root, template_id)))
    anonymous = pydicom.dcmread(_dicom_of(root, "ID_bad00000b"))
    anonymous.PatientID = ""
    anonymous.save_as(_dicom_of(root, "ID_bad00000b"))
    hu = np.clip(apply_modality_lut(template.pixel_array, template), -1000, 3000).astype(int)
    wrapped = pydicom.dcmread(_dicom_of(root, template_id))
    wrapped.PixelRepresentation, wrapped.BitsStored, wrapped.HighBit = 0, 12, 11
    wrapped.RescaleIntercept, wrapped.RescaleSlope = 1, 1
    wrapped.PixelData = np.mod(hu - 1, 4096).astype(np.uint16).tobytes()
    save(WRAPPED, wrapped)
    offset = pydicom.dcmread(_dicom_of(root, template_id))
    offset.PixelRepresentation, offset.BitsStored, offset.HighBit = 0, 12, 11
    offset.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
    del offset.RescaleSlope, offset.RescaleIntercept
    save("ID_bad00000d", offset)
    outside = root.parent / f"{root.name}_outside.dcm"
    save("ID_bad00000e", pydicom.dcmread(_dicom_of(root, template_id)))
    _dicom_of(root, "ID_bad00000e").rename(outside)
    _dicom_of(root, "ID_bad00000e").symlink_to(outside)
    save(FLOATS, pydicom.dcmread(_dicom_of(root, template_id)))
    template_rows = {r[0]: r[1] for r in _read_csv(root) if r[0].startswith(template_id)}
    rows = [(k.replace(template_id, WRAPPED), v) for k, v in template_rows.items()]
    spellings = {"0": [" 0 ", "0.0"], "1": ["1.0", " 1.0"]}
    for i, (k, v) in enumerate(template_rows.items()):
        rows.append((k.replace(template_id, FLOATS), spellings[v][i % 2]))
    for slice_id in ("ID_bad000001", "ID_bad000002", "ID_bad000003", "ID_bad000004"):
        rows += _label_rows(slice_id, healthy)
    rows += _label_rows("ID_bad000005", healthy) + _label_rows("ID_bad000006", healthy)
    rows += [*_label_rows("ID_bad000008", healthy), ("ID_bad000008_epidural", 1)]
    rows += _label_rows("ID_bad000009", [0, 0, 0, 1, 0, 0])
    rows += _label_rows("ID_bad00000a", healthy)[:3]
    rows += _label_rows("ID_bad00000b", healthy)
    rows += [*_label_rows("ID_bad00000c", healthy)[:3], ("ID_bad00000c_subdural", "maybe")]
    rows += _label_rows("ID_bad00000c", healthy)[4:]
    rows += _label_rows("ID_bad00000d", healthy) + _label_rows("ID_bad00000e", healthy)
    rows += [(f"{template_id}_subdural", template_rows[f"{template_id}_subdural"])]  # a repeat
    rows += [("garbage_without_subtype", 1)]
    rows += [("ID_bad00000f_epidural",), ("ID_bad00000f_subdural", 0, "extra")]  # cut, long
    _append_rows(root, rows)
    csv_file = root / rsna_ich.CSV_NAME
    csv_file.write_text("\ufeff" + csv_file.read_text())  # as a spreadsheet saves it


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    write_ct_phantom(
        root, num_patients=40, image_size=BASE, slices_per_series=(6, 10), seed=2, workers=2
    )
    clean_ids = sorted({r[0].rsplit("_", 1)[0] for r in _read_csv(root)})
    template_id = clean_ids[0]
    _inject(root, template_id)
    return root, clean_ids, template_id


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    root, _, _ = raw
    data_dir = tmp_path_factory.mktemp("data")
    dataset_dir, report = rsna_ich.prepare_rsna_ich(
        root, data_dir, resolution=RESOLUTION, base_resolution=BASE, workers=2
    )
    return data_dir, dataset_dir, report


def _all_records(dataset_dir):
    out = {}
    for split in SPLITS:
        source = load_source(dataset_dir, split)
        for i in range(len(source)):
            record = source[i]
            out[record["id"]] = (split, record)
    return out


def test_every_slice_is_accounted_for(raw, built):
    _root, clean_ids, _ = raw
    _, dataset_dir, report = built
    counts = report["counts"]
    expected = {}
    for reason in INJECTED.values():
        expected[reason] = expected.get(reason, 0) + 1
    expected["bad_csv_row"] = 3
    for reason, n in expected.items():
        assert counts[reason] == n, (reason, counts)
    assert counts["kept"] == len(clean_ids) + 2  # the phantom's slices, the two copies
    assert sum(counts.values()) == sum(report["rows_read"].values())
    assert report["csv_duplicate_rows"] == 1
    listed = {
        row["path"].rsplit("/", 1)[-1].removesuffix(".dcm"): row["reason"]
        for row in report["bad_rows"]
    }
    for slice_id, reason in INJECTED.items():
        assert listed[slice_id] == reason
    records = _all_records(dataset_dir)
    assert len(records) == counts["kept"]
    text = builder.format_report(report)
    assert "slices read" in text and "truncated_pixel_data" in text


def test_labels_are_the_studys_six_classes(raw, built):
    root, _, _ = raw
    _, dataset_dir, report = built
    by_row = {r[0]: rsna_ich.parse_label(r[1]) for r in _read_csv(root) if len(r) > 1}
    records = _all_records(dataset_dir)
    assert load_source(dataset_dir, "train").label_names == rsna_ich.RSNA_LABELS
    positives = 0
    for slice_id, (_, record) in records.items():
        subtypes = [by_row[f"{slice_id}_{name}"] for name in rsna_ich.SUBTYPES]
        anything = by_row[f"{slice_id}_any"]
        np.testing.assert_array_equal(record["labels"], [*subtypes, 1.0 - anything])
        positives += anything
    assert 0 < positives < len(records)
    for stats in report["splits"].values():
        prevalence = stats["label_prevalence"]
        assert prevalence["any"] == pytest.approx(1 - prevalence["no_finding"], abs=1e-3)


def test_splits_are_patient_disjoint(raw, built):
    root, _, _ = raw
    _, dataset_dir, _ = built
    patient_splits = {}
    for slice_id, (split, _) in _all_records(dataset_dir).items():
        patient = str(pydicom.dcmread(_dicom_of(root, slice_id), stop_before_pixels=True).PatientID)
        patient_splits.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in patient_splits.values())
    assert {s for splits in patient_splits.values() for s in splits} == set(SPLITS)


def _reference_image(path, windows):
    """Windowed channels computed independently: pydicom's LUT, the formula, numpy means."""
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    channels = []
    for name in windows:
        center, width = dicom.WINDOWS[name]
        channel = np.clip((hu - (center - width / 2)) * 255.0 / width, 0, 255)
        channels.append(np.rint(channel).astype(np.int64))
    image = np.stack(channels, -1)
    while image.shape[0] > RESOLUTION:
        h = image.shape[0] // 2
        image = (image.reshape(h, 2, h, 2, -1).sum((1, 3)) + 2) // 4
    return image.astype(np.uint8)


def test_windowed_channels_match_an_independent_reference(raw, built):
    root, _, template_id = raw
    _, dataset_dir, _ = built
    records = _all_records(dataset_dir)
    checked = 0
    for slice_id in sorted(records)[:20]:
        _, record = records[slice_id]
        path = _dicom_of(root, slice_id)
        if dicom.is_rsna_wrapped(pydicom.dcmread(path, stop_before_pixels=True)):
            continue
        reference = _reference_image(path, ("brain", "subdural", "bone"))
        # float32 vs float64 windowing may round a value differently by one level
        assert np.abs(record["image"].astype(int) - reference).max() <= 1
        checked += 1
    assert checked >= 10
    # The wrapped copy decodes to the same image as the slice it was made from.
    np.testing.assert_array_equal(records[WRAPPED][1]["image"], records[template_id][1]["image"])
    # Labels written 1.0 / ' 0 ' / 0.0 read as the template's 1 / 0.
    np.testing.assert_array_equal(records[FLOATS][1]["labels"], records[template_id][1]["labels"])


def test_single_brain_window_and_neighbouring_slices(raw, built, tmp_path):
    root, _, _ = raw
    data_dir, three_dir, _ = built
    one_dir, _ = rsna_ich.prepare_rsna_ich(
        root, data_dir, resolution=RESOLUTION, base_resolution=BASE, windows="brain"
    )
    ctx_dir, _ = rsna_ich.prepare_rsna_ich(
        root, data_dir, resolution=RESOLUTION, base_resolution=BASE, context=1
    )
    three, one, ctx = _all_records(three_dir), _all_records(one_dir), _all_records(ctx_dir)
    assert set(three) == set(one) == set(ctx)
    sample = next(iter(three.values()))[1]
    assert sample["image"].shape == (RESOLUTION, RESOLUTION, 3)
    assert next(iter(one.values()))[1]["image"].shape == (RESOLUTION, RESOLUTION, 1)
    assert next(iter(ctx.values()))[1]["image"].shape == (RESOLUTION, RESOLUTION, 9)
    for slice_id in three:
        np.testing.assert_array_equal(
            one[slice_id][1]["image"][..., 0], three[slice_id][1]["image"][..., 0]
        )
        np.testing.assert_array_equal(
            ctx[slice_id][1]["image"][..., 3:6], three[slice_id][1]["image"]
        )
    # Order each series by ImagePositionPatient: the slice below fills channels 0-2.
    series = {}
    for slice_id in ctx:
        ds = pydicom.dcmread(_dicom_of(root, slice_id), stop_before_pixels=True)
        series.setdefault(str(ds.SeriesInstanceUID), []).append(
            (float(ds.ImagePositionPatient[2]), slice_id)
        )
    pairs = 0
    for members in series.values():
        members.sort()
        for (_, below), (_, here) in itertools.pairwise(members):
            np.testing.assert_array_equal(ctx[here][1]["image"][..., 0:3], three[below][1]["image"])
            pairs += 1
        first = members[0][1]  # nothing below the first slice: it repeats itself
        np.testing.assert_array_equal(ctx[first][1]["image"][..., 0:3], three[first][1]["image"])
    assert pairs > 20


def test_builds_are_reused_and_rebuilt_when_the_labels_change(raw, built, tmp_path):
    root, _, _ = raw
    data_dir, dataset_dir, report = built
    again, again_report = rsna_ich.prepare_rsna_ich(
        root, data_dir, resolution=RESOLUTION, base_resolution=BASE
    )
    assert again == dataset_dir and again_report == report
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    rows = _read_csv(copy)
    target = next(r for r in rows if r[0].endswith("_subdural") and r[1:] == ["0"])
    slice_id = target[0].rsplit("_", 1)[0]
    edited = [
        (r[0], "1") if r[0] in (f"{slice_id}_subdural", f"{slice_id}_any") else r for r in rows
    ]
    with open(copy / rsna_ich.CSV_NAME, "w", newline="") as f:
        csv.writer(f).writerows([("ID", "Label"), *edited])
    _, first = rsna_ich.prepare_rsna_ich(
        copy, tmp_path / "d2", resolution=RESOLUTION, base_resolution=BASE
    )
    with open(copy / rsna_ich.CSV_NAME, "w", newline="") as f:
        csv.writer(f).writerows([("ID", "Label"), *rows])
    _, second = rsna_ich.prepare_rsna_ich(
        copy, tmp_path / "d2", resolution=RESOLUTION, base_resolution=BASE
    )
    assert first["source_fingerprint"] != second["source_fingerprint"]


def test_labels_are_read_as_numbers():
    assert [rsna_ich.parse_label(c) for c in ("0", "1", "0.0", "1.0", " 1 ", "\t0.0\n")] == [
        0.0,
        1.0,
        0.0,
        1.0,
        1.0,
        0.0,
    ]
    assert [rsna_ich.parse_label(c) for c in ("", "2", "-1", "maybe", "nan", "1,0")] == [None] * 6


def test_missing_download_says_where_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"stage_2_train\.csv") as err:
        rsna_ich.prepare_rsna_ich(tmp_path / "nothing", tmp_path / "d", resolution=16)
    assert "kaggle" in str(err.value).lower()
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / rsna_ich.IMAGE_DIR).mkdir()
    (tmp_path / "wrong" / rsna_ich.CSV_NAME).write_text("Image,Finding\nx,1\n")
    with pytest.raises(DataNotFoundError, match="ID,Label"):
        rsna_ich.prepare_rsna_ich(tmp_path / "wrong", tmp_path / "d", resolution=16)


def test_records_keep_the_series_patient_id(raw, built):
    """Every slice's patient is its DICOM PatientID: many slices per patient."""
    root, _, _ = raw
    _, dataset_dir, report = built
    for split in SPLITS:
        source = load_source(dataset_dir, split)
        want = [
            str(
                pydicom.dcmread(_dicom_of(root, source[i]["id"]), stop_before_pixels=True).PatientID
            )
            for i in range(len(source))
        ]
        assert source.patients.tolist() == want
        assert len(set(want)) == report["splits"][split]["patients"] < len(want)
