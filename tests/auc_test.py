"""Tests of synthjax.eval.auc: AUROC against sklearn, bootstrap and paired-gap intervals."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthjax.eval import auc


def _multilabel(num_cases, num_labels, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_cases, num_labels)) < 0.3).astype(np.float32)
    scores = signal * labels + rng.normal(size=(num_cases, num_labels))
    return labels, scores


@pytest.mark.parametrize("kind", ["random", "tied", "constant", "integer_scores"])
def test_roc_auc_matches_sklearn(kind):
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.25).astype(np.float64)
    scores = {
        "random": y * 0.7 + rng.normal(size=300),
        "tied": np.round(y * 0.5 + rng.normal(size=300), 1),
        "constant": np.full(300, 0.3),
        "integer_scores": rng.integers(0, 3, size=300).astype(np.float64),
    }[kind]
    assert auc.roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_below_half_is_not_flipped():
    y = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.85])
    expected = roc_auc_score(y, scores)
    assert expected < 0.5
    assert auc.roc_auc(y, scores) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_one_class_is_nan():
    assert math.isnan(auc.roc_auc(np.ones(10), np.arange(10.0)))
    assert math.isnan(auc.roc_auc(np.zeros(10), np.arange(10.0)))


def test_roc_auc_rejects_uncertain_labels():
    with pytest.raises(ValueError, match="only 0 and 1"):
        auc.roc_auc(np.array([0, 1, -1]), np.array([0.1, 0.2, 0.3]))


def test_per_label_and_mean_with_an_undefined_label():
    labels, scores = _multilabel(400, 4)
    labels[:, 2] = 0.0  # no positives: AUC undefined for this label
    per_label = auc.per_label_auroc(labels, scores)
    assert math.isnan(per_label[2])
    for k in (0, 1, 3):
        assert per_label[k] == pytest.approx(roc_auc_score(labels[:, k], scores[:, k]), abs=1e-12)
    assert auc.mean_auroc(per_label) == pytest.approx(np.mean(per_label[[0, 1, 3]]))
    assert math.isnan(auc.mean_auroc([math.nan, math.nan]))


def test_weighted_auc_equals_auc_of_the_explicit_resample():
    labels, scores = _multilabel(200, 1, seed=3)
    scores = np.round(scores, 1)  # include ties
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 200, size=(5, 200))
    weights = np.stack([np.bincount(i, minlength=200) for i in idx], axis=1).astype(np.float64)
    got = auc._weighted_auc(labels[:, 0].astype(np.float64), scores[:, 0], weights)
    want = [roc_auc_score(labels[i, 0], scores[i, 0]) for i in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_bootstrap_interval_contains_point_and_narrows_with_n():
    widths = []
    for num_cases in (200, 3200):
        labels, scores = _multilabel(num_cases, 3, seed=num_cases)
        result = auc.bootstrap_auroc(labels, scores, num_resamples=300, seed=0)
        json.dumps(result)  # plain Python types only
        low, high = result["mean_ci"]
        assert low <= result["mean"] <= high
        for point, (lo, hi) in zip(result["per_label"], result["per_label_ci"], strict=True):
            assert lo <= point <= hi
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # width ~ 1/sqrt(N): 16x the cases, ~1/4 the width


def test_bootstrap_skips_undefined_labels_and_is_seeded():
    labels, scores = _multilabel(300, 3)
    labels[:, 1] = 0.0
    labels[0, 1] = 1.0  # one positive: undefined in the resamples that miss it
    result = auc.bootstrap_auroc(labels, scores, num_resamples=200, seed=7)
    defined = result["per_label_resamples_defined"]
    assert defined[0] == defined[2] == 200
    assert 0 < defined[1] < 200  # about 1 - 1/e of the resamples draw case 0
    again = auc.bootstrap_auroc(labels, scores, num_resamples=200, seed=7)
    assert again == result

    labels[0, 1] = 0.0
    result = auc.bootstrap_auroc(labels, scores, num_resamples=50)
    assert result["per_label"][1] is None
    assert result["per_label_ci"][1] == [None, None]
    defined_points = [result["per_label"][0], result["per_label"][2]]
    assert result["mean"] == pytest.approx(np.mean(defined_points))


def test_paired_gap_of_identical_scores_is_exactly_zero():
    labels, scores = _multilabel(500, 4)
    gap = auc.bootstrap_auroc_gap(labels, scores, scores.copy(), num_resamples=200)
    assert gap["mean_gap"] == 0.0
    assert gap["mean_gap_ci"] == [0.0, 0.0]
    assert gap["per_label_gap"] == [0.0] * 4
    assert gap["per_label_gap_ci"] == [[0.0, 0.0]] * 4


def test_paired_gap_detects_a_worse_classifier():
    labels, strong = _multilabel(1000, 3, signal=1.5, seed=1)
    weak = 0.5 * labels + np.random.default_rng(2).normal(size=labels.shape)
    gap = auc.bootstrap_auroc_gap(labels, strong, weak, num_resamples=200, return_samples=True)
    assert gap["mean_gap"] == pytest.approx(gap["mean_a"] - gap["mean_b"])
    low, high = gap["mean_gap_ci"]
    assert 0.0 < low <= gap["mean_gap"] <= high
    assert gap["samples_mean_gap"].shape == (200,)
    # The same seed resamples the same cases as bootstrap_auroc.
    a = auc.bootstrap_auroc(labels, strong, num_resamples=200, return_samples=True)
    b = auc.bootstrap_auroc(labels, weak, num_resamples=200, return_samples=True)
    assert a["mean"] == gap["mean_a"]
    np.testing.assert_array_equal(
        a["samples_per_label"] - b["samples_per_label"], gap["samples_per_label_gap"]
    )


@pytest.mark.parametrize("kind", ["random", "tied", "constant", "all_positive"])
def test_average_precision_matches_sklearn(kind):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(np.float64)
    scores = {
        "random": y * 0.8 + rng.normal(size=300),
        "tied": np.round(y * 0.5 + rng.normal(size=300), 1),
        "constant": np.full(300, 0.3),
        "all_positive": rng.normal(size=300),
    }[kind]
    if kind == "all_positive":
        y = np.ones(300)
    got = auc.average_precision(y, scores)
    assert got == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_average_precision_without_positives_is_nan():
    assert math.isnan(auc.average_precision(np.zeros(5), np.arange(5.0)))


def test_weighted_average_precision_equals_ap_of_the_explicit_resample():
    rng = np.random.default_rng(3)
    y = (rng.random(80) < 0.3).astype(np.float64)
    scores = np.round(y + rng.normal(size=80), 1)
    draws = rng.integers(0, 80, size=80)
    weights = np.bincount(draws, minlength=80).astype(np.float64)[:, None]
    got = auc._weighted_average_precision(y, scores, weights)[0]
    assert got == pytest.approx(auc.average_precision(y[draws], scores[draws]), abs=1e-12)


def test_bootstrap_auprc_interval_and_chance_level():
    labels, scores = _multilabel(400, 3, signal=1.5, seed=4)
    result = auc.bootstrap_auprc(labels, scores, num_resamples=200, seed=0)
    for value, (low, high), prevalence in zip(
        result["per_label"], result["per_label_ci"], labels.mean(0), strict=True
    ):
        assert low <= value <= high
        assert low > prevalence  # a real signal beats the prevalence, AUPRC's chance level
    json.dumps(result)


def _delong_brute_force(y, a, b):
    """The published formula with explicit psi matrices: O(m n), for checking only."""
    pos, neg = y == 1, y == 0
    comps = []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = pos.sum(), neg.sum()
    s10 = np.cov(np.stack([c[1] for c in comps]))
    s01 = np.cov(np.stack([c[2] for c in comps]))
    var = s10[0, 0] / m + s01[0, 0] / n + s10[1, 1] / m + s01[1, 1] / n
    var -= 2 * (s10[0, 1] / m + s01[0, 1] / n)
    return comps[0][0] - comps[1][0], math.sqrt(var)


@pytest.mark.parametrize("tied", [False, True])
def test_delong_matches_the_structural_components_formula(tied):
    rng = np.random.default_rng(5)
    y = (rng.random(250) < 0.3).astype(np.float64)
    a = y * 1.2 + rng.normal(size=250)
    b = y * 0.6 + 0.5 * a + rng.normal(size=250)  # correlated with a, as TRTR and TSTR are
    if tied:
        a, b = np.round(a, 1), np.round(b, 1)
    result = auc.delong_test(y, a, b)
    diff, se = _delong_brute_force(y, a, b)
    assert result["difference"] == pytest.approx(diff, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    z = diff / se
    assert result["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)


def test_delong_identical_scores_and_a_clearly_worse_classifier():
    rng = np.random.default_rng(6)
    y = (rng.random(400) < 0.4).astype(np.float64)
    good = y * 2.0 + rng.normal(size=400)
    same = auc.delong_test(y, good, good)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    worse = auc.delong_test(y, good, rng.normal(size=400))
    assert worse["difference"] > 0.3 and worse["p_value"] < 1e-6
    # Its SE agrees with a paired bootstrap's spread of the difference.
    gap = auc.bootstrap_auroc_gap(
        y[:, None], good[:, None], rng.normal(size=(400, 1)), num_resamples=400, return_samples=True
    )
    boot = auc.delong_test(y, good, rng.normal(size=400))
    assert np.std(gap["samples_per_label_gap"][:, 0]) == pytest.approx(boot["se"], rel=0.25)
    assert auc.delong_test(np.ones(5), good[:5], good[:5])["p_value"] is None


def test_roc_curve_matches_sklearn_and_its_area_is_the_auc():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(7)
    y = (rng.random(60) < 0.4).astype(np.float64)
    s = np.round(y + rng.normal(size=60), 1)
    got = auc.roc_curve(y, s, max_points=1000)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(got["fpr"], fpr)
    np.testing.assert_allclose(got["tpr"], tpr)
    assert np.trapezoid(got["tpr"], got["fpr"]) == pytest.approx(auc.roc_auc(y, s))
    thin = auc.roc_curve(y, s, max_points=5)
    assert len(thin["fpr"]) == 5 and thin["fpr"][0] == 0.0 and thin["tpr"][-1] == 1.0
