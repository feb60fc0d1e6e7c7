"""Utility of a synthetic dataset: what the TRTR / TSTR comparison is computed on.

`train/classifier.py` saves test-split scores for the classifier trained on real data
(TRTR) and the one trained on synthetic data (TSTR), both on the same real test cases
(`load_predictions`); the `evaluate` stage (`synthjax/stages/evaluate.py`) keeps the labels
with enough positives and negatives (`evaluated_labels`), scores them with the statistics of
`auc.py`, and does the same per exact label combination (`combination_log_scores`,
`combination_membership`). Intervals and tests resample patients by default
(`INTERVAL_LEVELS`): the saved scores are matched to the test images' patients by
`prediction_patients`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthjax.core.workdir import Run

# What the bootstrap intervals and DeLong's test resample (`evaluate.interval_level`):
# patients (all the test images of a drawn patient; images of one patient are correlated)
# or single images, as the study did.
INTERVAL_LEVELS = ("patient", "image")


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


def prediction_patients(
    patients: Any, record_labels: Any, predicted_labels: Any, *, split: str = "test"
) -> np.ndarray:
    """str[N]: the patient of each saved prediction, checked to line up with the records.

    The classifier stages score the prepared split's kept records in subset order and save
    their labels with the scores; `patients` and `record_labels` are those records'
    (`ImageSource.patients` / `.labels` at the subset's indices), in that order.

    Raises:
      RuntimeError: the predictions are not of these records (a count or label mismatch):
        the classifier stages ran on another preparation of the data.
    """
    patients = np.asarray(patients)
    record_labels = np.asarray(record_labels, np.float32)
    predicted_labels = np.asarray(predicted_labels, np.float32)
    if patients.shape != record_labels.shape[:1] or not np.array_equal(
        record_labels, predicted_labels
    ):
        raise RuntimeError(
            f"the saved {split} predictions ({predicted_labels.shape[0]} images) are not the "
            f"prepared {split} split's {record_labels.shape[0]} kept images in order: rerun "
            "the classifier stages on this preparation (delete their directories)"
        )
    return patients
