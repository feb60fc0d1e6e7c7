"""Patient-level (clustered) statistics of synthjax.eval.auc: the cluster bootstrap against a
brute-force resampler, the clustered DeLong test (Obuchowski 1997) against the published
algorithm written out pair by pair, and both against the image-level versions."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from synthjax.eval import auc


def _clustered(num_patients=40, seed=0, num_labels=2, patient_effect=1.5, round_to=None):
    """A test set of patients with 1-9 images each: labels and scores shared within a patient.

    Returns (labels float[N, K], scores_a, scores_b float[N, K], patient ids str[N]), the
    images of a patient not adjacent (shuffled) so nothing relies on sorted clusters.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, size=num_patients)
    patient = np.repeat(np.arange(num_patients), sizes)
    n = patient.size
    sick = rng.random((num_patients, num_labels)) < 0.4
    labels = (sick[patient] & (rng.random((n, num_labels)) < 0.7)).astype(np.float64)
    effect = rng.normal(size=(num_patients, num_labels)) * patient_effect
    scores_a = labels + effect[patient] + rng.normal(size=(n, num_labels))
    effect_b = rng.normal(size=(num_patients, num_labels)) * patient_effect
    scores_b = 0.6 * labels + effect_b[patient] + rng.normal(size=(n, num_labels))
    if round_to is not None:  # ties within and across patients
        scores_a, scores_b = np.round(scores_a, round_to), np.round(scores_b, round_to)
    order = rng.permutation(n)
    ids = np.array([f"patient{p:05d}" for p in patient])
    return labels[order], scores_a[order], scores_b[order], ids[order]


def _brute_force_resamples(ids, num_resamples, seed):
    """Case index lists of a cluster bootstrap: draw patients with replacement (numbered by
    first appearance, the documented order), take all their images, in the drawn order."""
    first_seen = list(dict.fromkeys(ids.tolist()))
    members = {p: np.flatnonzero(ids == p) for p in first_seen}
    rng = np.random.default_rng(seed)
    for _ in range(num_resamples):
        draws = rng.integers(0, len(first_seen), size=len(first_seen))
        yield np.concatenate([members[first_seen[d]] for d in draws])


def _metric_or_nan(fn, y, s):
    return fn(y, s) if 0 < y.sum() < len(y) else math.nan


def test_cluster_index_numbers_clusters_by_first_appearance():
    index, count = auc.cluster_index(np.array(["b", "a", "b", "c", "a"]), 5)
    assert count == 3 and index.tolist() == [0, 1, 0, 2, 1]
    assert auc.cluster_index(None, 7) == (None, 7)
    with pytest.raises(ValueError, match="one id per test case"):
        auc.cluster_index(np.array(["a", "b"]), 3)


@pytest.mark.parametrize("metric", ["auroc", "auprc"])
def test_cluster_bootstrap_equals_a_brute_force_patient_resampler(metric):
    labels, scores, _, ids = _clustered(seed=1, round_to=1)
    num_resamples = 60
    result = auc.bootstrap_auroc(
        labels,
        scores,
        num_resamples=num_resamples,
        seed=7,
        metric=metric,
        clusters=ids,
        return_samples=True,
    )
    fn = roc_auc_score if metric == "auroc" else average_precision_score
    want = np.array(
        [
            [_metric_or_nan(fn, labels[idx, k], scores[idx, k]) for k in range(labels.shape[1])]
            for idx in _brute_force_resamples(ids, num_resamples, seed=7)
        ]
    )
    np.testing.assert_allclose(result["samples_per_label"], want, atol=1e-12)
    assert result["num_clusters"] == 40 and result["num_cases"] == len(ids)
    # The interval is the percentile interval of those resamples.
    means = np.nanmean(want, axis=1)
    np.testing.assert_allclose(result["mean_ci"], np.percentile(means, [2.5, 97.5]), atol=1e-12)


def test_cluster_bootstrap_of_the_gap_uses_the_same_patient_resamples():
    labels, scores_a, scores_b, ids = _clustered(seed=2)
    gap = auc.bootstrap_auroc_gap(
        labels, scores_a, scores_b, num_resamples=40, seed=3, clusters=ids, return_samples=True
    )
    want = np.array(
        [
            [
                roc_auc_score(labels[idx, k], scores_a[idx, k])
                - roc_auc_score(labels[idx, k], scores_b[idx, k])
                for k in range(labels.shape[1])
            ]
            for idx in _brute_force_resamples(ids, 40, seed=3)
        ]
    )
    np.testing.assert_allclose(gap["samples_per_label_gap"], want, atol=1e-12)


