"""Fidelity in a feature space: Gaussian statistics and the Fréchet distance between them.

The GAN stage monitors the Fréchet distance (FD) between generated and real images in the
real-data classifier's pooled features (the domain feature space; `train/classifier.py`)
to select its best EMA generator and to stop early; with a user-supplied Inception file
the same numbers are the usual FID. Pure numpy in float64, no model code.

FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).
The trace of the matrix square root is taken from the eigenvalues of the symmetric PSD
matrix S1^1/2 S2 S1^1/2, so it needs no scipy and is exact for rank-deficient covariances
(feature dimensions above the number of images), where `sqrtm` of S1 S2 goes complex.
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
