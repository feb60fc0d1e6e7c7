"""Utility of a synthetic dataset: what the TRTR / TSTR comparison is computed on.

`train/classifier.py` saves test-split scores for the classifier trained on real data
(TRTR) and the one trained on synthetic data (TSTR), both on the same real test cases
(`load_predictions`); the `evaluate` stage (`synthjax/stages/evaluate.py`) keeps the labels
with enough positives and negatives (`evaluated_labels`), scores them with the statistics of
`auc.py`, and does the same per exact label combination (`combination_log_scores`,
`combination_membership`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthjax.core.workdir import Run


def combination_log_scores(probs: Any, combos: Any) -> np.ndarray:
    """float64[N, C]: log-probability of each exact label combination.

    A multi-label classifier's sigmoid outputs p[N, K], read as independent label
    probabilities, score combination c (multi-hot [K]) by sum_k log(p_k if c_k else
    1 - p_k). Their one-vs-rest AUROC says how well the classifier singles out the cases of
    each combination: the per-combination view of utility.
    """
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1.0 - 1e-7)
    c = np.asarray(combos, np.float64)
    return np.log(p) @ c.T + np.log1p(-p) @ (1.0 - c).T


def combination_membership(labels: Any, combos: Any) -> np.ndarray:
    """float64[N, C]: 1 where case n's label vector is exactly combination c."""
    labels = np.asarray(labels) > 0.5
    combos = np.asarray(combos) > 0.5
    return np.all(labels[:, None, :] == combos[None, :, :], axis=-1).astype(np.float64)


def load_predictions(run: Run, stage: str) -> dict[str, np.ndarray]:
    with (run.stage_dir(stage) / "test_predictions.npz").open("rb") as f:
        z = np.load(f)
        return {k: z[k] for k in z.files}


def evaluated_labels(labels: np.ndarray, min_positives: int) -> np.ndarray:
    """bool[K]: labels with enough positive and negative test images for a stable AUROC."""
    pos = labels.sum(0)
    neg = len(labels) - pos
    return (pos >= max(1, min_positives)) & (neg >= max(1, min_positives))
