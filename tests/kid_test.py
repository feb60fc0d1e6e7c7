"""KID: against a brute-force double loop of the unbiased MMD^2, its unbiasedness, and its
bootstrap interval's coverage of the exact population value (Gaussians, where the cubic
kernel's feature map gives MMD^2 in closed form)."""

import itertools
import json

import numpy as np
import pytest

from synthjax import report as report_lib
from synthjax.eval import fidelity


def _brute_force_mmd2(x, y):
    """Gretton et al. 2012's unbiased MMD^2, term by term, with KID's kernel."""
    d = x.shape[1]

    def k(a, b):
        return (sum(float(a[i]) * float(b[i]) for i in range(d)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def _gaussian_mean_embedding(mu):
    """E phi(X) for X ~ N(mu, I), phi the cubic kernel's explicit feature map:
    phi(x) = [1, sqrt(3/d) x, sqrt(3)/d x(x)x, d^-1.5 x(x)x(x)x], so phi(x).phi(y) =
    1 + 3u + 3u^2 + u^3 = (u + 1)^3 with u = x.y / d."""
    d = len(mu)
    eye = np.eye(d)
    second = np.outer(mu, mu) + eye
    third = (
        np.einsum("i,j,k->ijk", mu, mu, mu)
        + np.einsum("i,jk->ijk", mu, eye)
        + np.einsum("j,ik->ijk", mu, eye)
        + np.einsum("k,ij->ijk", mu, eye)
    )
    return np.concatenate(
        [[1.0], np.sqrt(3 / d) * mu, np.sqrt(3) / d * second.ravel(), d**-1.5 * third.ravel()]
    )


def _population_kid(mu_real, mu_fake):
    diff = _gaussian_mean_embedding(mu_real) - _gaussian_mean_embedding(mu_fake)
    return float(diff @ diff)


def test_feature_map_reproduces_the_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 4))
    d = len(x)
    phi = [
        np.concatenate([[1.0], np.sqrt(3 / d) * v, np.sqrt(3) / d * np.outer(v, v).ravel(),
                        d**-1.5 * np.einsum("i,j,k->ijk", v, v, v).ravel()])
        for v in (x, y)
    ]  # fmt: skip
    assert phi[0] @ phi[1] == pytest.approx(fidelity.polynomial_kernel(x[None], y[None])[0, 0])


@pytest.mark.parametrize("sizes", [(12, 12), (9, 14)])
def test_kid_matches_the_brute_force_formula(sizes):
    rng = np.random.default_rng(1)
    real = rng.standard_normal((sizes[0], 3))
    fake = 0.8 * rng.standard_normal((sizes[1], 3)) + 0.3
    got = fidelity.kid(real, fake, subset_size=1000)
    m = min(sizes)
    assert got["kid_subset_size"] == m
    if sizes[0] == sizes[1]:  # one subset: the whole set
        assert got["kid_subsets"] == 1
        assert got["kid"] == pytest.approx(_brute_force_mmd2(real, fake), rel=1e-10)
    else:  # the mean over subsets of m images per side
        ri, fi = fidelity.kid_subsets(sizes[0], sizes[1], 1000, 100, seed=0)
        want = np.mean([_brute_force_mmd2(real[r], fake[f]) for r, f in zip(ri, fi, strict=True)])
        assert got["kid_subsets"] == 100
        assert got["kid"] == pytest.approx(want, rel=1e-10)


def test_kid_averages_subsets_of_the_stated_size():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.5
    got = fidelity.kid(real, fake, subset_size=10, num_subsets=7, seed=5)
    ri, fi = fidelity.kid_subsets(40, 30, 10, 7, seed=5)
    assert ri.shape == fi.shape == (7, 10)
    assert all(len(set(r)) == 10 for r in itertools.chain(ri, fi))  # without replacement
    per_subset = [_brute_force_mmd2(real[r], fake[f]) for r, f in zip(ri, fi, strict=True)]
    assert got["kid"] == pytest.approx(np.mean(per_subset), rel=1e-10)
    assert got["kid_subset_std"] == pytest.approx(np.std(per_subset), rel=1e-8)
    with pytest.raises(ValueError, match="2 images"):
        fidelity.kid(real[:1], fake)


