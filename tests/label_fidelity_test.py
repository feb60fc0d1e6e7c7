"""Label fidelity and conditioning strength against hand-computed values."""

import numpy as np
import pytest

from synthjax.eval import label_fidelity


def test_label_fidelity_matches_a_hand_computed_auroc():
    # Label A: positives score 0.9, 0.4; negatives 0.5, 0.1 -> pairs (pos > neg):
    # 0.9 > 0.5, 0.9 > 0.1, 0.4 < 0.5, 0.4 > 0.1 -> 3 of 4 = 0.75.
    # Label B: perfectly ranked -> 1.0. Label C: all positive -> excluded.
    labels = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1]], np.float32)
    probs = np.array(
        [[0.9, 0.2, 0.5], [0.4, 0.8, 0.5], [0.5, 0.7, 0.5], [0.1, 0.3, 0.5]], np.float32
    )
    result = label_fidelity.label_fidelity(probs, labels, ("A", "B", "C"))
    assert result["per_label"]["A"]["auroc"] == pytest.approx(0.75)
    assert result["per_label"]["B"]["auroc"] == pytest.approx(1.0)
    assert result["labels_excluded"] == {"C": 4}
    assert result["auroc_mean"] == pytest.approx(0.875)
    assert result["auroc_mean_ci"] is None


def test_ties_count_half_and_the_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 2)) < 0.4).astype(np.float32)
    probs = np.clip(labels * 0.3 + rng.random((400, 2)) * 0.7, 0, 1)
    probs[:, 1] = 0.5  # constant scores: every pair tied -> 0.5
    result = label_fidelity.label_fidelity(probs, labels, ("x", "y"), num_resamples=200, seed=1)
    assert result["per_label"]["y"]["auroc"] == pytest.approx(0.5)
    lo, hi = result["auroc_mean_ci"]
    assert lo <= result["auroc_mean"] <= hi and hi - lo < 0.2
    # A generator that ignores its labels is at chance: the interval holds 0.5.
    noise = label_fidelity.label_fidelity(
        rng.random((400, 2)), labels, ("x", "y"), num_resamples=200, seed=1
    )
    assert noise["auroc_mean_ci"][0] < 0.5 < noise["auroc_mean_ci"][1]


def test_min_positives_excludes_rare_labels():
    labels = np.zeros((50, 2), np.float32)
    labels[:3, 0] = 1
    labels[:25, 1] = 1
    probs = labels.copy()
    result = label_fidelity.label_fidelity(probs, labels, ("rare", "common"), min_positives=5)
    assert result["labels_excluded"] == {"rare": 3}
    assert list(result["per_label"]) == ["common"]


def test_conditioning_strength_is_zero_when_labels_are_ignored_and_grows_with_them():
    latents = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    combos = np.eye(3, dtype=np.float32)

    def ignores_labels(z, y):
        return np.tile(z[:, :1, None, None], (1, 4, 4, 1))

    def uses_labels(z, y):
        return np.tile((z[:, :1] + 10.0 * y[:, :1])[:, :, None, None], (1, 4, 4, 1))

    assert label_fidelity.conditioning_strength(ignores_labels, latents, combos) == 0.0
    strong = label_fidelity.conditioning_strength(uses_labels, latents, combos)
    # Across combinations the pixel moves by 10 for one of three: std 10 * sqrt(2) / 3;
    # across latents the std of z[:, 0].
    want = (10 * np.sqrt(2) / 3) / latents[:, 0].std()
    assert strong == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        label_fidelity.conditioning_strength(uses_labels, latents[:1], combos)
