"""Tests of the NIH ChestX-ray14 TFDS builder: the real 1,000-image sample (official test list,
patient-disjoint splits, label counts from SOURCE.md, the box pyramid), a hash split without
the official lists in NIH's images_NNN/images/ layout, a small copy with one bad row per skip
reason, and a missing download that says where to get it."""

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import check_says_where_to_get_it
from PIL import Image

from synthjax.core.errors import DataNotFoundError
from synthjax.core.workdir import SPLITS
from synthjax.data import builder, nih_cxr14
from synthjax.data.image_ops import resize_square

SAMPLE = Path(__file__).parents[2] / "shared" / "data" / "nih_cxr14_sample"
RESOLUTION, BASE = 32, 64
# From SOURCE.md.
SOURCE_COUNTS = {
    "Pneumonia": 474,
    "Infiltration": 187,
    "Atelectasis": 113,
    "Edema": 96,
    "Effusion": 89,
    "Consolidation": 33,
    "Pleural_Thickening": 27,
    "Nodule": 20,
    "Mass": 19,
    "Cardiomegaly": 16,
    "Pneumothorax": 12,
    "Emphysema": 10,
    "Fibrosis": 8,
    "Hernia": 3,
}

needs_sample = pytest.mark.skipif(
    not (SAMPLE / "Data_Entry_2017.csv").exists(),
    reason=f"the NIH ChestX-ray14 sample is not at {SAMPLE}",
)


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_lines(path):
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _read_all(dataset_dir):
    sources = tfds.builder_from_directory(dataset_dir).as_data_source()
    out = {}
    for split in SPLITS:
        source = sources[split]
        out[split] = {ex["id"].decode(): ex for ex in (source[i] for i in range(len(source)))}
    return out


def _prepare(manual_dir, data_dir, **kwargs):
    return nih_cxr14.prepare_nih_cxr14(
        manual_dir, data_dir, resolution=RESOLUTION, base_resolution=BASE, **kwargs
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (SAMPLE / "Data_Entry_2017.csv").exists():
        pytest.skip(f"the NIH ChestX-ray14 sample is not at {SAMPLE}")
    dataset_dir, report = _prepare(SAMPLE, tmp_path_factory.mktemp("data"))
    return dataset_dir, report, _read_all(dataset_dir)


@needs_sample
def test_sample_every_row_kept_and_reported(built):
    _, report, examples = built
    assert report["rows_read"] == {"Data_Entry_2017.csv": 1000}
    assert report["counts"] == {"kept": 1000, **{r: 0 for r in nih_cxr14.SKIP_REASONS}}
    assert report["bad_rows"] == []
    assert sum(len(e) for e in examples.values()) == 1000
    text = builder.format_report(report)
    assert "NIH ChestX-ray14 r32-keep-b64" in text and "not_in_split_lists" in text


@needs_sample
def test_sample_official_test_list_and_patient_disjoint_splits(built):
    dataset_dir, report, examples = built
    info = tfds.builder_from_directory(dataset_dir).info
    assert tuple(info.metadata["label_names"]) == nih_cxr14.NIH_LABELS
    assert set(examples["test"]) == _read_lines(SAMPLE / "test_list.txt")
    assert len(examples["test"]) == 153
    train_val = set(examples["train"]) | set(examples["validation"])
    assert train_val == _read_lines(SAMPLE / "train_val_list.txt")
    patient_of = {
        r["Image Index"]: r["Patient ID"] for r in _csv_rows(SAMPLE / "Data_Entry_2017.csv")
    }
    patients = {s: {patient_of[i] for i in examples[s]} for s in SPLITS}
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    assert sum(len(p) for p in patients.values()) == 682
    for split in SPLITS:
        assert report["splits"][split]["images"] == len(examples[split])
        assert report["splits"][split]["patients"] == len(patients[split])
    # About 1/9 of the train_val patients go to validation.
    share = len(patients["validation"]) / (len(patients["train"]) + len(patients["validation"]))
    assert 0.05 < share < 0.2


@needs_sample
def test_sample_labels_match_the_csv_and_source_counts(built):
    _, _, examples = built
    rows = {
        r["Image Index"]: r["Finding Labels"] for r in _csv_rows(SAMPLE / "Data_Entry_2017.csv")
    }
    labels = {i: ex["labels"] for split in examples.values() for i, ex in split.items()}
    for index, cell in rows.items():
        names = set(cell.split("|")) - {"No Finding"}
        expected = [float(n in names) for n in nih_cxr14.NIH_LABELS]
        np.testing.assert_array_equal(labels[index], np.array(expected, np.float32))
    stacked = np.stack(list(labels.values()))
    assert stacked.dtype == np.float32 and stacked.shape == (1000, 14)
    totals = dict(zip(nih_cxr14.NIH_LABELS, stacked.sum(axis=0).astype(int).tolist(), strict=True))
    assert totals == SOURCE_COUNTS
    assert int((~stacked.any(axis=1)).sum()) == 508


@needs_sample
def test_sample_images_are_the_box_pyramid_of_the_resized_source(built):
    _, _, examples = built
    for split in SPLITS:
        for index in sorted(examples[split])[:3]:
            stored = examples[split][index]["image"]
            assert stored.shape == (RESOLUTION, RESOLUTION, 1) and stored.dtype == np.uint8
            level = resize_square(Image.open(SAMPLE / "images" / index), BASE).astype(np.float64)
            while level.shape[0] > RESOLUTION:
                blocks = (
                    level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2]
                )
                level = np.floor(blocks / 4.0 + 0.5)
            np.testing.assert_array_equal(stored[:, :, 0], level.astype(np.uint8))