def test_kid_is_unbiased():
    """Same distribution: the mean over draws is 0 (FD's would be far above 0); different
    ones: the mean is the exact population MMD^2, at 20 images as at 200."""
    rng = np.random.default_rng(3)
    d, draws = 6, 400
    mu = np.full(d, 0.3)
    truth = _population_kid(np.zeros(d), mu)
    for n in (20, 200):
        same = [fidelity.kid(rng.standard_normal((n, d)), rng.standard_normal((n, d)))["kid"]
                for _ in range(draws)]  # fmt: skip
        apart = [
            fidelity.kid(rng.standard_normal((n, d)), rng.standard_normal((n, d)) + mu)["kid"]
            for _ in range(draws)
        ]
        for values, want in ((same, 0.0), (apart, truth)):
            se = np.std(values) / np.sqrt(draws)
            assert abs(np.mean(values) - want) < 4 * se, (n, want, np.mean(values), se)
    # The test can fail: the V-statistic (i = j pairs kept) averages far above 0.
    v_stats = []
    for _ in range(draws):
        x, y = rng.standard_normal((2, 20, d))
        kxx, kyy = fidelity.polynomial_kernel(x, x), fidelity.polynomial_kernel(y, y)
        v_stats.append(kxx.mean() + kyy.mean() - 2 * fidelity.polynomial_kernel(x, y).mean())
    assert np.mean(v_stats) > 10 * np.std(v_stats) / np.sqrt(draws)


def test_bootstrap_interval_covers_the_population_value():
    rng = np.random.default_rng(4)
    d, n, reps = 6, 100, 150
    mu = np.full(d, 0.3)
    truth = _population_kid(np.zeros(d), mu)
    covered = 0
    for rep in range(reps):
        got = fidelity.kid(
            rng.standard_normal((n, d)), rng.standard_normal((n, d)) + mu,
            num_resamples=150, seed=rep,
        )  # fmt: skip
        lo, hi = got["kid_ci"]
        assert lo <= got["kid"] <= hi
        covered += lo <= truth <= hi
    # 95% nominal; 150 repetitions: binomial sd 1.8 points.
    assert 0.9 <= covered / reps <= 0.99, covered / reps


def test_bootstrap_of_subsets_and_no_interval_without_resamples():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((300, 4)), rng.standard_normal((250, 4)) + 0.4
    got = fidelity.kid(real, fake, subset_size=50, num_subsets=20, num_resamples=100, seed=1)
    lo, hi = got["kid_ci"]
    assert lo < got["kid"] < hi and hi - lo < 1.0
    assert fidelity.kid(real, fake, subset_size=50, num_subsets=20)["kid_ci"] is None
    # The same seed, the same numbers.
    again = fidelity.kid(real, fake, subset_size=50, num_subsets=20, num_resamples=100, seed=1)
    assert again == got


def test_resample_counts_draw_images_or_whole_clusters():
    rng = np.random.default_rng(0)
    counts = fidelity._resample_counts(rng, 7, None, 500)
    assert counts.shape == (500, 7) and (counts.sum(1) == 7).all()
    assert abs(counts.mean() - 1.0) < 0.05  # each image drawn once per resample on average
    clusters = np.array(["b", "a", "b", "c", "c", "c", "a"])
    counts = fidelity._resample_counts(np.random.default_rng(1), 7, clusters, 500)
    for members in (clusters == "a", clusters == "b", clusters == "c"):
        assert (counts[:, members] == counts[:, members][:, :1]).all()  # all or none
    per_cluster = counts[:, [1, 0, 3]]  # a, b, c: three clusters drawn three times a resample
    assert (per_cluster.sum(1) == 3).all()
    # One image per cluster is the image-level bootstrap, draw for draw.
    np.testing.assert_array_equal(
        fidelity._resample_counts(np.random.default_rng(2), 5, np.arange(5), 50),
        fidelity._resample_counts(np.random.default_rng(2), 5, None, 50),
    )


