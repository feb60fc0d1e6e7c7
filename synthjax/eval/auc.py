"""Areas under curves: per-label ROC-AUC and AUPRC, their bootstrap intervals, paired gaps,
DeLong's test and the ROC curve itself; at image level or at patient (cluster) level.

The statistics every evaluation of scores against 0/1 labels uses: the utility of the
synthetic data (TRTR / TSTR, `utility.py`), label fidelity, the discrimination test, and the
classifier's validation AUROC during training. Pure numpy, no model code.

An AUC below 0.5 is reported as it is. The original study flipped such values to 1 - AUC,
which hides a classifier that learned the wrong direction and biases the mean upwards.

Bootstrap resamples are represented as case multiplicities (how often each test case was
drawn), so a resample's AUC comes from one pass over cases sorted once per label instead of a
fresh sort per resample; a paired comparison just reuses the same multiplicities.

Test images of one patient are not independent (a CT series has 16-32 slices, a CheXpert
patient several studies), so every interval and test takes `clusters=` (an id per case, e.g.
the patient): the bootstrap then resamples clusters with replacement and takes all their
cases, and DeLong's test becomes Obuchowski's (1997) clustered version. `clusters=None` is
the image-level statistic, each case its own cluster, and a case-per-cluster `clusters`
gives exactly the same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

# Resamples are processed in blocks of about this many (case, resample) entries: 4 MB per
# float64 array stays cache-friendly (measured 1.6x faster than 16 MB blocks) and bounds
# memory whatever the test-set size. Results do not depend on the block size.
_BLOCK_ENTRIES = 500_000


def _check_binary(labels: np.ndarray, what: str) -> None:
    if not np.all((labels == 0) | (labels == 1)):
        bad = np.unique(labels[(labels != 0) & (labels != 1)])[:5]
        raise ValueError(
            f"{what} must hold only 0 and 1 (map uncertain labels before scoring); "
            f"found {bad.tolist()}"
        )


def _check_pair(labels: Any, scores: Any, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != ndim or labels.shape != scores.shape:
        want = "[N]" if ndim == 1 else "[N, K]"
        raise ValueError(
            f"labels and scores must both have shape {want}; got labels {labels.shape} "
            f"and scores {scores.shape}"
        )
    _check_binary(labels, "labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf; the classifier output is broken")
    return labels, scores


def _weighted_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one label under several case weightings (bootstrap multiplicities).

    Args:
      y_true: float64[N] of 0/1.
      scores: float64[N].
      weights: float64[N, B] non-negative integer multiplicities, one column per weighting;
        a column of ones is the plain data set.

    Returns:
      float64[B]: the Mann-Whitney AUC with ties counted as one half (sklearn's
      roc_auc_score on the resampled data); NaN where a column has no positive or no
      negative weight. With integer weights every sum is exact, so the only rounding is the
      final division.
    """
    positive = y_true == 1
    neg_scores = scores[~positive]
    neg_order = np.argsort(neg_scores, kind="stable")
    neg_sorted = neg_scores[neg_order]
    neg_rows = np.flatnonzero(~positive)[neg_order]
    # neg_cum[j] = weight of the j lowest-scoring negatives, for every weighting at once.
    neg_cum = np.zeros((neg_rows.size + 1, weights.shape[1]))
    np.cumsum(weights[neg_rows], axis=0, out=neg_cum[1:])
    pos_scores = scores[positive]
    below = neg_cum[np.searchsorted(neg_sorted, pos_scores, side="left")]
    through = neg_cum[np.searchsorted(neg_sorted, pos_scores, side="right")]
    pos_w = weights[positive]
    # A positive beats the negatives strictly below it and ties with those at its score:
    # below + (through - below) / 2.
    numerator = 0.5 * np.einsum("pb,pb->b", pos_w, below + through)
    num_pos = pos_w.sum(axis=0)
    num_neg = neg_cum[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = numerator / (num_pos * num_neg)
    return np.where((num_pos > 0) & (num_neg > 0), auc, np.nan)


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve of one binary label.

    Args:
      y_true: float[N] of 0/1 (ints and bools are fine).
      scores: float[N], higher = more likely positive.

    Returns:
      The Mann-Whitney statistic with midranks for ties, equal to sklearn's roc_auc_score;
      NaN when only one class is present. Never flipped when below 0.5.
    """
    y_true, scores = _check_pair(y_true, scores, ndim=1)
    if y_true.size == 0:
        return math.nan
    return float(_weighted_auc(y_true, scores, np.ones((y_true.size, 1)))[0])


def per_label_auroc(labels: Any, scores: Any) -> np.ndarray:
    """ROC-AUC of each label column.

    Args:
      labels: float[N, K] multi-hot 0/1.
      scores: float[N, K].

    Returns:
      float64[K]; NaN for a label whose column has only one class.
    """
    labels, scores = _check_pair(labels, scores, ndim=2)
    ones = np.ones((labels.shape[0], 1))
    return np.array(
        [_weighted_auc(labels[:, k], scores[:, k], ones)[0] for k in range(labels.shape[1])],
        dtype=np.float64,
    )


def mean_auroc(per_label: Any) -> float:
    """Mean of per-label AUCs over the defined (non-NaN) labels; NaN if none is defined.

    Args:
      per_label: float[K], as returned by `per_label_auroc`.
    """
    per_label = np.asarray(per_label, dtype=np.float64)
    defined = per_label[~np.isnan(per_label)]
    return float(defined.mean()) if defined.size else math.nan


def cluster_index(clusters: Any, num_cases: int) -> tuple[np.ndarray | None, int]:
    """(int64[N] cluster number of each case, number of clusters G); (None, N) for None.

    Clusters are numbered by first appearance, so when every case is its own cluster,
    case i is cluster i and the cluster bootstrap draws exactly the image-level resamples.

    Args:
      clusters: None, or [N] ids of any sortable kind (patient id strings, integers).
      num_cases: N.
    """
    if clusters is None:
        return None, num_cases
    clusters = np.asarray(clusters)
    if clusters.shape != (num_cases,):
        raise ValueError(
            f"clusters must hold one id per test case, shape ({num_cases},); got {clusters.shape}"
        )
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    by_appearance = np.empty(first.size, np.int64)
    by_appearance[np.argsort(first, kind="stable")] = np.arange(first.size)
    return by_appearance[inverse.reshape(-1)], int(first.size)


def _resample_blocks(
    num_cases: int, num_resamples: int, seed: int, cluster_of: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Yields float64[N, b] case multiplicities of bootstrap resamples, block by block.

    Case-major so that selecting one label's positives or negatives copies whole rows.
    Indices are drawn one resample at a time from a single generator, so resample r is the
    same whatever the block size and whichever function (single or paired) asks for it.
    With `cluster_of` (int64[N], `cluster_index`) the G clusters are drawn with replacement
    and each case counts as often as its cluster was drawn.
    """
    num_units = num_cases if cluster_of is None else int(cluster_of.max(initial=-1)) + 1
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // max(num_cases, 1))
    done = 0
    while done < num_resamples:
        b = min(block, num_resamples - done)
        draws = np.stack([rng.integers(0, num_units, size=num_units) for _ in range(b)])
        # Unit i of resample r lands in bin i * b + r, giving the [G, b] layout directly.
        counts = np.bincount((draws * b + np.arange(b)[:, None]).ravel(), minlength=b * num_units)
        counts = counts.reshape(num_units, b).astype(np.float64)
        yield counts if cluster_of is None else counts[cluster_of]
        done += b


def _weighted_average_precision(
    y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision (area under the precision-recall curve) under case weightings.

    Args and layout as `_weighted_auc`. AP = sum over distinct score thresholds, from the
    highest down, of (recall gained at the threshold) x (precision at it): sklearn's
    average_precision_score on the resampled data, cases with tied scores entering together.
    NaN where a column has no positive weight.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    w = weights[order]
    tp = np.cumsum(w * y_true[order, None], axis=0)
    seen = np.cumsum(w, axis=0)
    # The last case of each run of equal scores closes that threshold.
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp, seen = tp[last], seen[last]
    gained = np.diff(tp, axis=0, prepend=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / np.maximum(seen, 1e-300), 0.0)
        ap = np.einsum("tb,tb->b", gained, precision) / tp[-1]
    return np.where(tp[-1] > 0, ap, np.nan)


_METRICS = {"auroc": _weighted_auc, "auprc": _weighted_average_precision}


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision of one binary label (sklearn's average_precision_score); NaN if
    there is no positive case. Its chance level is the prevalence, not 0.5."""
    y_true, scores = _check_pair(y_true, scores, ndim=1)
    if y_true.size == 0:
        return math.nan
    return float(_weighted_average_precision(y_true, scores, np.ones((y_true.size, 1)))[0])


def per_label_metric(labels: Any, scores: Any, metric: str = "auroc") -> np.ndarray:
    """float64[K]: `metric` ('auroc' or 'auprc') of each label column; NaN where undefined."""
    labels, scores = _check_pair(labels, scores, ndim=2)
    fn = _METRICS[metric]
    ones = np.ones((labels.shape[0], 1))
    return np.array(
        [fn(labels[:, k], scores[:, k], ones)[0] for k in range(labels.shape[1])],
        dtype=np.float64,
    )


def _bootstrap_per_label(
    labels: np.ndarray,
    score_sets: list[np.ndarray],
    num_resamples: int,
    seed: int,
    metric: str = "auroc",
    cluster_of: np.ndarray | None = None,
) -> list[np.ndarray]:
    """float64[B, K] resampled per-label metrics for each score set, on shared resamples."""
    fn = _METRICS[metric]
    num_cases, num_labels = labels.shape
    out = [np.empty((num_resamples, num_labels)) for _ in score_sets]
    row = 0
    for weights in _resample_blocks(num_cases, num_resamples, seed, cluster_of):
        rows = slice(row, row + weights.shape[1])
        for k in range(num_labels):
            for result, scores in zip(out, score_sets, strict=True):
                result[rows, k] = fn(labels[:, k], scores[:, k], weights)
        row += weights.shape[1]
    return out


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """float64[B] mean over the non-NaN entries of each row of float[B, K]; NaN if none."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _interval(samples: np.ndarray, confidence: float) -> list[float | None]:
    """Percentile interval [low, high] of the non-NaN samples; [None, None] if there are none."""
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [None, None]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _check_bootstrap_args(num_resamples: int, confidence: float) -> None:
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1, got {num_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _settings(
    labels: np.ndarray, num_resamples: int, seed: int, confidence: float, num_clusters: int
) -> dict[str, Any]:
    """The bootstrap's settings, first in every result."""
    return {
        "num_cases": int(labels.shape[0]),
        "num_clusters": int(num_clusters),
        "num_labels": int(labels.shape[1]),
        "num_resamples": int(num_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
    }


def bootstrap_auroc(
    labels: Any,
    scores: Any,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    return_samples: bool = False,
    metric: str = "auroc",
    clusters: Any = None,
) -> dict[str, Any]:
    """Per-label and mean AUROC with percentile bootstrap intervals over test cases.

    Test cases are resampled with replacement; with `clusters`, clusters are (all the cases
    of each drawn cluster, as often as it was drawn). A label with a single class in a resample is
    skipped for that resample (its interval uses the other resamples), and that resample's
    mean AUROC is taken over the labels it does define.

    Args:
      labels: float[N, K] multi-hot 0/1 of the test cases.
      scores: float[N, K] classifier outputs for the same cases.
      num_resamples: number of bootstrap resamples B.
      seed: seed of the resampling; the same seed and N give the same resamples.
      confidence: coverage of the two-sided percentile intervals.
      return_samples: also return the raw resampled values as numpy arrays.
      metric: 'auroc', or 'auprc' for average precision (`bootstrap_auprc`).
      clusters: None (image level), or [N] cluster ids (e.g. patient ids) of the cases.

    Returns:
      A dict, JSON-serialisable unless `return_samples`; undefined values are None:
        "num_cases", "num_clusters", "num_labels", "num_resamples", "seed", "confidence":
          the settings ("num_clusters" = "num_cases" at image level).
        "per_label": list[float | None] of K point estimates on the full test set.
        "per_label_ci": list of K [low, high] intervals.
        "per_label_resamples_defined": list[int] of K, resamples in which the label had
          both classes.
        "mean": mean AUROC over defined labels; "mean_ci": its [low, high] interval.
      With `return_samples`, also "samples_per_label": float64[B, K] (NaN where undefined)
      and "samples_mean": float64[B].
    """
    labels, scores = _check_pair(labels, scores, ndim=2)
    _check_bootstrap_args(num_resamples, confidence)
    cluster_of, num_clusters = cluster_index(clusters, labels.shape[0])
    point = per_label_metric(labels, scores, metric)
    (samples,) = _bootstrap_per_label(labels, [scores], num_resamples, seed, metric, cluster_of)
    samples_mean = _row_nanmean(samples)
    result: dict[str, Any] = {
        **_settings(labels, num_resamples, seed, confidence, num_clusters),
        "per_label": [_json_float(v) for v in point],
        "per_label_ci": [_interval(samples[:, k], confidence) for k in range(point.size)],
        "per_label_resamples_defined": np.sum(~np.isnan(samples), axis=0).tolist(),
        "mean": _json_float(mean_auroc(point)),
        "mean_ci": _interval(samples_mean, confidence),
    }
    if return_samples:
        result["samples_per_label"] = samples
        result["samples_mean"] = samples_mean
    return result


def bootstrap_auroc_gap(
    labels: Any,
    scores_a: Any,
    scores_b: Any,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    return_samples: bool = False,
    clusters: Any = None,
) -> dict[str, Any]:
    """Paired bootstrap of the AUROC difference a - b on the same test cases.

    Typical use: a = TRTR scores, b = TSTR scores on the real test split, giving the utility
    gap. Both score sets are evaluated on the same resampled cases, so case difficulty
    cancels and the interval is much tighter than combining two separate intervals.

    Args:
      labels: float[N, K] multi-hot 0/1 of the test cases.
      scores_a: float[N, K] outputs of classifier a on those cases.
      scores_b: float[N, K] outputs of classifier b on those cases.
      num_resamples, seed, confidence, return_samples, clusters: as in `bootstrap_auroc`;
        the same seed and clusters give the same resamples as `bootstrap_auroc`.

    Returns:
      A dict, JSON-serialisable unless `return_samples`; undefined values are None:
        "num_cases", "num_clusters", "num_labels", "num_resamples", "seed", "confidence":
          the settings.
        "per_label_a", "per_label_b": list[float | None] of K point estimates.
        "per_label_gap": list of K point differences a - b.
        "per_label_gap_ci": list of K [low, high] intervals of the difference.
        "per_label_resamples_defined": list[int] of K.
        "mean_a", "mean_b", "mean_gap": mean AUROCs over defined labels and their difference.
        "mean_gap_ci": [low, high] interval of the mean difference.
      With `return_samples`, also "samples_per_label_gap": float64[B, K] and
      "samples_mean_gap": float64[B].
    """
    labels, scores_a = _check_pair(labels, scores_a, ndim=2)
    _, scores_b = _check_pair(labels, scores_b, ndim=2)
    _check_bootstrap_args(num_resamples, confidence)
    cluster_of, num_clusters = cluster_index(clusters, labels.shape[0])
    point_a = per_label_auroc(labels, scores_a)
    point_b = per_label_auroc(labels, scores_b)
    samples_a, samples_b = _bootstrap_per_label(
        labels, [scores_a, scores_b], num_resamples, seed, cluster_of=cluster_of
    )
    # Definedness depends only on the labels, so a and b skip the same labels per resample.
    samples_gap = samples_a - samples_b
    samples_mean_gap = _row_nanmean(samples_a) - _row_nanmean(samples_b)
    mean_a, mean_b = mean_auroc(point_a), mean_auroc(point_b)
    result: dict[str, Any] = {
        **_settings(labels, num_resamples, seed, confidence, num_clusters),
        "per_label_a": [_json_float(v) for v in point_a],
        "per_label_b": [_json_float(v) for v in point_b],
        "per_label_gap": [_json_float(v) for v in point_a - point_b],
        "per_label_gap_ci": [_interval(samples_gap[:, k], confidence) for k in range(point_a.size)],
        "per_label_resamples_defined": np.sum(~np.isnan(samples_gap), axis=0).tolist(),
        "mean_a": _json_float(mean_a),
        "mean_b": _json_float(mean_b),
        "mean_gap": _json_float(mean_a - mean_b),
        "mean_gap_ci": _interval(samples_mean_gap, confidence),
    }
    if return_samples:
        result["samples_per_label_gap"] = samples_gap
        result["samples_mean_gap"] = samples_mean_gap
    return result


def bootstrap_auprc(labels: Any, scores: Any, **kwargs: Any) -> dict[str, Any]:
    """`bootstrap_auroc` for the area under the precision-recall curve (average precision).

    AUPRC complements AUROC on rare labels: its chance level is the label's prevalence,
    and it weighs how clean the top of the ranking is, which is what a screening list needs.
    """
    return bootstrap_auroc(labels, scores, metric="auprc", **kwargs)


def _midranks(x: np.ndarray) -> np.ndarray:
    """float64[N] 1-based ranks of x, ties sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Runs of equal values: each gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _structural_components(
    positive: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """DeLong's structural components of one score set, by midranks (Sun & Xu 2014).

    Returns (V10 float64[M]: share of the negatives each positive beats, ties one half;
    V01 float64[N]: share of the positives beating each negative; the AUC).
    """
    m, n = int(positive.sum()), int((~positive).sum())
    pos, neg = scores[positive], scores[~positive]
    t_all = _midranks(np.concatenate([pos, neg]))
    t_pos, t_neg = _midranks(pos), _midranks(neg)
    v10 = (t_all[:m] - t_pos) / n
    v01 = 1.0 - (t_all[m:] - t_neg) / m
    return v10, v01, (t_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)


def _clustered_covariance(
    positive: np.ndarray,
    cluster_of: np.ndarray,
    num_clusters: int,
    v10: np.ndarray,
    v01: np.ndarray,
    aucs: np.ndarray,
) -> np.ndarray | None:
    """float64[R, R] covariance of R correlated AUCs on clustered cases (Obuchowski 1997).

    Args:
      positive: bool[N] of the cases; cluster_of: int64[N] (`cluster_index`), G clusters.
      v10: float64[R, M] and v01: float64[R, N-M], the structural components of each score
        set (`_structural_components`); aucs: float64[R].

    Each cluster i sums its components, X_i = sum of its V10 and Y_i = sum of its V01, and
    centres them on its share of the AUC (m_i and n_i = its positive and negative cases):
      S10 = I10 / ((I10 - 1) M) sum_i (X_i - m_i A)(X_i - m_i A)'   (I10 clusters with m_i > 0)
      S01 = I01 / ((I01 - 1) N) sum_i (Y_i - n_i A)(Y_i - n_i A)'   (I01 clusters with n_i > 0)
      S11 = I / (I - 1) sum_i (X_i - m_i A)(Y_i - n_i A)'           (all I clusters)
      cov = S10 / M + S01 / N + (S11 + S11') / (M N).
    With one case per cluster S11 = 0, S10 and S01 are the components' sample covariances,
    and this is DeLong's covariance. None when the positives or the negatives lie in fewer
    than two clusters: their between-cluster variance cannot be estimated then.
    """
    pos_cluster, neg_cluster = cluster_of[positive], cluster_of[~positive]
    m_i = np.bincount(pos_cluster, minlength=num_clusters)
    n_i = np.bincount(neg_cluster, minlength=num_clusters)
    big_m, big_n = int(m_i.sum()), int(n_i.sum())
    x_dev = np.stack([np.bincount(pos_cluster, r, num_clusters) for r in v10]) - np.outer(aucs, m_i)
    y_dev = np.stack([np.bincount(neg_cluster, r, num_clusters) for r in v01]) - np.outer(aucs, n_i)

    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        return None
    s10 = i10 / ((i10 - 1) * big_m) * (x_dev @ x_dev.T)
    s01 = i01 / ((i01 - 1) * big_n) * (y_dev @ y_dev.T)
    s11 = num_clusters / (num_clusters - 1) * (x_dev @ y_dev.T)
    return s10 / big_m + s01 / big_n + (s11 + np.transpose(s11)) / (big_m * big_n)


def delong_test(
    y_true: Any, scores_a: Any, scores_b: Any, *, clusters: Any = None
) -> dict[str, float | None]:
    """DeLong's paired test of two correlated ROC-AUCs on the same cases.

    DeLong, DeLong & Clarke-Pearson (1988), with the midrank computation of Sun & Xu
    (2014). Each AUC is a Mann-Whitney statistic; its structural components (one per
    positive and one per negative case) give the covariance of the two AUCs, and
    z = (AUC_a - AUC_b) / SE is compared with a standard normal.

    With `clusters` ([N] ids, e.g. the patient of each image) the covariance is
    Obuchowski's (1997, Biometrics 53:567-578) for clustered data (`_clustered_covariance`):
    the components are summed per cluster, so correlated images of one patient no longer
    count as independent evidence. One case per cluster gives DeLong's test.

    Returns:
      {"auc_a", "auc_b", "difference", "se", "z", "p_value"} (two-sided). None where the
      label has a single class; "se", "z" and "p_value" None where, with `clusters`, its
      positives or negatives lie in a single cluster. When both score sets order the cases
      identically the difference and its SE are 0: z = 0 and p = 1.
    """
    y, a = _check_pair(y_true, scores_a, ndim=1)
    _, b = _check_pair(y, scores_b, ndim=1)
    cluster_of, num_clusters = cluster_index(clusters, y.size)
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return dict.fromkeys(("auc_a", "auc_b", "difference", "se", "z", "p_value"))
    components = [_structural_components(positive, s) for s in (a, b)]
    v10, v01 = (np.stack([c[i] for c in components]) for i in (0, 1))
    aucs = np.array([c[2] for c in components])
    if cluster_of is None:
        s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
        s01 = np.cov(v01) if n > 1 else np.zeros((2, 2))
        covariance = s10 / m + s01 / n
    else:
        covariance = _clustered_covariance(positive, cluster_of, num_clusters, v10, v01, aucs)
    if covariance is None:
        aucs_only = {"auc_a": aucs[0], "auc_b": aucs[1], "difference": aucs[0] - aucs[1]}
        return {k: float(v) for k, v in aucs_only.items()} | dict.fromkeys(("se", "z", "p_value"))
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ covariance @ contrast)
    difference = aucs[0] - aucs[1]
    se = math.sqrt(max(variance, 0.0))
    if se < 1e-12:
        z = 0.0 if abs(difference) < 1e-12 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    p_value = math.erfc(abs(z) / math.sqrt(2.0))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": float(difference),
        "se": se,
        "z": float(z),
        "p_value": float(p_value),
    }


def roc_curve(y_true: Any, scores: Any, max_points: int = 101) -> dict[str, list[float]]:
    """ROC curve points {"fpr", "tpr"} from (0, 0) to (1, 1), one per distinct threshold,
    thinned to about `max_points` (the ends kept) for plotting."""
    y, s = _check_pair(y_true, scores, ndim=1)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # close each run of tied scores
    tp = np.r_[0.0, np.cumsum(y)[last]]
    fp = np.r_[0.0, np.cumsum(1.0 - y)[last]]
    tpr = tp / tp[-1] if tp[-1] > 0 else np.zeros_like(tp)
    fpr = fp / fp[-1] if fp[-1] > 0 else np.zeros_like(fp)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
