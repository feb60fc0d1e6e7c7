"""synthjax.eval.seeds: the seed interval against scipy's t-interval, and its coverage on
simulated sweeps whose training and test-sample variances are known."""

import math

import numpy as np
import pytest
from scipy import stats

from synthjax.eval import seeds


def test_without_bootstrap_it_is_scipys_t_interval():
    values = [0.71, 0.74, 0.80, 0.76]
    got = seeds.seed_interval(values, confidence=0.9)
    lo, hi = stats.t.interval(0.9, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (got.lo, got.hi) == pytest.approx((lo, hi))
    assert got.seed_std == pytest.approx(np.std(values, ddof=1))
    assert got.n_seeds == 4 and got.basis == seeds.SEEDS_ONLY
    assert math.isnan(got.test_se)


def test_seeds_that_agree_give_the_bootstrap_interval():
    sigma = 0.02
    got = seeds.seed_interval([0.8, 0.8, 0.8], [sigma**2] * 3)
    assert got.basis == seeds.SEEDS_AND_TEST
    assert (got.lo, got.hi) == pytest.approx(stats.norm.interval(0.95, loc=0.8, scale=sigma))


def test_one_seed_has_no_seed_interval():
    got = seeds.seed_interval([0.8, np.nan], [0.0004, np.nan])
    assert got.n_seeds == 1 and got.mean == 0.8 and got.basis == seeds.NO_SEED_INTERVAL
    assert math.isnan(got.lo) and math.isnan(got.hi) and math.isnan(got.seed_std)
    assert got.test_se == pytest.approx(0.02)
    with pytest.raises(ValueError, match="no seed"):
        seeds.seed_interval([np.nan])


def test_bootstrap_variance_inverts_a_normal_interval():
    for confidence in (0.9, 0.95):
        lo, hi = stats.norm.interval(confidence, loc=0.7, scale=0.03)
        assert seeds.bootstrap_variance(lo, hi, confidence) == pytest.approx(0.03**2)
    assert np.isnan(seeds.bootstrap_variance(np.nan, 0.8))


def _simulate(rng, reps, n, sigma_train, sigma_test, shared):
    """Scores of `reps` sweeps of one setting (true mean 0.75), `n` seeds each: training
    noise per seed, test-sample noise shared by the seeds or drawn per seed. float[reps, n]."""
    train = rng.normal(0, sigma_train, (reps, n))
    test = rng.normal(0, sigma_test, (reps, 1) if shared else (reps, n))
    return 0.75 + train + np.broadcast_to(test, (reps, n))


def _coverage(scores, sigma_test, test_only=False):
    """How often the interval holds 0.75: the seed interval, or (test_only) each run's own
    95% interval, averaged over runs."""
    if test_only:
        half = stats.norm.ppf(0.975) * sigma_test
        return float(np.mean(np.abs(scores - 0.75) <= half))
    test_var = np.full(scores.shape[1], sigma_test**2)
    hits = [(s := seeds.seed_interval(row, test_var)).lo <= 0.75 <= s.hi for row in scores]
    return float(np.mean(hits))


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0, 3.0, 10.0])
def test_coverage_with_known_variances(ratio, n):
    """`n` seeds, training noise `ratio` x the test sample's. With one shared test set or a
    test sample per seed, the interval holds the true mean at least 95% of the time (within
    Monte Carlo error), and exactly that when the seeds agree; a run's own bootstrap
    interval falls short once seeds disagree."""
    rng = np.random.default_rng([n, int(ratio * 10)])
    reps, sigma_test = 4000, 0.02
    tolerance = 3 * math.sqrt(0.05 * 0.95 / reps)  # three Monte Carlo standard errors
    shared = _simulate(rng, reps, n, ratio * sigma_test, sigma_test, shared=True)
    covered = _coverage(shared, sigma_test)
    assert covered >= 0.95 - tolerance
    if ratio == 0:
        assert covered <= 0.95 + tolerance  # the bootstrap interval itself
    own = _simulate(rng, reps, n, ratio * sigma_test, sigma_test, shared=False)
    assert _coverage(own, sigma_test) >= 0.95 - tolerance
    run_only = _coverage(shared, sigma_test, test_only=True)
    expected = 2 * stats.norm.cdf(stats.norm.ppf(0.975) / math.sqrt(1 + ratio**2)) - 1
    assert run_only == pytest.approx(expected, abs=tolerance)  # 0.95 only when ratio = 0
    if ratio >= 1:
        assert run_only < 0.85


def test_welch_satterthwaite_would_have_fallen_short():
    """Why the interval is not the plain Satterthwaite one: with 3 seeds and training noise
    10x the test sample's, t on V with the estimated df covers clearly under 95%."""
    rng = np.random.default_rng(3)
    sigma_test, reps, n = 0.02, 20000, 3
    scores = _simulate(rng, reps, n, 10 * sigma_test, sigma_test, shared=True)
    between = scores.var(axis=1, ddof=1) / n
    variance = between + sigma_test**2
    df = (n - 1) * variance**2 / between**2
    welch = np.abs(scores.mean(axis=1) - 0.75) <= stats.t.ppf(0.975, df) * np.sqrt(variance)
    assert welch.mean() < 0.94
    ours = [(s := seeds.seed_interval(r, [sigma_test**2] * n)).lo <= 0.75 <= s.hi for r in scores]
    assert np.mean(ours) >= 0.945


def test_the_variance_estimate_matches_the_spread_of_the_mean():
    """With a shared test set, V (se^2) is unbiased for the variance of the seeds' mean."""
    rng = np.random.default_rng(7)
    sigma_train, sigma_test = 0.03, 0.02
    scores = _simulate(rng, 20000, 3, sigma_train, sigma_test, shared=True)
    se2 = [seeds.seed_interval(row, [sigma_test**2] * 3).se ** 2 for row in scores[:4000]]
    truth = sigma_train**2 / 3 + sigma_test**2
    assert np.var(scores.mean(axis=1)) == pytest.approx(truth, rel=0.03)
    assert np.mean(se2) == pytest.approx(truth, rel=0.05)