def test_kid_interval_by_patient_is_wider_when_a_patients_images_are_alike():
    # 20 real patients of 10 near-copies each: 200 images but 20 independent draws. Their
    # KID against synthetic images from the same distribution varies from sample to sample
    # as 20 draws do; the image-level bootstrap, seeing 200, is too narrow.
    rng = np.random.default_rng(6)
    d = 6
    patients = np.repeat(np.arange(20), 10)
    real = rng.standard_normal((20, d))[patients] + 0.05 * rng.standard_normal((200, d))
    fake = rng.standard_normal((200, d))
    by_image = fidelity.kid(real, fake, num_resamples=300, seed=0)
    by_patient = fidelity.kid(real, fake, num_resamples=300, seed=0, real_clusters=patients)
    assert by_image["kid"] == by_patient["kid"]
    width = lambda r: r["kid_ci"][1] - r["kid_ci"][0]
    assert width(by_patient) > 1.5 * width(by_image), (by_patient["kid_ci"], by_image["kid_ci"])


# --- FD at a fixed size, and KID in the report -------------------------------------------------


def test_fd_at_a_fixed_size_compares_across_split_sizes():
    """Two runs whose test splits differ (300 vs 1,200 images): FD over all images differs by
    the sample size alone; at evaluate.fd_num_images (200) it agrees; KID agrees anyway,
    with the exact population value."""
    from synthjax.stages.evaluate import fd_sample, fd_sample_size

    rng = np.random.default_rng(6)
    d, draws, shift = 24, 20, 0.2
    values = {}
    for n in (300, 1200):
        size, note = fd_sample_size(200, {"real test": n, "synthetic test": n, "validation": n})
        assert (size, note) == (200, None)
        rows_of_draws = []
        for draw in range(draws):
            real, synth = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + shift
            rows = fd_sample(size, (n, n, n), seed=draw)
            assert all(len(r) == 200 and len(set(r)) == 200 for r in rows)
            rows_of_draws.append(
                (
                    fidelity.frechet_distance_of_features(real, synth),
                    fidelity.frechet_distance_of_features(real[rows[0]], synth[rows[1]]),
                    # 4 subsets of 300: the subsets' number and size move KID's noise only.
                    fidelity.kid(real, synth, subset_size=300, num_subsets=4)["kid"],
                )
            )
        values[n] = np.array(rows_of_draws)
    mean = {n: v.mean(0) for n, v in values.items()}
    se = {n: v.std(0) / np.sqrt(draws) for n, v in values.items()}
    gap, gap_se = mean[300] - mean[1200], np.hypot(se[300], se[1200])
    assert gap[0] > 10 * gap_se[0]  # FD over all images: 2.1 at 300, 1.3 at 1,200
    assert abs(gap[1]) < 4 * gap_se[1]  # FD at 200 images: the same
    truth = _population_kid(np.zeros(d), np.full(d, shift))
    for n in (300, 1200):
        assert abs(mean[n][2] - truth) < 4 * se[n][2], (n, mean[n][2], truth)


def test_fd_sample_size_says_when_there_are_fewer_images():
    from synthjax.stages.evaluate import fd_sample_size

    size, note = fd_sample_size(150, {"real test": 40, "synthetic test": 44, "real validation": 38})
    assert size == 38
    assert "FD at 38 images per side, not the 150" in note and "38 real validation" in note


