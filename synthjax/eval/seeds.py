"""An interval for a setting's mean score over its seeds that covers training randomness and
the test sample, from each seed's score and its bootstrap interval.

A run's bootstrap interval (`auc.bootstrap_auroc`) says how much its score would move with
another test sample drawn from the same population; it says nothing about another seed,
which draws another training subset, initialises and orders the networks differently and
(when the test split is capped per class) draws other test images. Settings compared on
one seed each can differ by training luck alone. With n >= 2 seeds of one setting:

    X_i = mu + T_i + E_i,   i = 1..n

X_i the seed's score (e.g. mean test AUROC), T_i its training randomness (variance s_T^2,
independent across seeds), E_i its test-sample error (variance s_E^2, the bootstrap's). If
the seeds' test samples overlap, the E_i are correlated (rho = 1 for one shared test set, 0
for disjoint ones), and with S^2 the sample variance of the X_i:

    Var(mean X) = s_T^2 / n + s_E^2 (1 + (n - 1) rho) / n = E[S^2] / n + rho s_E^2.

We estimate it by V = S^2 / n + v, v the mean of the seeds' bootstrap variances (each from its
interval's width: ((hi - lo) / (2 z))^2, z the normal quantile of the run's confidence). V is
unbiased when the seeds share their test set (rho = 1, e.g. `dataset.test_per_class` = 0)
and conservative by (1 - rho) s_E^2 otherwise, so it never claims more than the seeds and the
test sample support. The interval adds the two parts' half-widths in quadrature:

    mean X +- sqrt(t_{n-1}^2 S^2 / n + z^2 v)

t_{n-1} the Student quantile with n - 1 degrees of freedom (S^2 is known only to that many),
z the normal one (a bootstrap of 1000 resamples knows v well). Seeds that agree give the
bootstrap interval, seeds that disagree a t-interval over seeds, and it is never narrower than
a run's own interval. A plain t on V with Welch-Satterthwaite degrees of freedom held only
93% at 3 seeds whose training noise was 3-10 times the test sample's (its estimated df grows
when S^2 comes out small); this one held at least 95% for 2, 3 and 5 seeds and training
noise 0-10 times the test sample's, with shared or separate test sets (tests/seeds_test.py).
Without bootstrap intervals, v = 0 and it is the plain t-interval over seeds (which covers
the test sample only when the seeds' test sets are disjoint). One seed has no seed interval.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class SeedInterval:
    """A setting's mean over its seeds: `mean`, `seed_std` (the seeds' sample standard
    deviation), `n_seeds`, `test_se` (root mean bootstrap variance, NaN without one), `se`
    (sqrt V), `lo` / `hi` (NaN with one seed) and `basis`: which variance it covers."""

    mean: float
    seed_std: float
    n_seeds: int
    test_se: float
    se: float
    lo: float
    hi: float
    basis: str


# What `SeedInterval.basis` says.
SEEDS_AND_TEST = "seeds + test sample"
SEEDS_ONLY = "seeds only (no bootstrap interval)"
NO_SEED_INTERVAL = "none: one seed"


def bootstrap_variance(lo: Any, hi: Any, confidence: Any = 0.95) -> np.ndarray:
    """float[...]: the variance a central `confidence` interval [lo, hi] implies for a normal
    estimate, ((hi - lo) / (2 z))^2; NaN where an end is missing."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    z = stats.norm.ppf((1 + np.asarray(confidence, np.float64)) / 2)
    return ((hi - lo) / (2 * z)) ** 2


@functools.cache
def _quantiles(n: int, confidence: float) -> tuple[float, float]:
    """(t_{n-1}, z) at `confidence`, two-sided."""
    q = (1 + confidence) / 2
    return float(stats.t.ppf(q, n - 1)), float(stats.norm.ppf(q))


def seed_interval(
    values: Any, test_variances: Any = None, confidence: float = 0.95
) -> SeedInterval:
    """The interval above for one setting.

    values: float[n], one score per seed (NaNs dropped).
    test_variances: float[n] or None, each seed's bootstrap variance (`bootstrap_variance`);
        NaNs are left out of their mean, all NaN (or None) gives the seeds-only t-interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} is not in (0, 1)")
    values = np.asarray(values, np.float64)
    keep = ~np.isnan(values)
    values = values[keep]
    n = len(values)
    if n == 0:
        raise ValueError("no seed has a value")
    test = np.full(len(keep), np.nan) if test_variances is None else np.asarray(test_variances)
    test = np.asarray(test, np.float64)[keep]
    v = float(np.mean(test[~np.isnan(test)])) if (~np.isnan(test)).any() else math.nan
    mean = float(values.mean())
    if n < 2:
        nan = math.nan
        return SeedInterval(mean, nan, 1, math.sqrt(v), nan, nan, nan, NO_SEED_INTERVAL)
    s2 = float(values.var(ddof=1))
    test = 0.0 if math.isnan(v) else v
    t, z = _quantiles(n, float(confidence))
    half = math.sqrt(t**2 * s2 / n + z**2 * test)
    return SeedInterval(
        mean=mean,
        seed_std=math.sqrt(s2),
        n_seeds=n,
        test_se=math.sqrt(v),
        se=math.sqrt(s2 / n + test),
        lo=mean - half,
        hi=mean + half,
        basis=SEEDS_ONLY if math.isnan(v) else SEEDS_AND_TEST,
    )
