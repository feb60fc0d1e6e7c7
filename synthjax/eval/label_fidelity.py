"""Label fidelity: does a generated image show the labels it was generated from?

The real-trained classifier (TRTR's, `classifier_real`) scores generated images; its
per-label ROC-AUC against the label vectors the generator was conditioned on is the label
fidelity (the "GAN-test" of Shmelkov et al. 2018, "train on real, test on synthetic").
0.5 means the labels left no trace in the images; the real test split's TRTR AUROC is
what a perfect generator would reach.

The conditioning strength asks the same of the pixels, without a classifier: for fixed
latents, how much does G's output change across label combinations, against how much it
changes across latents for a fixed combination (a ratio of standard deviations; 0 = G
ignores its labels).

Data flow: the GAN's monitor (`train/fd_monitor.py`) measures both at every FD evaluation
on the images it generates anyway (metrics.jsonl, TensorBoard) and can select the
generator by them (`gan.select`); `evaluate` measures label fidelity on the synthetic test
split with a bootstrap interval (report.json `label_fidelity_*`), and the verdict refuses a
release whose label fidelity is not above chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from synthjax.eval import auc


def label_fidelity(
    probs: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    *,
    min_positives: int = 1,
    num_resamples: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-label and mean AUROC of classifier scores against conditioning labels.

    Args:
      probs: float[N, K] the real-trained classifier's probabilities on generated images.
      labels: float[N, K] multi-hot 0/1 label vectors the images were generated from.
      label_names: K names.
      min_positives: labels with fewer positive or negative images stay out of the mean
        (listed under "labels_excluded"), as in the utility tables.
      num_resamples: bootstrap resamples for 95% intervals (0: point estimates only).

    Returns:
      {"auroc_mean", "auroc_mean_ci" (None without resamples), "per_label":
      {name: {"auroc", "auroc_ci"}}, "labels_excluded": {name: positives}, "num_images"}.
    """
    probs = np.asarray(probs, np.float64)
    labels = (np.asarray(labels) > 0.5).astype(np.float64)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(label_names):
        raise ValueError(
            f"probs {probs.shape} and labels {labels.shape} must both be [N, {len(label_names)}]"
        )
    pos = labels.sum(0)
    keep = (pos >= max(1, min_positives)) & (len(labels) - pos >= max(1, min_positives))
    names = [n for n, k in zip(label_names, keep, strict=True) if k]
    result: dict[str, Any] = {
        "num_images": len(labels),
        "labels_excluded": {n: int(pos[i]) for i, n in enumerate(label_names) if not keep[i]},
    }
    if not keep.any():
        return {**result, "auroc_mean": None, "auroc_mean_ci": None, "per_label": {}}
    y, p = labels[:, keep], probs[:, keep]
    if num_resamples > 0:
        boot = auc.bootstrap_auroc(
            y, p, num_resamples=num_resamples, seed=seed, confidence=confidence
        )
        point, point_ci = boot["per_label"], boot["per_label_ci"]
        mean, mean_ci = boot["mean"], boot["mean_ci"]
    else:
        point = [float(v) for v in auc.per_label_auroc(y, p)]
        point_ci = [None] * len(point)
        mean, mean_ci = auc.mean_auroc(point), None
    per_label = {
        n: {"auroc": point[i], "auroc_ci": point_ci[i], "positives": int(y[:, i].sum())}
        for i, n in enumerate(names)
    }
    return {**result, "auroc_mean": mean, "auroc_mean_ci": mean_ci, "per_label": per_label}


def conditioning_strength(
    generate: Callable[[np.ndarray, np.ndarray], np.ndarray],
    latents: np.ndarray,
    combos: np.ndarray,
) -> float:
    """std across label combinations at fixed z, over std across z at fixed combination.

    Args:
      generate: (z float32[B, L], labels float32[B, K]) -> images [B, H, W, C] (any dtype).
      latents: float32[M, L], M >= 2 fixed latents.
      combos: [C, K] label combinations, C >= 2.

    Returns:
      mean over z of the per-pixel std across combinations, divided by the mean over
      combinations of the per-pixel std across z; 0 when G ignores its labels.
    """
    latents = np.asarray(latents, np.float32)
    combos = np.asarray(combos, np.float32)
    m, c = len(latents), len(combos)
    if m < 2 or c < 2:
        raise ValueError(f"need at least 2 latents and 2 combinations, got {m} and {c}")
    z = np.tile(latents, (c, 1))  # row i: combination i // m, latent i % m
    y = np.repeat(combos, m, axis=0)
    images = np.asarray(generate(z, y), np.float64)
    images = images.reshape(c, m, -1)
    across_labels = images.std(axis=0).mean()
    across_latents = images.std(axis=1).mean()
    return float(across_labels / max(across_latents, 1e-12))