def _report(fidelity_block):
    report = {
        "dataset": "chexpert",
        "phantom": True,
        "resolution": 16,
        "gan_arch": "dcgan",
        "num_classes": 2,
        "images": {"test": 40},
        "gan_kimg": 1.0,
        **{k: None for k in ("trtr_auroc_mean", "tstr_auroc_mean", "auroc_gap")},
        **{f"{k}_ci": None for k in ("trtr_auroc_mean", "tstr_auroc_mean", "auroc_gap")},
        **{k: None for k in ("trtr_auprc_mean", "tstr_auprc_mean")},
        **{f"{k}_ci": None for k in ("trtr_auprc_mean", "tstr_auprc_mean")},
        "per_label": [],
        "per_combination": [],
        "labels_excluded": {},
        "fidelity": fidelity_block,
        "figures": {},
        "wall_s": {},
        "state_sha256": {},
    }
    report["verdict"] = report_lib.verdict(report)
    return report_lib.report_markdown(report)


def _fidelity_block(with_kid=True, **extra):
    row = {"fd": 2.5, "precision": 0.5, "recall": 0.4, "density": 0.9, "coverage": 0.6}
    kid = {"kid": 0.0123, "kid_ci": [0.0081, 0.0172], "kid_subsets": 1, "kid_subset_size": 40}
    kid = kid if with_kid else {}
    base = {**row, "fd": 1.5, **kid, "kid_subsets": 100, "kid_subset_size": 38}
    block = {
        "feature_space": "domain",
        "num_real": 40,
        "num_synthetic": 44,
        "num_real_baseline": 38,
        "overall": {**row, **kid, "real_baseline": base if with_kid else {**row, "fd": 1.5}},
        "per_combination": [],
    }
    return {**block, **extra}


def test_report_markdown_shows_kid_and_the_fd_sample_size():
    text = _report(
        _fidelity_block(
            fd_num_images=38,
            fd_num_images_requested=150,
            fd_note="FD at 38 images per side, not the 150 evaluate.fd_num_images asks for",
            kid_interval="95% percentile bootstrap over images",
        )
    )
    assert "| KID (95% CI) |" in text and "| 0.0123 [0.0081, 0.0172] |" in text
    assert "**Note:** FD at 38 images per side, not the 150" in text
    assert "over 1 subset of 40 images per side (the real baseline: 100 subsets of 38" in text
    assert "bootstrap over images" in text
    # A report from before KID: the table says n/a, no paragraph about sizes.
    old = _report(_fidelity_block(with_kid=False))
    assert "| synthetic | 2.50 | n/a |" in old and "fd_num_images" not in old


def test_config_refuses_fd_sizes_above_max_images():
    from configs import default
    from synthjax import schema

    config = default.get_config("smoke")
    schema.check_evaluate(config.evaluate, config.dataset.resolution)
    for field, value in (("fd_num_images", 20000), ("fd_num_images", 1), ("kid_subset_size", 1)):
        bad = default.get_config("smoke")
        bad.evaluate[field] = value
        with pytest.raises(schema.ConfigError, match=f"evaluate.{field}"):
            schema.check_evaluate(bad.evaluate, bad.dataset.resolution)


def test_smoke_run_reports_kid_and_the_fd_size(smoke_run):
    workdir, _ = smoke_run
    report = json.loads((workdir / "report.json").read_text())
    fid = report["fidelity"]
    lo, hi = report["kid_ci"]
    assert lo <= report["kid"] <= hi and report["kid"] == fid["overall"]["kid"]
    assert report["kid_real_baseline"] == fid["overall"]["real_baseline"]["kid"]
    assert report["fd_num_images"] == fid["fd_num_images"]
    sizes = (fid["num_real"], fid["num_synthetic"], fid["num_real_baseline"])
    assert fid["fd_num_images"] == min(fid["fd_num_images_requested"], *sizes)
    assert (fid["fd_note"] is None) == (fid["fd_num_images"] == fid["fd_num_images_requested"])
    assert "KID (95% CI)" in (workdir / "report.md").read_text()
    assert "over real patients and synthetic images" in fid["kid_interval"]  # phantom patients
    records = [json.loads(x) for x in (workdir / "gan" / "metrics.jsonl").open()]
    evaluations = [r for r in records if "fd" in r]
    assert evaluations and all(np.isfinite(r["kid"]) for r in evaluations)
    assert all(r["kid_lo"] < r["kid_hi"] for r in evaluations)  # the monitor's interval