@needs_sample
def test_without_lists_hash_split_in_images_nnn_layout(tmp_path):
    """No official lists: 80/10/10 by patient hash; images found under images_001/images/."""
    raw = tmp_path / "raw"
    (raw / "images_001").mkdir(parents=True)
    shutil.copytree(SAMPLE / "images", raw / "images_001" / "images")
    shutil.copy(SAMPLE / "Data_Entry_2017.csv", raw)
    dataset_dir, report = _prepare(raw, tmp_path / "data")
    assert report["counts"]["kept"] == 1000
    examples = _read_all(dataset_dir)
    patient_of = {r["Image Index"]: r["Patient ID"] for r in _csv_rows(raw / "Data_Entry_2017.csv")}
    for split in SPLITS:
        for index in examples[split]:
            key = f"nih{int(patient_of[index]):08d}"
            assert builder.patient_split(key) == split


def _synthetic(root):
    """12 real rows (4 per split) plus one bad row per skip reason, with the official lists."""
    rows = _csv_rows(SAMPLE / "Data_Entry_2017.csv")
    test = _read_lines(SAMPLE / "test_list.txt")
    picked = {"train": [], "validation": [], "test": []}
    for row in rows:
        index = row["Image Index"]
        patient = f"nih{int(row['Patient ID']):08d}"
        split = "test" if index in test else nih_cxr14.hash_split(patient, official=True)
        if len(picked[split]) < 4:
            picked[split].append(row)
    good = [r for split in picked.values() for r in split]
    assert len(good) == 12
    (root / "images").mkdir(parents=True)
    for row in good:
        shutil.copy(SAMPLE / "images" / row["Image Index"], root / "images")
    template = picked["train"][0]
    bad = {
        "missing_file": dict(template, **{"Image Index": "99990000_000.png"}),
        "corrupt_image": dict(template, **{"Image Index": "99990001_000.png"}),
        "unknown_label": dict(template, **{"Image Index": "99990002_000.png"}),
        "not_in_split_lists": dict(template, **{"Image Index": "99990003_000.png"}),
    }
    bad["unknown_label"]["Finding Labels"] = "Pneumonia|Lung Lesion"
    bad["outside_manual_dir"] = dict(template, **{"Image Index": "99990004_000.png"})
    (root / "images" / "99990001_000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    for index in ("99990002_000.png", "99990003_000.png"):
        shutil.copy(SAMPLE / "images" / template["Image Index"], root / "images" / index)
    # A symlink to a valid image outside the dataset folder.
    (root / "images" / "99990004_000.png").symlink_to(SAMPLE / "images" / template["Image Index"])
    all_rows = [*good, *bad.values(), dict(good[5])]  # the last one: a duplicate index
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(all_rows)
    # Saved with a byte-order mark, plus a row cut short and one with an extra cell.
    text.write("99990005_000.png,Effusion\n99990006_000.png,Effusion,0,99990006,extra\n")
    (root / "Data_Entry_2017.csv").write_text("\ufeff" + text.getvalue())
    listed = [r["Image Index"] for r in (*picked["train"], *picked["validation"])]
    listed += ["99990000_000.png", "99990001_000.png", "99990002_000.png", "99990004_000.png"]
    listed += ["99990005_000.png", "99990006_000.png"]
    (root / "train_val_list.txt").write_text("\n".join(listed) + "\n")
    (root / "test_list.txt").write_text("\n".join(r["Image Index"] for r in picked["test"]))
    return picked


@needs_sample
def test_a_symlinked_images_folder_outside_is_not_read(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "images").symlink_to(SAMPLE / "images")
    shutil.copy(SAMPLE / "Data_Entry_2017.csv", raw)
    with pytest.raises(DataNotFoundError, match=r"1000 image\(s\) lead outside") as error:
        _prepare(raw, tmp_path / "data")
    assert "'outside_manual_dir': 1000" in str(error.value)
    assert "move or copy those files" in str(error.value)


@needs_sample
def test_each_bad_row_counted_under_its_reason(tmp_path):
    picked = _synthetic(tmp_path / "raw")
    dataset_dir, report = _prepare(tmp_path / "raw", tmp_path / "data")
    assert report["rows_read"] == {"Data_Entry_2017.csv": 20}
    assert report["counts"] == {
        "kept": 12,
        "short_row": 1,
        "long_row": 1,
        "duplicate_image_index": 1,
        "unknown_label": 1,
        "not_in_split_lists": 1,
        "outside_manual_dir": 1,
        "missing_file": 1,
        "no_positive_label": 0,
        "corrupt_image": 1,
    }
    listed = {(b["path"], b["reason"]) for b in report["bad_rows"]}
    assert listed == {
        ("99990000_000.png", "missing_file"),
        ("99990001_000.png", "corrupt_image"),
        ("99990002_000.png", "unknown_label"),
        ("99990003_000.png", "not_in_split_lists"),
        ("99990004_000.png", "outside_manual_dir"),
        ("99990005_000.png", "short_row"),
        ("99990006_000.png", "long_row"),
        (picked["validation"][1]["Image Index"], "duplicate_image_index"),
    }
    examples = _read_all(dataset_dir)
    for split in SPLITS:
        assert set(examples[split]) == {r["Image Index"] for r in picked[split]}
    # drop_no_positive removes the all-zero ("No Finding") rows and counts them.
    n_empty = sum(r["Finding Labels"] == "No Finding" for s in picked.values() for r in s)
    _, dropped = _prepare(tmp_path / "raw", tmp_path / "data", drop_no_positive=True)
    assert dropped["config"] == "r32-drop-b64"
    assert dropped["counts"]["no_positive_label"] == n_empty
    assert dropped["counts"]["kept"] == 12 - n_empty


def test_missing_csv_says_where_to_get_it(tmp_path):
    check_says_where_to_get_it(
        nih_cxr14.prepare_nih_cxr14, tmp_path, nih_cxr14.DOWNLOAD_PAGE, "Data_Entry_2017.csv"
    )


def test_findings_parsing_and_config_name():
    labels, unknown = nih_cxr14.parse_findings("Effusion|Hernia")
    assert unknown == [] and labels.tolist() == [0, 0, 1] + [0] * 10 + [1]
    labels, _ = nih_cxr14.parse_findings("No Finding")
    assert labels is not None and not labels.any()
    assert nih_cxr14.parse_findings("Effusion|Lung Lesion") == (None, ["Lung Lesion"])
    assert len(nih_cxr14.NIH_LABELS) == 14
    assert nih_cxr14.NihCxr14Config(resolution=64, base_resolution=128).name == "r64-keep-b128"
    # Only ASCII digits make a numeric id: '²' is a digit to str.isdigit, not to int().
    assert nih_cxr14._patient_key("61", "x") == "nih00000061"
    assert nih_cxr14._patient_key("²", "x") == "nih²"