def test_one_image_per_cluster_reduces_exactly_to_the_image_level_bootstrap():
    labels, scores_a, scores_b, _ = _clustered(seed=3)
    n = len(labels)
    ids = np.random.default_rng(0).permutation(n).astype(str)  # unique, in no sorted order
    for fn, args in (
        (auc.bootstrap_auroc, (labels, scores_a)),
        (auc.bootstrap_auprc, (labels, scores_a)),
        (auc.bootstrap_auroc_gap, (labels, scores_a, scores_b)),
    ):
        image = fn(*args, num_resamples=50, seed=4, return_samples=True)
        single = fn(*args, num_resamples=50, seed=4, return_samples=True, clusters=ids)
        assert single["num_clusters"] == image["num_clusters"] == n
        for key, value in image.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(single[key], value)
            else:
                assert single[key] == value, key


def _obuchowski_brute_force(y, a, b, ids):
    """The published algorithm (Obuchowski 1997; the Cleveland Clinic / iMRMC doAUCcluster
    code), pair by pair: psi = 1, 1/2, 0 for every (positive, negative) pair."""
    pos, neg = y == 1, y == 0
    big_m, big_n = pos.sum(), neg.sum()
    clusters = list(dict.fromkeys(ids.tolist()))
    i_all = len(clusters)
    i_10 = len({c for c, p in zip(ids, pos, strict=True) if p})
    i_01 = len({c for c, q in zip(ids, neg, strict=True) if q})
    x_comp, y_comp, aucs = [], [], []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        theta = psi.mean()
        v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
        pos_ids, neg_ids = ids[pos], ids[neg]
        x_comp.append(np.array([v10[pos_ids == c].sum() for c in clusters]))
        y_comp.append(np.array([v01[neg_ids == c].sum() for c in clusters]))
        aucs.append(theta)
    m_i = np.array([np.sum(pos & (ids == c)) for c in clusters])
    n_i = np.array([np.sum(neg & (ids == c)) for c in clusters])
    dx = [x_comp[r] - m_i * aucs[r] for r in (0, 1)]
    dy = [y_comp[r] - n_i * aucs[r] for r in (0, 1)]

    def s10(r, s):
        return i_10 / ((i_10 - 1) * big_m) * np.sum(dx[r] * dx[s])

    def s01(r, s):
        return i_01 / ((i_01 - 1) * big_n) * np.sum(dy[r] * dy[s])

    def s11(r, s):
        return i_all / (i_all - 1) * np.sum(dx[r] * dy[s])

    var = [s10(r, r) / big_m + s01(r, r) / big_n + 2 * s11(r, r) / (big_m * big_n) for r in (0, 1)]
    cov = s10(0, 1) / big_m + s01(0, 1) / big_n + (s11(0, 1) + s11(1, 0)) / (big_m * big_n)
    se = math.sqrt(var[0] + var[1] - 2 * cov)
    z = (aucs[0] - aucs[1]) / se
    return aucs, se, z, math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.parametrize("seed,round_to", [(0, None), (1, 1), (2, 0), (3, None)])
def test_clustered_delong_matches_the_published_algorithm(seed, round_to):
    labels, scores_a, scores_b, ids = _clustered(seed=seed, num_labels=1, round_to=round_to)
    y, a, b = labels[:, 0], scores_a[:, 0], scores_b[:, 0]
    got = auc.delong_test(y, a, b, clusters=ids)
    aucs, se, z, p = _obuchowski_brute_force(y, a, b, ids)
    assert got["auc_a"] == pytest.approx(aucs[0], abs=1e-12)
    assert got["auc_b"] == pytest.approx(aucs[1], abs=1e-12)
    assert got["se"] == pytest.approx(se, rel=1e-9)
    assert got["z"] == pytest.approx(z, rel=1e-9)
    assert got["p_value"] == pytest.approx(p, rel=1e-8, abs=1e-15)


