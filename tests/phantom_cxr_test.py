"""Tests of the chest radiograph phantom: CheXpert layout, determinism, label statistics, and
that every finding really changes the image where it should."""

import csv
import dataclasses
import io
from importlib import resources

import numpy as np
import pytest
from data_fixtures import write_cxr_phantom
from PIL import Image

from synthjax.core.errors import ConfigError
from synthjax.data.chexpert import CHEXPERT_LABELS
from synthjax.data.image_ops import box_pyramid, resize_square
from synthjax.data.phantoms.cxr import writer as phantom_cxr


def _real_label_columns() -> list[str]:
    """The 14 label columns of the real CheXpert CSV, in its order, as the packaged table of
    real label counts has them (between `uncertain_policy` and `count`)."""
    table = resources.files("synthjax.data") / "tables" / "chexpert_frontal_label_combinations.csv"
    return next(csv.reader(io.StringIO(table.read_text())))[1:-1]


# The real CSV's header: five columns about the image, then the labels.
EXPECTED_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *_real_label_columns()]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    stats = write_cxr_phantom(
        root, num_patients=12, image_size=64, valid_patients=3, lateral_fraction=0.3, seed=3
    )
    return root, stats


def test_layout_and_csv_match_chexpert_small(small_phantom):
    root, stats = small_phantom
    dataset = root / "CheXpert-v1.0-small"
    train, valid = _read(dataset / "train.csv"), _read(dataset / "valid.csv")
    assert train[0] == EXPECTED_COLUMNS and valid[0] == EXPECTED_COLUMNS
    rows = train[1:] + valid[1:]
    assert len(rows) == stats["images"] == stats["frontal"] + stats["lateral"]
    assert stats["lateral"] > 0
    for row in rows:
        path = row[0]
        split, _, study, view = path.split("/")[1:]
        assert path.startswith(f"CheXpert-v1.0-small/{split}/patient")
        assert split in ("train", "valid") and study.startswith("study")
        assert row[1] in ("Male", "Female") and 18 <= int(row[2]) <= 95
        assert row[3] == ("Lateral" if view.endswith("_lateral.jpg") else "Frontal")
        assert row[4] in (("",) if row[3] == "Lateral" else ("AP", "PA"))
        assert all(cell in ("", "1.0", "0.0", "-1.0") for cell in row[5:])
        image = Image.open(root / path)
        assert image.format == "JPEG" and image.mode == "L" and image.size == (64, 77)
    train_ids = {int(r[0].split("/")[2][7:]) for r in train[1:]}
    valid_ids = {int(r[0].split("/")[2][7:]) for r in valid[1:]}
    assert train_ids == set(range(1, 13)) and valid_ids == {13, 14, 15}
    # The real validation set is expert-labelled: certain, and every cell filled in.
    assert all(cell in ("1.0", "0.0") for r in valid[1:] for cell in r[5:])
    assert any(cell == "" for r in train[1:] for cell in r[5:])  # zeros mostly blank


def test_same_seed_same_bytes(tmp_path):
    kwargs = dict(num_patients=4, image_size=32, seed=11)
    write_cxr_phantom(tmp_path / "a", **kwargs)
    write_cxr_phantom(tmp_path / "b", **kwargs)
    write_cxr_phantom(tmp_path / "c", **{**kwargs, "seed": 12})

    def files(root):
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    files_a, files_b = files(tmp_path / "a"), files(tmp_path / "b")
    assert files_a == files_b and len(files_a) > 5
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    csv_a = (tmp_path / "a" / "CheXpert-v1.0-small" / "train.csv").read_bytes()
    csv_c = (tmp_path / "c" / "CheXpert-v1.0-small" / "train.csv").read_bytes()
    assert csv_a != csv_c


def test_label_draws_follow_the_real_table():
    table = phantom_cxr.load_label_table()
    rng = np.random.default_rng(0)
    draws = np.stack([phantom_cxr.draw_label_values(rng, table) for _ in range(20000)])
    expected_ones = table.probabilities @ table.combinations
    np.testing.assert_allclose((draws != 0).mean(0), expected_ones, atol=0.015)
    # -1 -> 0 must give back the u_zeros marginals of the real file.
    u_zeros = expected_ones * (1.0 - table.uncertain_rate)
    np.testing.assert_allclose((draws == 1).mean(0), u_zeros, atol=0.015)
    assert table.uncertain_rate[CHEXPERT_LABELS.index("No Finding")] == 0.0
    assert table.uncertain_rate[CHEXPERT_LABELS.index("Pneumonia")] > 0.5


