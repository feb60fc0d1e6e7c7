"""Tests of synthjax.eval.discrimination: the discrimination test and its helpers."""

import json

import numpy as np
import pytest

from synthjax.eval import discrimination

SETTINGS = dict(
    train_steps=40, batch_size=32, learning_rate=2e-3, num_resamples=50, confidence=0.95
)


def _noise(num, size=16, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 40, (num, size, size, channels)), 0, 255).astype(np.uint8)


def _without_timing(result):
    return [{k: v for k, v in e.items() if k != "wall_s"} for e in result["per_resolution"]]


def test_downsample_is_rounded_block_mean():
    image = np.array(
        [
            [0, 1, 10, 20],
            [1, 1, 30, 40],
            [0, 0, 255, 255],
            [1, 1, 255, 254],
        ],
        np.uint8,
    )[None, :, :, None]
    # Block means 0.75, 25, 0.5, 254.75 -> rounded to nearest, halves up.
    expected = np.array([[1, 25], [1, 255]], np.uint8)[None, :, :, None]
    out = discrimination.downsample(image, 2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_downsample_keeps_channels_and_images_apart():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    out = discrimination.downsample(images, 2)
    assert out.shape == (3, 2, 2, 3)
    block = images[1, 4:8, 0:4, 2].astype(np.float64)
    assert out[1, 1, 0, 2] == np.floor(block.mean() + 0.5)
    np.testing.assert_array_equal(discrimination.downsample(images, 8), images)
    with pytest.raises(ValueError, match="divide"):
        discrimination.downsample(images, 3)


def test_resolutions_for():
    assert discrimination.resolutions_for(256) == [32, 64, 128, 256]
    assert discrimination.resolutions_for(32) == [32]
    assert discrimination.resolutions_for(16) == [16]
    assert discrimination.resolutions_for(96) == [32, 96]
    assert discrimination.resolutions_for(256, [128, 32, 128]) == [32, 128]
    for bad in ([48], [512], [0]):
        with pytest.raises(ValueError, match=r"evaluate\.c2st\.resolutions"):
            discrimination.resolutions_for(256, bad)


def test_constant_generator_is_told_apart():
    real = _noise(150)  # noise around 128
    fake = np.full((100, 16, 16, 1), 128, np.uint8)  # same mean, no texture
    result = discrimination.discrimination_test(real, fake, resolutions=[8, 16], seed=0, **SETTINGS)
    json.dumps(result)
    assert [e["resolution"] for e in result["per_resolution"]] == [8, 16]
    for e in result["per_resolution"]:
        assert e["auroc"] > 0.95
        assert e["auroc_ci"][0] > 0.5
        assert e["accuracy"] > 0.9
        # Balanced to min(150, 100) per side, split 50/50.
        assert (e["train_real"], e["train_fake"], e["test_real"], e["test_fake"]) == (
            50,
            50,
            50,
            50,
        )
        assert e["train_steps"] == SETTINGS["train_steps"]
        assert len(e["roc"]["fpr"]) == len(e["roc"]["tpr"]) <= discrimination.MAX_ROC_POINTS
    assert result["seed"] == 0
    assert "50/50" in result["protocol"]


def test_artefact_visible_only_at_full_resolution():
    # A pixel checkerboard of 0/255 averages to 128 in every 2x2 block: at 8 px the real
    # images equal the constant fakes, at 16 px they differ in every pixel.
    rng = np.random.default_rng(1)
    board = (np.indices((16, 16)).sum(0) % 2) * 255
    phase = rng.integers(0, 2, 64)[:, None, None]
    real = np.where(phase, board, 255 - board).astype(np.uint8)[..., None]
    fake = np.full_like(real, 128)
    result = discrimination.discrimination_test(real, fake, resolutions=[8, 16], seed=0, **SETTINGS)
    low, full = result["per_resolution"]
    assert low["auroc"] == 0.5 and low["auroc_ci"] == [0.5, 0.5]
    assert full["auroc"] > 0.95


def test_synthetic_is_the_positive_class():
    # Half the real images are noise, the other half equal the constant fakes. With synthetic
    # as the positive class the constant images (all fakes, some reals) tie at the top: the
    # curve jumps from (0, 0) to (share of constant reals, 1). With real as positive it would
    # first rise along fpr = 0 (the noise reals).
    real = np.concatenate([_noise(60, seed=2), np.full((60, 16, 16, 1), 128, np.uint8)])
    fake = np.full((120, 16, 16, 1), 128, np.uint8)
    result = discrimination.discrimination_test(real, fake, resolutions=[16], seed=0, **SETTINGS)
    (e,) = result["per_resolution"]
    fpr, tpr = e["roc"]["fpr"], e["roc"]["tpr"]
    assert set(tpr) == {0.0, 1.0}
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert tpr[1] == 1.0 and 0.3 < fpr[1] < 0.7
    assert e["auroc"] == pytest.approx(1.0 - fpr[1] / 2)


def test_identical_distributions_are_not_told_apart():
    images = _noise(400, seed=5)
    result = discrimination.discrimination_test(
        images[:200], images[200:], resolutions=[16], seed=0, **SETTINGS
    )
    (e,) = result["per_resolution"]
    assert abs(e["auroc"] - 0.5) < 0.12
    assert e["auroc_ci"][0] < 0.5 < e["auroc_ci"][1]


def test_deterministic_and_seeded():
    images = _noise(64, size=8, channels=3, seed=6)
    run = lambda seed: discrimination.discrimination_test(
        images[:32], images[32:], resolutions=[8], seed=seed, **SETTINGS
    )
    first, again, other = run(0), run(0), run(1)
    assert _without_timing(first) == _without_timing(again)
    assert first["per_resolution"][0]["auroc"] != other["per_resolution"][0]["auroc"]


def test_refusals():
    images = _noise(10)
    test = lambda real, fake, **kw: discrimination.discrimination_test(
        real, fake, **{"resolutions": [], "seed": 0, **SETTINGS, **kw}
    )
    with pytest.raises(ValueError, match="at least 4 real"):
        test(images[:3], images)
    with pytest.raises(ValueError, match="at least 4 fake"):
        test(images, images[:3])
    with pytest.raises(ValueError, match="synthesize at the resolution"):
        test(images, _noise(10, size=8))
    with pytest.raises(ValueError, match="synthesize at the resolution"):
        test(images, _noise(10, channels=3))
    with pytest.raises(ValueError, match="uint8"):
        test(images.astype(np.float32), images)
    with pytest.raises(ValueError, match=r"evaluate\.c2st\.resolutions"):
        test(images, images, resolutions=[5])


def _patients_and_strangers(num_patients=8, per_patient=24, size=8, seed=7):
    """Real: a few patients, each many noisy copies of their own random pattern; synthetic:
    one image per stranger from the same pattern distribution. Only memorising the real
    patients can tell the two apart."""
    rng = np.random.default_rng(seed)
    looks = rng.normal(128, 50, (num_patients, size, size, 1))
    ids = np.repeat(np.arange(num_patients), per_patient)
    real = looks[ids] + rng.normal(0, 8, (len(ids), size, size, 1))
    strangers = rng.normal(128, 50, (len(ids), size, size, 1))
    fake = strangers + rng.normal(0, 8, strangers.shape)
    to_uint8 = lambda x: np.clip(x, 0, 255).astype(np.uint8)
    return to_uint8(real), to_uint8(fake), np.array([f"p{i}" for i in ids])


def test_split_by_patient_keeps_patients_apart():
    real, fake, patients = _patients_and_strangers()
    (train_real, train_fake), (test_real, test_fake) = discrimination._split(
        real, fake[:150], seed=3, real_patients=patients
    )
    assert not set(patients[train_real]) & set(patients[test_real])
    assert len(train_real) + len(test_real) == 150  # balanced to the smaller side
    assert (len(train_fake), len(test_fake)) == (len(train_real), len(test_real))
    assert not set(train_fake) & set(test_fake)
    assert abs(len(train_real) - 75) <= 24  # the cut is the patient boundary nearest half
    with pytest.raises(ValueError, match="one patient"):
        discrimination._split(real[:24], fake[:24], seed=0, real_patients=patients[:24])


def test_memorised_patients_are_not_taken_for_a_difference():
    # Split by image, the classifier learns the eight real patients from the train half
    # and recognises their other images in the test half; split by patient, real and
    # synthetic images are drawn alike and the test says so.
    real, fake, patients = _patients_and_strangers()
    settings = {**SETTINGS, "train_steps": 150}
    by_image = discrimination.discrimination_test(real, fake, resolutions=[8], seed=0, **settings)
    by_patient = discrimination.discrimination_test(
        real, fake, resolutions=[8], seed=0, real_patients=patients, **settings
    )
    image_auc = by_image["per_resolution"][0]["auroc"]
    patient = by_patient["per_resolution"][0]
    assert by_image["split"] == "image" and by_patient["split"] == "patient"
    assert by_patient["interval_level"] == "patient"
    assert 1 <= by_patient["test_real_patients"] < 8
    assert image_auc > 0.8, image_auc
    assert patient["auroc"] < image_auc - 0.2, (patient["auroc"], image_auc)
    assert patient["auroc_ci"][0] < 0.5 + 0.1
    # Few patients: resampling them gives a wider interval than resampling images.
    image_level = discrimination.discrimination_test(
        real,
        fake,
        resolutions=[8],
        seed=0,
        real_patients=patients,
        interval_level="image",
        **settings,
    )["per_resolution"][0]
    assert image_level["auroc"] == patient["auroc"]
    width = lambda ci: ci[1] - ci[0]
    assert width(patient["auroc_ci"]) > width(image_level["auroc_ci"])