def test_clustered_delong_with_one_image_per_cluster_is_delongs_test():
    labels, scores_a, scores_b, _ = _clustered(seed=5, num_labels=1, round_to=1)
    y, a, b = labels[:, 0], scores_a[:, 0], scores_b[:, 0]
    image = auc.delong_test(y, a, b)
    single = auc.delong_test(y, a, b, clusters=np.arange(len(y))[::-1])
    for key, value in image.items():
        assert single[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_clustered_delong_is_undefined_when_all_positives_share_a_patient():
    """One positive patient: the positives' between-patient variance cannot be estimated, so
    there is no SE and no p-value (an SE of 0 for that part would overstate significance)."""
    labels, scores_a, scores_b, ids = _clustered(seed=6, num_labels=1)
    y, a, b = labels[:, 0].copy(), scores_a[:, 0], scores_b[:, 0]
    y[:] = 0.0
    y[ids == ids[0]] = 1.0  # every image of the first patient positive, all others negative
    got = auc.delong_test(y, a, b, clusters=ids)
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert got["difference"] == pytest.approx(got["auc_a"] - got["auc_b"], abs=1e-15)
    assert got["se"] is None and got["z"] is None and got["p_value"] is None
    assert auc.delong_test(y, a, b)["p_value"] is not None  # image level: 1 patient, n images


def _patients_with_slices(rng, num_patients=50, slices=10, mixed=False):
    """Many correlated images per patient (a CT series): the patient sets most of the score.
    Sick patients have mostly positive images; `mixed`: every patient's images are positive
    or negative independently, so positives and negatives share patients."""
    patient = np.repeat(np.arange(num_patients), slices)
    sick = np.ones(num_patients, bool) if mixed else rng.random(num_patients) < 0.5
    chance = 0.3 if mixed else 0.8
    y = (sick[patient] & (rng.random(patient.size) < chance)).astype(np.float64)
    shared = rng.normal(size=num_patients)[patient]
    a = 1.2 * y + 1.5 * rng.normal(size=num_patients)[patient] + shared + rng.normal(size=y.size)
    b = 0.8 * y + 1.5 * rng.normal(size=num_patients)[patient] + shared + rng.normal(size=y.size)
    return y, a, b, patient


@pytest.mark.parametrize("mixed", [False, True])
def test_clustered_delong_matches_the_real_spread_of_the_difference(mixed):
    """Over repeated draws of a clustered test set, the clustered SE matches the real spread
    of AUC_a - AUC_b. When a patient's images share its label the image-level SE understates
    it; patients with positive and negative images need no such correction here."""
    rng = np.random.default_rng(11)
    diffs, var_clustered, var_image = [], [], []
    for _ in range(300):
        y, a, b, patient = _patients_with_slices(rng, mixed=mixed)
        clustered = auc.delong_test(y, a, b, clusters=patient)
        diffs.append(clustered["difference"])
        var_clustered.append(clustered["se"] ** 2)
        var_image.append(auc.delong_test(y, a, b)["se"] ** 2)
    true_var = np.var(diffs, ddof=1)
    assert np.mean(var_clustered) / true_var == pytest.approx(1.0, abs=0.25)
    if not mixed:
        assert np.mean(var_image) / true_var < 0.5


def test_patient_level_intervals_are_wider_on_clustered_data():
    rng = np.random.default_rng(12)
    y, a, b, patient = _patients_with_slices(rng, num_patients=40)
    labels, scores_a, scores_b = y[:, None], a[:, None], b[:, None]

    def width(interval):
        return interval[1] - interval[0]

    opts = dict(num_resamples=300, seed=0)
    for fn, args, key in (
        (auc.bootstrap_auroc, (labels, scores_a), "mean_ci"),
        (auc.bootstrap_auprc, (labels, scores_a), "mean_ci"),
        (auc.bootstrap_auroc_gap, (labels, scores_a, scores_b), "mean_gap_ci"),
    ):
        image = fn(*args, **opts)[key]
        patient_level = fn(*args, **opts, clusters=patient)[key]
        assert width(patient_level) > 1.5 * width(image), fn.__name__
    assert auc.delong_test(y, a, b, clusters=patient)["se"] > 1.5 * auc.delong_test(y, a, b)["se"]
