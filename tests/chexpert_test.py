"""Tests of the CheXpert TFDS builder on a small phantom with injected bad rows (a CSV saved
with a byte-order mark, rows cut short or with extra cells, paths leading out of the dataset
folder): every row is accounted for, nothing outside is read, splits are patient-disjoint,
label policies and the pyramid are right, builds are reused, and a missing download says where
to get it."""

import csv
import io
import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import check_says_where_to_get_it, write_cxr_phantom
from PIL import Image

from synthjax.core.errors import ConfigError
from synthjax.core.workdir import SPLITS
from synthjax.data import builder, chexpert, source_files
from synthjax.data.image_ops import box_downsample_2x2, resize_square
from synthjax.data.loader import load_source

RESOLUTION, BASE = 16, 64
FOLDER = "CheXpert-v1.0-small"
# Injected rows: (patient folder, reason the builder must give, how to make the file).
INJECTED = {
    "missing": ("train/patient09990/study1/view1_frontal.jpg", "missing_file"),
    "garbage": ("train/patient09991/study1/view1_frontal.jpg", "corrupt_image"),
    "truncated": ("train/patient09992/study1/view1_frontal.jpg", "corrupt_image"),
    "unknown": ("train/patient09993/study1/view1_frontal.jpg", "unknown_label_value"),
    "lateral": ("train/patient09994/study1/view2_lateral.jpg", "not_frontal"),
    "no_patient": ("train/misc/view1_frontal.jpg", "no_patient_id"),
    "all_blank": ("train/patient09995/study1/view1_frontal.jpg", "no_positive_label"),
}
OUTSIDE_KEY = "patient09996/study1/view1_frontal"  # an image beside the dataset, not in it


