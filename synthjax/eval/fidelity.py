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

KID (the kernel inception distance; Binkowski et al. 2018, "Demystifying MMD GANs") is the
unbiased estimate of the squared maximum mean discrepancy (MMD^2) with the cubic kernel
k(x, y) = (x.y / F + 1)^3 (F features), averaged over `num_subsets` random subsets of
`subset_size` images per side drawn without replacement, as torch-fidelity, clean-fid and
the original TF code compute it (subsets of 1,000, 100 of them; the size shrinks to the
smaller set when there are fewer images, as clean-fid does). Unlike FD it is unbiased at
every sample size: its expectation is the same at 170 images as at 10,000, so KIDs from
test splits of different sizes compare, and it is 0 on average for a perfect generator
(it can be negative). Its interval is a bootstrap: each resample redraws the real and the
synthetic images with replacement (or, given their patients, the patients with all their
images), and every subset's MMD^2 is recomputed with the draw counts as weights, pairs of
copies of one image left out as the unbiased estimate leaves out i = j.
"""

from __future__ import annotations

from typing import Any

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


# --- KID -------------------------------------------------------------------------------------


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel (a.b / F + 1)^3: float[N, F], float[M, F] -> float64[N, M]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = a @ b.T / a.shape[1] + 1.0
    return k * k * k  # several times faster than ** 3


def kid_subsets(
    num_real: int, num_fake: int, subset_size: int, num_subsets: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """KID's subsets: (real int[S, m], fake int[S, m]) row indices, m = min(subset_size,
    num_real, num_fake), each row drawn without replacement. When both sets have exactly m
    images every subset is the whole set (the same MMD^2), so S is 1."""
    m = min(subset_size, num_real, num_fake)
    if m < 2:
        raise ValueError(f"KID needs 2 images per side, got {num_real} real, {num_fake} fake")
    if num_real == m and num_fake == m:
        return np.arange(m)[None], np.arange(m)[None]
    rng = np.random.default_rng([seed, 71])
    real = np.stack([rng.choice(num_real, m, replace=False) for _ in range(num_subsets)])
    fake = np.stack([rng.choice(num_fake, m, replace=False) for _ in range(num_subsets)])
    return real, fake


def _weighted_mmd2(
    kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, wx: np.ndarray, wy: np.ndarray
) -> np.ndarray:
    """float64[B]: the unbiased MMD^2 with image weights wx float[B, m], wy float[B, n]
    (counts of a resample; all ones = the plain estimate). kxx, kyy: zero diagonals. A
    resample whose weight sits on one image of a side has no pair there: NaN."""
    sx, sy = wx.sum(1), wy.sum(1)
    xx = ((wx @ kxx) * wx).sum(1)
    yy = ((wy @ kyy) * wy).sum(1)
    xy = ((wx @ kxy) * wy).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (
            xx / (sx * sx - (wx * wx).sum(1))
            + yy / (sy * sy - (wy * wy).sum(1))
            - 2.0 * xy / (sx * sy)
        )


def _resample_counts(
    rng: np.random.Generator, num: int, clusters: Any, num_resamples: int
) -> np.ndarray:
    """float64[B, num]: how often each image is in each bootstrap resample: images drawn
    with replacement, or with `clusters` ([num] ids) clusters drawn with replacement and
    every image of a drawn cluster taken as often as its cluster was drawn."""
    if clusters is None:
        ids = np.arange(num)
    else:
        clusters = np.asarray(clusters)
        if len(clusters) != num:
            raise ValueError(f"{len(clusters)} cluster ids for {num} images")
        ids = np.unique(clusters, return_inverse=True)[1].reshape(-1)
    k = int(ids.max()) + 1
    draws = rng.integers(0, k, (num_resamples, k)) + k * np.arange(num_resamples)[:, None]
    counts = np.bincount(draws.ravel(), minlength=num_resamples * k).reshape(num_resamples, k)
    return counts[:, ids].astype(np.float64)


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subset_size: int = 1000,
    num_subsets: int = 100,
    num_resamples: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    real_clusters: Any = None,
    fake_clusters: Any = None,
) -> dict[str, object]:
    """KID of `fake` against `real` (module docstring), with a bootstrap interval.

    Args:
      real: float[N, F] real features; fake: float[M, F] synthetic features.
      subset_size, num_subsets: the subsets averaged (the references': 1000, 100).
      num_resamples: bootstrap resamples of the images (0: no interval).
      real_clusters, fake_clusters: [N] / [M] cluster (patient) ids, or None: what the
        bootstrap resamples on each side (clusters with all their images, or images).

    Returns:
      {"kid", "kid_ci" ([lo, hi] percentile interval or None), "kid_subset_size" (m),
      "kid_subsets" (S), "kid_subset_std" (the spread of the subsets' MMD^2, torch-fidelity's
      `kid_std`: not an interval)}.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need features [N, F] and [M, F], got {real.shape} and {fake.shape}")
    real_idx, fake_idx = kid_subsets(len(real), len(fake), subset_size, num_subsets, seed)
    rng = np.random.default_rng([seed, 73])
    counts_real = _resample_counts(rng, len(real), real_clusters, num_resamples)
    counts_fake = _resample_counts(rng, len(fake), fake_clusters, num_resamples)
    m = real_idx.shape[1]
    ones = np.ones((1, m))
    per_subset, resampled = [], np.zeros(num_resamples)
    for ri, fi in zip(real_idx, fake_idx, strict=True):
        x, y = real[ri], fake[fi]
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        np.fill_diagonal(kxx, 0.0)
        np.fill_diagonal(kyy, 0.0)
        per_subset.append(float(_weighted_mmd2(kxx, kyy, kxy, ones, ones)[0]))
        if num_resamples:
            wx, wy = counts_real[:, ri], counts_fake[:, fi]
            resampled += _weighted_mmd2(kxx, kyy, kxy, wx, wy)
    ci = None
    resampled = resampled[np.isfinite(resampled)] / len(real_idx)
    if len(resampled):
        tail = (1.0 - confidence) / 2.0
        ci = [float(v) for v in np.quantile(resampled, [tail, 1.0 - tail])]
    return {
        "kid": float(np.mean(per_subset)),
        "kid_ci": ci,
        "kid_subset_size": int(m),
        "kid_subsets": len(real_idx),
        "kid_subset_std": float(np.std(per_subset)),
    }
