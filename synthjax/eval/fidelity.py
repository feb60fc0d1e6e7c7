"""Fidelity in a feature space: the Fréchet distance, and precision, recall, density and
coverage (PRDC) of the synthetic images against the real ones.

The GAN stage monitors the Fréchet distance (FD) between generated and real images in the
real-data classifier's pooled features (the domain feature space; `train/classifier.py`)
to select its best EMA generator and to stop early; with a user-supplied Inception file
the same numbers are the usual FID. Pure numpy in float64, no model code.

FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).
The trace of the matrix square root is taken from the eigenvalues of the symmetric PSD
matrix S1^1/2 S2 S1^1/2, so it needs no scipy and is exact for rank-deficient covariances
(feature dimensions above the number of images), where `sqrtm` of S1 S2 goes complex.

PRDC (Kynkäänniemi et al. 2019 for precision and recall; Naeem et al. 2020 for density and
coverage) describe the two sets as unions of k-nearest-neighbour balls: precision is the
share of synthetic images inside some real ball (are they realistic?), recall the share of
real images inside some synthetic ball (is the variety there?), density counts how many
real balls hold each synthetic image (/k, 1 on average for a perfect generator), coverage
the share of real balls holding at least one synthetic image. Distances are computed in
blocks, so memory stays bounded at any number of images.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features: float[N, F] -> (mean float64[F], covariance float64[F, F], ddof 1)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need features of shape [N >= 2, F], got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet distance between two Gaussians (see the module docstring)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched statistics: means {mu1.shape} / {mu2.shape}, "
            f"covariances {cov1.shape} / {cov2.shape}"
        )
    root1 = _psd_sqrt(cov1)
    inner = root1 @ cov2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """FD between the Gaussians fitted to two feature sets float[N, F] and float[M, F]."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# Rows per block of pairwise distances: a [block, N] float64 block at N = 50,000 is 200 MB.
_DISTANCE_BLOCK = 512


def _pairwise_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances float64[len(a), len(b)]; b_sq = squared norms of b's rows."""
    sq = (a * a).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(sq, 0.0, None))


def _blocks(n: int):
    for start in range(0, n, _DISTANCE_BLOCK):
        yield slice(start, min(n, start + _DISTANCE_BLOCK))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """float64[N]: distance from each row to its k-th nearest other row (itself excluded)."""
    x = np.asarray(x, np.float64)
    if len(x) <= k:
        raise ValueError(
            f"need more than k = {k} images for k-nearest-neighbour radii, got {len(x)}"
        )
    x_sq = (x * x).sum(axis=1)
    radii = np.empty(len(x))
    for rows in _blocks(len(x)):
        d = _pairwise_distances(x[rows], x, x_sq)
        # Index k of the sorted row: index 0 is the row itself (distance 0).
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real` (module docstring).

    Args:
      real: float[N, F] real features; fake: float[M, F] synthetic features.
      k: the neighbourhood size (5 in both papers).

    Returns:
      {"precision", "recall", "density", "coverage", "k", "num_real", "num_fake"}; the
      balls are open (a point exactly on a radius is outside), as in the reference code.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need features [N, F] and [M, F], got {real.shape} and {fake.shape}")
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    fake_sq = (fake * fake).sum(axis=1)
    balls_holding = np.zeros(len(fake))  # per fake: how many real balls contain it
    covered = np.zeros(len(real), bool)  # per real: does its ball contain a fake
    recalled = np.zeros(len(real), bool)  # per real: is it inside some fake ball
    for rows in _blocks(len(real)):
        d = _pairwise_distances(real[rows], fake, fake_sq)  # [b, M]
        inside_real = d < real_radii[rows, None]
        balls_holding += inside_real.sum(axis=0)
        covered[rows] = inside_real.any(axis=1)
        recalled[rows] = (d < fake_radii[None, :]).any(axis=1)
    return {
        "precision": float((balls_holding > 0).mean()),
        "recall": float(recalled.mean()),
        "density": float(balls_holding.sum() / (k * len(fake))),
        "coverage": float(covered.mean()),
        "k": int(k),
        "num_real": len(real),
        "num_fake": len(fake),
    }