def test_written_prevalence_roughly_follows_the_table(tmp_path):
    stats = write_cxr_phantom(tmp_path, num_patients=150, image_size=32, seed=0)
    table = phantom_cxr.load_label_table()
    expected = table.probabilities @ table.combinations
    got = np.array([stats["label_prevalence"][name] for name in CHEXPERT_LABELS])
    np.testing.assert_allclose(got, expected, atol=0.1)


# Where each finding should show, as a box in image coordinates (x from -0.5 to 0.5, y from
# 0 down to 1.2, in image widths) for a patient of nominal anatomy (no variation). Findings in
# the lungs may show anywhere across both; only how high up differs.
LUNGS_ACROSS = (-0.45, 0.45)
LUNG_HEIGHT = {
    "Lung Opacity": (0.2, 0.95),
    "Lung Lesion": (0.15, 0.7),
    "Edema": (0.2, 0.95),
    "Consolidation": (0.1, 0.95),
    "Pneumonia": (0.3, 0.95),
    "Atelectasis": (0.5, 0.95),
    "Pneumothorax": (0.1, 0.85),
    "Pleural Effusion": (0.5, 1.0),
    "Pleural Other": (0.15, 0.8),
    "Fracture": (0.2, 0.8),
}
EXPECTED_REGION = {
    "Enlarged Cardiomediastinum": (-0.2, 0.2, 0.15, 0.55),
    "Cardiomegaly": (-0.25, 0.4, 0.5, 0.95),
    "Support Devices": (-0.5, 0.5, 0.0, 1.2),
    **{name: (*LUNGS_ACROSS, *height) for name, height in LUNG_HEIGHT.items()},
}


def _render(label_severity, *, size=256, subtlety=1.0, seed=5):
    detector = phantom_cxr.Detector(size, seed=0)
    anatomy = phantom_cxr.draw_anatomy(np.random.default_rng(seed), variation=0.0)
    layout = phantom_cxr.draw_layout(np.random.default_rng(seed))
    # Middle-of-the-range extents and every device, so the checks are about the signature.
    layout = dataclasses.replace(
        layout, extent=np.ones(14, np.float32), devices=(True, True, True, True, True)
    )
    severity = np.zeros(14, np.float32)
    for name, value in label_severity.items():
        severity[CHEXPERT_LABELS.index(name)] = value
    return phantom_cxr.render_frontal(
        detector, anatomy, layout, severity, np.random.default_rng(1), noise=1.0, subtlety=subtlety
    )


def _at_32(image):
    return box_pyramid(resize_square(Image.fromarray(image), 256), 32).astype(np.float32)


def test_no_finding_is_the_absence_of_findings():
    normal = _render({})
    assert normal.shape == (307, 256) and normal.dtype == np.uint8
    np.testing.assert_array_equal(_render({"No Finding": 1.0}), normal)


@pytest.mark.parametrize("finding", list(EXPECTED_REGION))
def test_each_finding_changes_the_image_where_expected(finding):
    normal = _render({}).astype(np.float32)
    diff = np.abs(_render({finding: 1.0}).astype(np.float32) - normal)
    x0, x1, y0, y1 = EXPECTED_REGION[finding]
    width = diff.shape[1]
    rows = slice(int(y0 * width), int(np.ceil(y1 * width)))
    cols = slice(int((x0 + 0.5) * width), int(np.ceil((x1 + 0.5) * width)))
    inside = diff[rows, cols].sum()
    assert inside > 0.8 * diff.sum(), "the change is mostly outside the expected region"
    assert (diff > 8).sum() > 30, "the change is too small to see"
    # Visible at the study's 32x32, at least as a few grey levels somewhere.
    assert np.abs(_at_32(_render({finding: 1.0})) - _at_32(_render({}))).max() >= 4
    # Uncertain and subtle findings are drawn fainter.
    fainter = np.abs(_render({finding: phantom_cxr.UNCERTAIN_SEVERITY}) - normal).sum()
    subtle = np.abs(_render({finding: 1.0}, subtlety=2.0) - normal).sum()
    assert fainter < diff.sum() and subtle < diff.sum()


def test_small_images_render_too():
    image = _render({"Cardiomegaly": 1.0, "Pleural Effusion": 1.0}, size=32)
    assert image.shape == (38, 32)


def test_bad_knobs_are_refused(tmp_path):
    knobs = dict(num_patients=2, image_size=32, seed=0)
    with pytest.raises(ConfigError, match="lateral_fraction"):
        write_cxr_phantom(tmp_path, **knobs, lateral_fraction=0.9)
    with pytest.raises(ConfigError, match="subtlety"):
        write_cxr_phantom(tmp_path, **knobs, subtlety=0.0)