def _csv_rows(dataset):
    rows = []
    for name in ("train.csv", "valid.csv"):
        with open(dataset / name, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def _label_cells(row):
    return [row[name] for name in chexpert.CHEXPERT_LABELS]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A 40-patient phantom plus one injected row per failure mode (and a duplicate)."""
    root = tmp_path_factory.mktemp("raw")
    write_cxr_phantom(root, num_patients=40, image_size=BASE, seed=1)
    dataset = root / FOLDER
    phantom_rows = _csv_rows(dataset)
    with open(dataset / "train.csv", newline="") as f:
        header = next(csv.reader(f))
    template = next(
        r for r in phantom_rows if r["Frontal/Lateral"] == "Frontal" and "1.0" in _label_cells(r)
    )
    jpeg = (root / template["Path"]).read_bytes()
    extra = []
    for kind, (rel, _) in INJECTED.items():
        row = dict(template, Path=f"{FOLDER}/{rel}")
        file = dataset / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        if kind == "garbage":
            file.write_bytes(b"this is not a JPEG")
        elif kind == "truncated":
            file.write_bytes(jpeg[: len(jpeg) // 2])
        elif kind != "missing":
            file.write_bytes(jpeg)
        if kind == "unknown":
            row["Cardiomegaly"] = "2.0"
        if kind == "lateral":
            row.update({"Frontal/Lateral": "Lateral", "AP/PA": ""})
        if kind == "all_blank":
            row.update({name: "" for name in chexpert.CHEXPERT_LABELS})
        extra.append(row)
    extra.append(dict(template))  # the same image listed twice
    # Three ways to a valid image outside the dataset folder: `..`, absolute, a symlink.
    outside = root.parent / f"{root.name}_outside" / f"{OUTSIDE_KEY}.jpg"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(jpeg)
    link = dataset / "train/patient09997/study1/view1_frontal.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    for path in (
        f"{FOLDER}/../../{root.name}_outside/{OUTSIDE_KEY}.jpg",
        str(outside),
        f"{FOLDER}/train/patient09997/study1/view1_frontal.jpg",
    ):
        extra.append(dict(template, Path=path))
    text = io.StringIO()
    csv.DictWriter(text, header, lineterminator="\n").writerows(extra)
    cut = f"{FOLDER}/train/patient09998/study1/view1_frontal.jpg,Female,40,Frontal\n"
    shifted = ",".join(
        [f"{FOLDER}/train/patient09999/study1/view1_frontal.jpg", "x"] + ["1.0"] * 18
    )
    # Saved again the way a spreadsheet does: UTF-8 with a byte-order mark.
    original = (dataset / "train.csv").read_text()
    (dataset / "train.csv").write_text("\ufeff" + original + text.getvalue() + cut + shifted + "\n")
    return root, phantom_rows


def _prepare(raw_root, data_dir, **kwargs):
    return chexpert.prepare_chexpert(
        raw_root, data_dir, resolution=RESOLUTION, base_resolution=BASE, **kwargs
    )


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    dataset_dir, report = _prepare(raw[0], data_dir)
    return data_dir, dataset_dir, report


def _read_split(dataset_dir, split):
    source = tfds.builder_from_directory(dataset_dir).as_data_source()[split]
    examples = [source[i] for i in range(len(source))]
    return {ex["id"].decode(): ex for ex in examples}


def _expected(phantom_rows, policy):
    """id -> expected label vector for the phantom's own frontal rows."""
    out = {}
    for row in phantom_rows:
        if row["Frontal/Lateral"] != "Frontal":
            continue
        values = np.array([float(c) if c else 0.0 for c in _label_cells(row)], np.float32)
        labels = np.where(values < 0, 1.0 if policy == "u_ones" else 0.0, values)
        out[row["Path"].split("/", 2)[2].rsplit(".", 1)[0]] = labels.astype(np.float32)
    return out


def test_every_row_is_counted_by_reason(raw, built):
    _, phantom_rows = raw
    _, _, report = built
    expected = _expected(phantom_rows, "u_ones")
    n_lateral = sum(r["Frontal/Lateral"] == "Lateral" for r in phantom_rows)
    n_no_positive = sum(not v.any() for v in expected.values())
    counts = report["counts"]
    assert counts == {
        "kept": len(expected) - n_no_positive,
        "short_row": 1,
        "long_row": 1,
        "not_frontal": n_lateral + 1,
        "no_patient_id": 1,
        "outside_manual_dir": 3,
        "duplicate_path": 1,
        "unknown_label_value": 1,
        "missing_file": 1,
        "no_positive_label": n_no_positive + 1,
        "corrupt_image": 2,
    }
    assert sum(counts.values()) == sum(report["rows_read"].values())
    listed = {(b["path"].split("/", 1)[1], b["reason"]) for b in report["bad_rows"]}
    for rel, reason in INJECTED.values():
        if reason not in builder.FILTER_REASONS:
            assert (rel, reason) in listed
    assert ("train/patient09998/study1/view1_frontal.jpg", "short_row") in listed
    assert ("train/patient09999/study1/view1_frontal.jpg", "long_row") in listed
    outside = [b for b in report["bad_rows"] if b["reason"] == "outside_manual_dir"]
    assert all("_outside/" + OUTSIDE_KEY in b["detail"] for b in outside)
    assert report["bad_rows_omitted"] == 0
    assert sum(s["images"] for s in report["splits"].values()) == counts["kept"]
    json.dumps(report)  # JSON-able
    text = builder.format_report(report)
    assert "corrupt_image" in text and "validation" in text


def test_nothing_outside_the_dataset_folder_is_kept(built):
    _, dataset_dir, _ = built
    for split in SPLITS:
        keys = set(_read_split(dataset_dir, split))
        assert OUTSIDE_KEY not in keys
        assert not any(k.startswith("patient09997/") for k in keys)  # the symlink out


def test_csv_paths_are_resolved_on_paper(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    assert chexpert._csv_parts("CheXpert-v1.0-small/train/p/./s/../v.jpg", root) == [
        "train",
        "p",
        "v.jpg",
    ]
    assert chexpert._csv_parts("CheXpert-v1.0-small/../../x.jpg", root) == ["..", "..", "x.jpg"]
    assert chexpert._csv_parts(str(root / "train/v.jpg"), root) == ["train", "v.jpg"]
    assert chexpert._csv_parts("/elsewhere/v.jpg", root)[0] == ".."
    assert chexpert._csv_parts("", root) == []


def test_rows_that_do_not_line_up_with_the_header():
    rows = list(csv.DictReader(io.StringIO("a,b,c\n1,2,3\n1,2\n1,2,3,4\n1,2,3,,\n")))
    assert [source_files.row_shape_problem(r) for r in (rows[0], rows[3])] == [None, None]
    assert source_files.row_shape_problem(rows[1])[0] == "short_row"
    assert source_files.row_shape_problem(rows[2])[0] == "long_row"


def test_splits_are_patient_disjoint_and_hash_assigned(built):
    _, dataset_dir, report = built
    info = tfds.builder_from_directory(dataset_dir).info
    assert tuple(info.metadata["label_names"]) == chexpert.CHEXPERT_LABELS
    patients = {}
    for split in SPLITS:
        examples = _read_split(dataset_dir, split)
        assert len(examples) == report["splits"][split]["images"]
        patients[split] = {key.split("/")[0] for key in examples}
        assert len(patients[split]) == report["splits"][split]["patients"]
        assert all(builder.patient_split(p) == split for p in patients[split])
    assert not (patients["train"] & patients["validation"])
    assert not (patients["train"] & patients["test"])
    assert not (patients["validation"] & patients["test"])


def test_patient_split_is_stable_and_80_10_10():
    ids = [f"patient{i:05d}" for i in range(20000)]
    splits = [builder.patient_split(p) for p in ids]
    assert splits == [builder.patient_split(p) for p in ids]
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(splits.count(split) / len(ids) - share) < 0.01


def test_uncertain_policies_and_drop_no_positive(raw, built, tmp_path):
    _, phantom_rows = raw
    _, dataset_dir, _ = built
    for policy in ("u_ones", "u_zeros"):
        expected = {k: v for k, v in _expected(phantom_rows, policy).items() if v.any()}
        if policy == "u_ones":
            ones_dir = dataset_dir
        else:
            ones_dir, _ = _prepare(raw[0], tmp_path, uncertain_policy="u_zeros")
        got = {}
        for split in SPLITS:
            got.update({k: ex["labels"] for k, ex in _read_split(ones_dir, split).items()})
        assert set(got) == set(expected)
        for key, labels in got.items():
            np.testing.assert_array_equal(labels, expected[key])
    keep_dir, keep_report = _prepare(raw[0], tmp_path, drop_no_positive=False)
    assert keep_dir.parent.name == "r16-u_ones-keep-b64"
    assert keep_report["counts"]["no_positive_label"] == 0
    kept = {}
    for split in SPLITS:
        kept.update(_read_split(keep_dir, split))
    assert "patient09995/study1/view1_frontal" in kept
    assert not kept["patient09995/study1/view1_frontal"]["labels"].any()


def test_image_is_a_box_pyramid_of_the_resized_source(raw, built):
    root, phantom_rows = raw
    _, dataset_dir, _ = built
    paths = {r["Path"].split("/", 2)[2].rsplit(".", 1)[0]: r["Path"] for r in phantom_rows}
    examples = _read_split(dataset_dir, "train")
    for key in sorted(examples)[:5]:
        stored = examples[key]["image"]
        assert stored.shape == (RESOLUTION, RESOLUTION, 1) and stored.dtype == np.uint8
        level = resize_square(Image.open(root / paths[key]), BASE).astype(np.float64)
        while level.shape[0] > RESOLUTION:
            blocks = level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2]
            level = np.floor(blocks / 4.0 + 0.5)
        np.testing.assert_array_equal(stored[:, :, 0], level.astype(np.uint8))


def test_box_downsample_rounds_half_up():
    image = np.array([[0, 1, 2, 2], [1, 0, 2, 3], [255, 255, 7, 8], [255, 254, 8, 8]], np.uint8)
    np.testing.assert_array_equal(box_downsample_2x2(image), [[1, 2], [255, 8]])


def test_second_prepare_reuses_the_build(raw, built):
    data_dir, dataset_dir, report = built
    shards = sorted(dataset_dir.glob("*.array_record-*"))
    stamps = [os.stat(p).st_mtime_ns for p in shards]
    started = time.monotonic()
    again_dir, again = _prepare(raw[0], data_dir)
    assert time.monotonic() - started < 2.0
    assert again_dir == dataset_dir and again == report
    assert [os.stat(p).st_mtime_ns for p in shards] == stamps
    assert (dataset_dir / builder.REPORT_FILE).exists()


def test_changed_source_is_rebuilt(tmp_path):
    root = tmp_path / "raw"
    write_cxr_phantom(root, num_patients=40, image_size=32, seed=2)
    _, first = chexpert.prepare_chexpert(root, tmp_path / "data", resolution=8, base_resolution=32)
    with open(root / FOLDER / "train.csv", "a") as f:
        f.write(
            f"{FOLDER}/train/patient09999/study1/view1_frontal.jpg,Male,50,Frontal,AP"
            + ",1.0" * 14
            + "\n"
        )
    _, second = chexpert.prepare_chexpert(root, tmp_path / "data", resolution=8, base_resolution=32)
    assert second["counts"]["missing_file"] == first["counts"]["missing_file"] + 1
    # A prepared dataset stays usable after its source is removed.
    shutil.rmtree(root)
    _, third = chexpert.prepare_chexpert(root, tmp_path / "data", resolution=8, base_resolution=32)
    assert third == second


def test_missing_data_says_where_to_get_it(tmp_path):
    check_says_where_to_get_it(
        chexpert.prepare_chexpert, tmp_path, chexpert.DOWNLOAD_PAGE, "CheXpert-v1.0-small"
    )


def test_manual_dir_may_be_the_dataset_folder_itself(raw):
    root = raw[0]
    assert chexpert.find_dataset_root(root) == root / FOLDER
    assert chexpert.find_dataset_root(root / FOLDER) == root / FOLDER


def test_config_name_and_validation():
    config = chexpert.ChexpertConfig(
        resolution=64, uncertain_policy="u_zeros", drop_no_positive=False, base_resolution=128
    )
    assert config.name == "r64-u_zeros-keep-b128"
    with pytest.raises(ConfigError, match=r"dataset\.resolution"):
        chexpert.ChexpertConfig(resolution=48)
    with pytest.raises(ConfigError, match=r"dataset\.resolution"):
        chexpert.ChexpertConfig(resolution=512, base_resolution=256)
    with pytest.raises(ConfigError, match=r"dataset\.uncertain_policy"):
        chexpert.ChexpertConfig(uncertain_policy="u_maybe")


def test_records_keep_their_patient_and_older_builds_are_not_reused(raw, built, tmp_path):
    _, dataset_dir, report = built
    for split in SPLITS:
        source = load_source(dataset_dir, split)
        ids = [source[i]["id"] for i in range(len(source))]
        # The phantom's ids are patientNNNNN/studyN/viewN_frontal: the patient folder.
        assert source.patients.tolist() == [i.split("/")[0] for i in ids]
        assert len(set(source.patients)) == report["splits"][split]["patients"]
        assert set(source[0]) == {"image", "labels", "id"}  # records stay as they were
        np.testing.assert_array_equal(load_source(dataset_dir, split).patients, source.patients)
    assert (dataset_dir / "patients-test.npy").exists()  # read once, then from the cache
    # A complete build of the same source from before records kept their patient (version
    # 1.0.0) is not reused: the version is part of where a build lives.
    data_dir = tmp_path / "data"
    old_dir = data_dir / dataset_dir.relative_to(built[0]).parent / "1.0.0"
    shutil.copytree(dataset_dir, old_dir)
    new_dir, _ = _prepare(raw[0], data_dir)
    assert new_dir.name == str(chexpert.Chexpert.VERSION) and new_dir != old_dir
    assert load_source(new_dir, "test").has_patients
