"""Tests of the generic folder builder on a tiny researcher's folder: 30 patients of PNGs (8-bit,
16-bit, RGB, non-square), JPEGs and DICOMs (CT, MR, a MONOCHROME1 twin, one without the .dcm
suffix) plus one file or row per skip reason (paths leading out of the folder by `..`, by an
absolute path and by a symlink; a CT without rescale tags). Images, labels and label names come
back through `load_source`; splits are patient-disjoint; every row and unlabelled file is
counted once; DICOM windows and MONOCHROME1 are honoured; builds are reused until the CSV
changes; a CSV without the named columns is refused with the field to set."""

import csv
import os
import shutil

import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from pydicom.data import get_testdata_file

from synthjax.core.errors import ConfigError, DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builder, folder
from synthjax.data.loader import load_source

RESOLUTION, BASE = 32, 64
COLUMNS = ("image", "effusion", "patient", "mass", "nodule")  # labels in CSV order
LABELS = ("effusion", "mass", "nodule")
# Every accepted spelling of a label cell, and what it means.
CELLS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "True": 1, "no": 0, "YES": 1, "": 0, "false": 0}


def _patients():
    """30 patient ids, 22/4/4 over train/validation/test by `builder.patient_split`."""
    want = {"train": 22, "validation": 4, "test": 4}
    chosen = {split: [] for split in want}
    i = 0
    while any(len(chosen[s]) < n for s, n in want.items()):
        patient = f"P{i:04d}"
        split = builder.patient_split(patient)
        if len(chosen[split]) < want[split]:
            chosen[split].append(patient)
        i += 1
    return [p for split in SPLITS for p in chosen[split]]


