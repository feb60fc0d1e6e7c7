"""Utility of a synthetic dataset: per-label ROC-AUC, mean AUROC and their uncertainty.

Sits at the end of the pipeline: `train/classifier.py` produces test-split scores for the
classifier trained on real data (TRTR) and the one trained on synthetic data (TSTR), both
scored on the same real test cases; `eval/` turns them into the headline numbers of
report.json with this module. Pure numpy, no model code.

An AUC below 0.5 is reported as it is. The original study flipped such values to 1 - AUC,
which hides a classifier that learned the wrong direction and biases the mean upwards.

Bootstrap resamples are represented as case multiplicities (how often each test case was
drawn), so a resample's AUC comes from one pass over cases sorted once per label instead of a
fresh sort per resample; a paired comparison just reuses the same multiplicities.
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


def _resample_blocks(num_cases: int, num_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yields float64[N, b] case multiplicities of bootstrap resamples, block by block.

    Case-major so that selecting one label's positives or negatives copies whole rows.
    Indices are drawn one resample at a time from a single generator, so resample r is the
    same whatever the block size and whichever function (single or paired) asks for it.
    """
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // max(num_cases, 1))
    done = 0
    while done < num_resamples:
        b = min(block, num_resamples - done)
        draws = np.stack([rng.integers(0, num_cases, size=num_cases) for _ in range(b)])
        # Case i of resample r lands in bin i * b + r, giving the [N, b] layout directly.
        counts = np.bincount((draws * b + np.arange(b)[:, None]).ravel(), minlength=b * num_cases)
        yield counts.reshape(num_cases, b).astype(np.float64)
        done += b


def _bootstrap_per_label(
    labels: np.ndarray, score_sets: list[np.ndarray], num_resamples: int, seed: int
) -> list[np.ndarray]:
    """float64[B, K] resampled per-label AUCs for each score set, on shared resamples."""
    num_cases, num_labels = labels.shape
    out = [np.empty((num_resamples, num_labels)) for _ in score_sets]
    row = 0
    for weights in _resample_blocks(num_cases, num_resamples, seed):
        rows = slice(row, row + weights.shape[1])
        for k in range(num_labels):
            for result, scores in zip(out, score_sets, strict=True):
                result[rows, k] = _weighted_auc(labels[:, k], scores[:, k], weights)
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


def bootstrap_auroc(
    labels: Any,
    scores: Any,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    return_samples: bool = False,
) -> dict[str, Any]:
    """Per-label and mean AUROC with percentile bootstrap intervals over test cases.

    Test cases are resampled with replacement. A label with a single class in a resample is
    skipped for that resample (its interval uses the other resamples), and that resample's
    mean AUROC is taken over the labels it does define.

    Args:
      labels: float[N, K] multi-hot 0/1 of the test cases.
      scores: float[N, K] classifier outputs for the same cases.
      num_resamples: number of bootstrap resamples B.
      seed: seed of the resampling; the same seed and N give the same resamples.
      confidence: coverage of the two-sided percentile intervals.
      return_samples: also return the raw resampled values as numpy arrays.

    Returns:
      A dict, JSON-serialisable unless `return_samples`; undefined values are None:
        "num_cases", "num_labels", "num_resamples", "seed", "confidence": the settings.
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
    point = per_label_auroc(labels, scores)
    (samples,) = _bootstrap_per_label(labels, [scores], num_resamples, seed)
    samples_mean = _row_nanmean(samples)
    result: dict[str, Any] = {
        "num_cases": int(labels.shape[0]),
        "num_labels": int(labels.shape[1]),
        "num_resamples": int(num_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
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
) -> dict[str, Any]:
    """Paired bootstrap of the AUROC difference a - b on the same test cases.

    Typical use: a = TRTR scores, b = TSTR scores on the real test split, giving the utility
    gap. Both score sets are evaluated on the same resampled cases, so case difficulty
    cancels and the interval is much tighter than combining two separate intervals.

    Args:
      labels: float[N, K] multi-hot 0/1 of the test cases.
      scores_a: float[N, K] outputs of classifier a on those cases.
      scores_b: float[N, K] outputs of classifier b on those cases.
      num_resamples, seed, confidence, return_samples: as in `bootstrap_auroc`; the same
        seed gives the same resamples as `bootstrap_auroc`.

    Returns:
      A dict, JSON-serialisable unless `return_samples`; undefined values are None:
        "num_cases", "num_labels", "num_resamples", "seed", "confidence": the settings.
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
    point_a = per_label_auroc(labels, scores_a)
    point_b = per_label_auroc(labels, scores_b)
    samples_a, samples_b = _bootstrap_per_label(labels, [scores_a, scores_b], num_resamples, seed)
    # Definedness depends only on the labels, so a and b skip the same labels per resample.
    samples_gap = samples_a - samples_b
    samples_mean_gap = _row_nanmean(samples_a) - _row_nanmean(samples_b)
    mean_a, mean_b = mean_auroc(point_a), mean_auroc(point_b)
    result: dict[str, Any] = {
        "num_cases": int(labels.shape[0]),
        "num_labels": int(labels.shape[1]),
        "num_resamples": int(num_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
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