def _pyramid(level, resolution=RESOLUTION):
    """Independent 2x2 box pyramid: mean of each block, rounded half up."""
    level = np.asarray(level, np.float64)
    while level.shape[0] > resolution:
        blocks = level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2]
        level = np.floor(blocks / 4.0 + 0.5)
    return level


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _save_dicom(path, source, **changes):
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.PatientID = "ANON-" + path.stem
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return ds


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_plain_folder(root, patients, rng):
    """One 64x64 random 8-bit PNG per patient; returns the CSV rows and expected labels."""
    rows, expected = [], {}
    spellings = list(CELLS)
    for i, patient in enumerate(patients):
        image = f"plain/{patient}.png"
        _save_png(root / image, rng.integers(0, 256, (64, 64), dtype=np.uint8))
        cells = [spellings[(i + k) % len(spellings)] for k in range(3)]
        rows.append(dict(zip(COLUMNS, (image, cells[0], patient, cells[1], cells[2]), strict=True)))
        expected[image] = np.array([CELLS[c] for c in cells], np.float32)
    return rows, expected


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """The test folder: returns (root, good {id: labels}, {id: patient}, bad rows by reason)."""
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    patients = _patients()
    rows, expected = _write_plain_folder(root, patients, rng)

    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    _save_png(root / "png8/gradient.png", gradient)
    _save_png(root / "png16/ramp.png", np.tile(np.arange(1000, 4200, 50, dtype=np.uint16), (64, 1)))
    _save_png(root / "rgb/colour.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    _save_png(root / "wide/nonsquare.png", np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)))
    vertical = np.tile((np.arange(64, dtype=np.uint8) * 4)[:, None], (1, 64))
    Image.fromarray(vertical).save(root / "vertical.jpg", quality=95)
    Image.fromarray(vertical).convert("RGB").save(root / "colour.jpeg", quality=95)
    _save_dicom(root / "dicom/ct.dcm", "CT_small.dcm")
    _save_dicom(root / "dicom/scan.ima", "CT_small.dcm")  # DICOM known by its preamble
    _save_dicom(
        root / "dicom/ct_windows.dcm",
        "CT_small.dcm",
        WindowCenter=[40, 400],
        WindowWidth=[400, 2000],
    )
    _save_dicom(root / "dicom/mr.dcm", "MR_small.dcm")
    _save_dicom(root / "dicom/mr_rle.dcm", "MR_small_RLE.dcm")  # compressed pixel data
    _save_dicom(
        root / "dicom/mr_mono1.dcm", "MR_small.dcm", PhotometricInterpretation="MONOCHROME1"
    )
    specials = [
        "png8/gradient.png",
        "png16/ramp.png",
        "rgb/colour.png",
        "wide/nonsquare.png",
        "vertical.jpg",
        "colour.jpeg",
        "dicom/ct.dcm",
        "dicom/scan.ima",
        "dicom/ct_windows.dcm",
        "dicom/mr.dcm",
        "dicom/mr_rle.dcm",
        "dicom/mr_mono1.dcm",
    ]
    for i, image in enumerate(specials):
        labels = [(i >> k) & 1 for k in range(3)]
        rows.append(
            dict(zip(COLUMNS, (image, labels[0], patients[i], labels[1], labels[2]), strict=True))
        )
        expected[image] = np.array(labels, np.float32)
    patient_of = {r["image"]: r["patient"] for r in rows}

    # One row (or file) per skip reason.
    png = (root / "png8/gradient.png").read_bytes()
    (root / "bad").mkdir()
    (root / "bad/truncated.png").write_bytes(png[: len(png) // 2])
    (root / "bad/text.dcm").write_text("this is a text file, not DICOM\n")
    _save_png(root / "bad/tiny.png", np.zeros((16, 16), np.uint8))
    _save_png(root / "bad/long.png", np.zeros((40, 96), np.uint8))
    _save_dicom(root / "bad/frames.dcm", "CT_small.dcm", NumberOfFrames=2)
    _save_png(root / "bad/blank_patient.png", gradient)
    _save_png(root / "bad/maybe.png", gradient)
    _save_png(root / "extra/unlisted.png", gradient)  # in the folder, in no CSV row
    outside = root.parent / f"{root.name}_outside" / "outside.png"
    _save_png(outside, gradient)  # valid images beside the folder, not in it
    _save_png(outside.with_name("absolute.png"), gradient)
    (root / "links").mkdir()
    (root / "links/out.png").symlink_to(outside)
    _save_dicom(root / "bad/norescale.dcm", "CT_small.dcm")
    norescale = pydicom.dcmread(root / "bad/norescale.dcm")
    del norescale.RescaleSlope, norescale.RescaleIntercept
    norescale.save_as(root / "bad/norescale.dcm")
    _save_png(root / ".cache/hidden.png", gradient)  # hidden folder: not looked at
    (root / "notes.txt").write_text("not an image")
    first = rows[0]
    bad = {
        "corrupt_image": ["bad/truncated.png", "bad/text.dcm"],
        "wrong_dimensions": ["bad/tiny.png", "bad/long.png", "bad/frames.dcm"],
        "missing_file": ["bad/missing.png"],
        "no_patient_id": ["bad/blank_patient.png"],
        "unknown_label_value": ["bad/maybe.png"],
        "duplicate_image": ["./" + first["image"]],  # the same file, spelled differently
        "contradictory_labels": [first["image"]],
        "unlabelled_file": ["extra/unlisted.png"],
        "outside_manual_dir": [
            f"../{root.name}_outside/outside.png",
            str(outside.with_name("absolute.png")),
            "links/out.png",
        ],
        "no_rescale": ["bad/norescale.dcm"],
    }
    template = dict(zip(COLUMNS, ("", "1", patients[0], "0", "0"), strict=True))
    for reason in ("corrupt_image", "wrong_dimensions", "missing_file", "outside_manual_dir"):
        rows += [dict(template, image=image) for image in bad[reason]]
    rows.append(dict(template, image="bad/blank_patient.png", patient=""))
    rows.append(dict(template, image="bad/maybe.png", mass="maybe"))
    rows.append(dict(template, image="bad/norescale.dcm"))
    rows.append(dict(first, image="./" + first["image"]))
    rows.append(dict(first, nodule="1" if CELLS[first["nodule"]] == 0 else "0"))
    _write_csv(root / "labels.csv", rows)
    return root, expected, patient_of, bad


def _prepare(root, data_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    return folder.prepare_folder(
        root, data_dir, resolution=RESOLUTION, base_resolution=BASE, **kwargs
    )


def _read_all(dataset_dir):
    """split -> {id: record} through the one loader."""
    out = {}
    for split in SPLITS:
        source = load_source(dataset_dir, split)
        out[split] = {r["id"]: r for r in (source[i] for i in range(len(source)))}
    return out


def _images(examples):
    return {i: r["image"] for split in examples.values() for i, r in split.items()}


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    # Two processes: the decoder must survive pickling into workers.
    dataset_dir, report = _prepare(raw[0], data_dir, workers=2)
    return data_dir, dataset_dir, report, _read_all(dataset_dir)


def test_every_row_and_file_is_counted_once(raw, built):
    _, expected, _, bad = raw
    _, dataset_dir, report, examples = built
    assert report["unit"] == "images"
    assert report["config"] == dataset_dir.parent.name
    assert report["config"].startswith("r32-c1-file-keep-b64-")
    assert report["rows_read"] == {
        "labels.csv rows": len(expected) + 14,
        folder.UNLABELLED_KEY: 1,
    }
    assert report["counts"] == {
        "kept": len(expected),
        "no_patient_id": 1,
        "duplicate_image": 1,
        "contradictory_labels": 1,
        "unknown_label_value": 1,
        "outside_manual_dir": 3,
        "missing_file": 1,
        "no_positive_label": 0,
        "corrupt_image": 2,
        "wrong_dimensions": 3,
        "no_rescale": 1,
        "unlabelled_file": 1,
    }
    assert sum(report["counts"].values()) == sum(report["rows_read"].values())
    listed = {(b["path"], b["reason"]) for b in report["bad_rows"]}
    assert listed == {(path, reason) for reason, paths in bad.items() for path in paths}
    assert set(_images(examples)) == set(expected)
    assert sum(s["images"] for s in report["splits"].values()) == len(expected)
    text = builder.format_report(report)
    assert "images read" in text and "unlabelled_file" in text


def test_labels_names_and_patient_disjoint_splits(raw, built):
    _, expected, patient_of, _ = raw
    _, dataset_dir, report, examples = built
    info = tfds.builder_from_directory(dataset_dir).info
    assert tuple(info.metadata["label_names"]) == LABELS
    assert load_source(dataset_dir, "train").label_names == LABELS
    patients = {}
    for split, records in examples.items():
        for ident, record in records.items():
            np.testing.assert_array_equal(record["labels"], expected[ident])
            assert record["image"].shape == (RESOLUTION, RESOLUTION, 1)
        patients[split] = {patient_of[i] for i in records}
        assert all(builder.patient_split(p) == split for p in patients[split])
        assert report["splits"][split]["patients"] == len(patients[split])
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    assert sum(len(p) for p in patients.values()) == 30


def test_png_and_jpeg_pixels_survive_the_pyramid(raw, built):
    root = raw[0]
    images = _images(built[3])
    gradient = np.tile(np.arange(64) * 4.0, (64, 1))
    np.testing.assert_array_equal(images["png8/gradient.png"][:, :, 0], _pyramid(gradient))
    source = np.asarray(Image.open(root / "plain/P0000.png"))
    np.testing.assert_array_equal(images["plain/P0000.png"][:, :, 0], _pyramid(source))
    # Non-square: centred on black, 8 rows above and below, never stretched.
    padded = np.zeros((64, 64))
    padded[8:56] = gradient[:48]
    np.testing.assert_array_equal(images["wide/nonsquare.png"][:, :, 0], _pyramid(padded))
    # 16-bit: the image's own range stretched to 0..255.
    ramp = np.tile(np.arange(1000, 4200, 50.0), (64, 1))
    stretched = (ramp - 1000.0) * 255.0 / (4150.0 - 1000.0)
    got = images["png16/ramp.png"][:, :, 0].astype(float)
    assert np.abs(got - _pyramid(np.rint(stretched))).max() <= 1
    assert got.max() >= 250
    luma = np.asarray(Image.open(root / "rgb/colour.png").convert("L"))
    np.testing.assert_array_equal(images["rgb/colour.png"][:, :, 0], _pyramid(luma))
    vertical = np.tile((np.arange(64) * 4.0)[:, None], (1, 64))
    for name in ("vertical.jpg", "colour.jpeg"):
        assert np.abs(images[name][:, :, 0] - _pyramid(vertical)).max() <= 6


def _mr_display(window):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    values = ds.pixel_array.astype(np.float64)
    if window == "file":
        low = 600.0 - 1600.0 / 2
        display = np.clip((values - low) * 255.0 / 1600.0, 0, 255)
    else:
        display = (values - values.min()) * 255.0 / (values.max() - values.min())
    return _pyramid(np.rint(display))


def test_dicom_windows_monochrome1_and_preamble(raw, built, tmp_path):
    images = _images(built[3])
    mr = images["dicom/mr.dcm"][:, :, 0].astype(int)
    assert np.abs(mr - _mr_display("file")).max() <= 1
    # MONOCHROME1 stores dense tissue dark: inverted, it matches its MONOCHROME2 twin.
    mono1 = images["dicom/mr_mono1.dcm"][:, :, 0].astype(int)
    assert np.abs((255 - mono1) - mr).max() <= 1
    assert np.abs(mono1 - mr).mean() > 50
    # RLE-compressed pixel data decodes to the same image as the uncompressed file.
    np.testing.assert_array_equal(images["dicom/mr_rle.dcm"], images["dicom/mr.dcm"])
    # Found by its preamble despite the suffix; same pixels as its .dcm copy.
    np.testing.assert_array_equal(images["dicom/scan.ima"], images["dicom/ct.dcm"])
    # The first of several windows (40/400 HU) differs from CT_small's min-max stretch.
    assert np.abs(images["dicom/ct_windows.dcm"].astype(int) - images["dicom/ct.dcm"]).mean() > 10

    dataset_dir, report = _prepare(raw[0], tmp_path, dicom_window="minmax", drop_no_positive=True)
    assert report["config"].startswith("r32-c1-minmax-drop-b64-")
    minmax = _images(_read_all(dataset_dir))
    assert np.abs(minmax["dicom/mr.dcm"][:, :, 0] - _mr_display("minmax")).max() <= 1
    assert np.abs(minmax["dicom/mr.dcm"].astype(int) - mr[:, :, None]).mean() > 10
    # CT_small has no window of its own: 'file' falls back to min-max.
    np.testing.assert_array_equal(minmax["dicom/ct.dcm"], images["dicom/ct.dcm"])
    no_positive = [i for i, labels in raw[1].items() if not labels.any()]
    assert report["counts"]["no_positive_label"] == len(no_positive) > 0
    # A min-max stretch needs no HU scale: the CT without rescale tags is used.
    assert set(minmax) == set(raw[1]) - set(no_positive) | {"bad/norescale.dcm"}


def test_outside_paths_only_when_asked(raw, built, tmp_path):
    root = raw[0]
    _, _, report, _ = built
    assert report["settings"]["allow_outside_paths"] is False
    dataset_dir, allowed = _prepare(root, tmp_path, allow_outside_paths=True)
    assert allowed["config"].endswith("-outside")
    assert allowed["settings"]["allow_outside_paths"] is True
    assert allowed["counts"]["outside_manual_dir"] == 0
    assert allowed["counts"]["kept"] == report["counts"]["kept"] + 3
    images = _images(_read_all(dataset_dir))
    assert "links/out.png" in images  # a path inside the folder keeps its relative id
    outside = root.parent / f"{root.name}_outside"
    assert {str(outside / "outside.png"), str(outside / "absolute.png")} <= set(images)


def test_rgb_channels(raw, tmp_path):
    root = raw[0]
    dataset_dir, report = _prepare(root, tmp_path, channels=3)
    assert report["config"].startswith("r32-c3-file-keep-b64-")
    images = _images(_read_all(dataset_dir))
    colour = np.asarray(Image.open(root / "rgb/colour.png"))
    np.testing.assert_array_equal(images["rgb/colour.png"], _pyramid(colour))
    gray = images["png8/gradient.png"]
    assert gray.shape == (RESOLUTION, RESOLUTION, 3)
    np.testing.assert_array_equal(gray[:, :, 0], gray[:, :, 2])


def test_second_prepare_reuses_the_build(raw, built):
    data_dir, dataset_dir, report, _ = built
    shards = sorted(dataset_dir.glob("*.array_record-*"))
    stamps = [os.stat(p).st_mtime_ns for p in shards]
    again_dir, again = _prepare(raw[0], data_dir)
    assert again_dir == dataset_dir and again == report
    assert [os.stat(p).st_mtime_ns for p in shards] == stamps


def test_changed_csv_rebuilds_and_gone_source_reuses(tmp_path):
    root = tmp_path / "raw"
    rows, expected = _write_plain_folder(root, _patients(), np.random.default_rng(1))
    _write_csv(root / "labels.csv", rows)
    data_dir = tmp_path / "data"
    dataset_dir, first = _prepare(root, data_dir, label_columns="nodule, effusion")
    assert first["settings"]["label_names"] == ["effusion", "nodule"]  # CSV order
    assert load_source(dataset_dir, "train").label_names == ("effusion", "nodule")
    rows[0]["effusion"] = "1" if not expected[rows[0]["image"]][0] else "0"
    # Absolute paths and ./ spellings name the same files (and the same ids).
    rows[1]["image"] = str(root / rows[1]["image"])
    rows[2]["image"] = "./" + rows[2]["image"]
    _write_csv(root / "labels.csv", rows[:-1])
    again_dir, second = _prepare(root, data_dir, label_columns="nodule, effusion")
    assert again_dir == dataset_dir
    assert second["source_fingerprint"] != first["source_fingerprint"]
    assert second["counts"]["kept"] == first["counts"]["kept"] - 1
    assert second["counts"]["unlabelled_file"] == 1  # the image whose row was removed
    labels = {i: r["labels"] for s in _read_all(dataset_dir).values() for i, r in s.items()}
    assert set(labels) == set(expected) - {rows[-1]["image"]}
    assert labels[rows[0]["image"]][0] != expected[rows[0]["image"]][0]
    # Without its source, the finished build is still served.
    shutil.rmtree(root)
    _, third = _prepare(root, data_dir, label_columns="nodule, effusion")
    assert third == second


def test_too_few_patients_is_refused(tmp_path):
    rows, _ = _write_plain_folder(tmp_path, ["P0000", "P0001"], np.random.default_rng(2))
    _write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataNotFoundError, match="too few patients"):
        _prepare(tmp_path, tmp_path / "data")


def _refusal(tmp_path, text, **kwargs):
    (tmp_path / "labels.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataNotFoundError) as error:
        folder.prepare_folder(tmp_path, tmp_path / "data", resolution=32, **kwargs)
    return str(error.value)


def test_csv_refusals_name_the_columns_and_the_field(tmp_path):
    message = _refusal(tmp_path, "file,patient,a\nx.png,p1,1\n")
    assert "'image'" in message and "['file', 'patient', 'a']" in message
    assert "--config.dataset.folder.image_column=" in message
    message = _refusal(tmp_path, "image,subject,a\nx.png,p1,1\n")
    assert "'patient'" in message and "--config.dataset.folder.patient_column=" in message
    message = _refusal(tmp_path, "image,patient,a\n", label_columns="a,zzz")
    assert "zzz" in message and "--config.dataset.folder.label_columns=" in message
    message = _refusal(tmp_path, "image,patient\nx.png,p1\n")
    assert "no label columns" in message and "label_columns" in message
    message = _refusal(tmp_path, b"PK\x03\x04\x00\x00binary spreadsheet")
    assert "not a CSV" in message and "labels_csv" in message
    message = _refusal(tmp_path, "", labels_csv="other.csv")
    assert "other.csv" in message and "['labels.csv']" in message
    assert "--config.dataset.folder.labels_csv" in message
    (tmp_path / "labels.csv").write_text("\ufeffimage; patient; a; b\nx.png;p1;1;0\n")
    table = folder.read_label_table(tmp_path, "labels.csv", "image", "patient", "")
    assert table.label_names == ("a", "b") and table.rows == [["x.png", "p1", "1", "0"]]
    with pytest.raises(DataNotFoundError, match="not a folder"):
        folder.prepare_folder(tmp_path / "nowhere", tmp_path / "data", resolution=32)


def test_settings_are_validated_and_named():
    with pytest.raises(ConfigError, match=r"dataset\.folder\.channels"):
        folder.prepare_folder("/nowhere", "/tmp", resolution=32, channels=2)
    with pytest.raises(ConfigError, match=r"dataset\.folder\.dicom_window"):
        folder.prepare_folder("/nowhere", "/tmp", resolution=32, dicom_window="lung")
    with pytest.raises(ConfigError, match=r"dataset\.resolution"):
        folder.prepare_folder("/nowhere", "/tmp", resolution=48)
    config = folder.FolderConfig(resolution=64, label_names=("a", "b"), dicom_window="brain")
    assert config.name == "r64-c1-brain-keep-b256-" + folder.columns_hash(
        "labels.csv", "image", "patient", ("a", "b")
    )
    other = folder.FolderConfig(resolution=64, label_names=("a",), dicom_window="brain")
    assert other.name != config.name
    assert [folder.parse_label_cell(c) for c in ("1", " YES ", "true", "1.0", "0", "", "No")] == [
        1.0,
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    assert [folder.parse_label_cell(c) for c in ("-1", "2", "maybe", None)] == [None] * 4
