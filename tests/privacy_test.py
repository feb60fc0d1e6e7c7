"""The memorization audit: nearest neighbours, the copy floor, the excess test, the
release decision.

The constructed cases have known answers: a generator that copies training images (exactly,
or with new brightness, contrast and noise; all of them, or 2%) must be refused in both
spaces; one that draws new patients from the same distribution must pass, seed after seed;
held-out images that duplicate training images must not open the gate; a constant
generator copies nobody.
"""

import json

import numpy as np
import pytest

from synthjax.eval import privacy


def _patients(n, seed, size=16):
    """uint8[n, size, size, 1] smooth random 'anatomy': each image a different patient."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, size // 4, size // 4, 1))
    images = coarse.repeat(4, axis=1).repeat(4, axis=2) + 0.1 * rng.random((n, size, size, 1))
    return (255 * images / images.max()).astype(np.uint8)


def _features(images):
    """A fixed random projection of the pixels: a stand-in domain feature space."""
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    w = np.random.default_rng(99).standard_normal((x.shape[1], 32)).astype(np.float32)
    return np.tanh(x @ w / 8.0)


def _sets(synthetic, heldout, train):
    originals = train[:128]
    copies = privacy.near_copies(originals, seed=0)

    def space(fn):
        return privacy.AuditSets(fn(synthetic), fn(heldout), fn(train), fn(originals), fn(copies))

    return {
        "pixels_16": space(lambda im: privacy.pixel_vectors(im, 16)),
        "domain_features": space(lambda im: privacy.unit_rows(_features(im))),
    }


def _audit(synthetic, heldout, train, **kw):
    return privacy.memorization_audit(
        _sets(synthetic, heldout, train), percentile=1.0, floor_quantile=0.99, alpha=0.01, **kw
    )


TRAIN = _patients(400, seed=0)
HELDOUT = _patients(300, seed=1)


def test_block_mean_and_pixel_correlation():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(privacy.block_mean(image, 2)[0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="cannot be averaged"):
        privacy.block_mean(image, 3)
    # Normalised correlation ignores brightness and contrast, and sees a negative as -1.
    a = privacy.pixel_vectors(TRAIN[:1], 16)
    brighter = privacy.pixel_vectors((TRAIN[:1] // 2 + 60).astype(np.uint8), 16)
    negative = privacy.pixel_vectors(255 - TRAIN[:1], 16)
    assert float((a @ brighter.T)[0, 0]) > 0.99
    assert float((a @ negative.T)[0, 0]) == pytest.approx(-1.0, abs=1e-5)
    assert not privacy.pixel_vectors(np.full((1, 16, 16, 1), 7, np.uint8), 16).any()


@pytest.mark.parametrize("devices", [None, 4])
def test_nearest_matches_brute_force_across_blocks_and_devices(monkeypatch, devices):
    import jax

    monkeypatch.setattr(privacy, "_QUERY_BLOCK", 7)
    rng = np.random.default_rng(2)
    q = privacy.unit_rows(rng.standard_normal((50, 6)))
    r = privacy.unit_rows(rng.standard_normal((30, 6)))  # 30: two padding rows on 4 devices
    mesh = None if devices is None else jax.make_mesh((devices,), ("data",))
    sim, idx = privacy.nearest(q, r, mesh)
    brute = q @ r.T
    np.testing.assert_array_equal(idx, brute.argmax(axis=1))
    np.testing.assert_allclose(sim, brute.max(axis=1), rtol=1e-6)


def _disguised(images, seed):
    """Copies with a new contrast and brightness and some noise."""
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float32) * 0.8 + 20 + rng.normal(0, 4, images.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_a_generator_that_copies_every_training_image_is_refused():
    rng = np.random.default_rng(3)
    copies = TRAIN[rng.choice(len(TRAIN), 200)]
    for synthetic in (copies, _disguised(copies, 3)):
        audit = _audit(synthetic, HELDOUT, TRAIN)
        for space in audit["spaces"].values():
            assert space["copy_rate"] > 0.95 and space["close_rate"] > 0.95
            assert space["excess_p_value"] < 1e-10
            assert space["median_distance_ratio"] < 0.2
        assert audit["releasable"] is False and audit["audit_passed"] is False
        assert audit["override"] is None and audit["flagged"] == 200
        assert "COPIES" in audit["reasons"][0]


def test_two_percent_exact_copies_are_refused_though_the_excess_is_not_significant():
    synthetic = _patients(500, seed=7)
    synthetic[::50] = TRAIN[:10]  # 2%
    audit = _audit(synthetic, HELDOUT, TRAIN)
    pixels = audit["spaces"]["pixels_16"]
    assert pixels["copies"] == 10 and pixels["heldout_below_floor"] == 0
    assert "COPIES" in audit["reasons"][0]
    assert audit["spaces"]["domain_features"]["copies"] >= 10
    assert audit["releasable"] is False
    assert set(range(0, 500, 50)) <= set(np.flatnonzero(audit["_flagged"]))


def test_duplicated_held_out_patients_do_not_open_the_gate():
    """3% of held-out images are training images under another id: the relative threshold
    collapses to zero, the floor does not, and near copies of everyone are still refused."""
    heldout = HELDOUT.copy()
    heldout[:9] = TRAIN[100:109]
    audit = _audit(_disguised(TRAIN[:200], 4), heldout, TRAIN)
    for space in audit["spaces"].values():
        assert space["threshold_distance"] < 1e-4
        assert space["heldout_below_floor"] >= 9
        assert space["copies"] > 190
    assert audit["releasable"] is False


def test_new_patients_from_the_same_distribution_pass_for_every_seed():
    for seed in range(10, 20):
        audit = _audit(_patients(500, seed=seed), HELDOUT, TRAIN)
        assert audit["spaces"]["pixels_16"]["copies"] == 0
        # The stand-in feature space squeezes everyone together: some new patients lie as
        # close as near copies do, held-out and synthetic alike, which is no excess.
        features = audit["spaces"]["domain_features"]
        assert features["heldout_below_floor"] > 0 and features["copies_p_value"] > 0.01
        for space in audit["spaces"].values():
            assert 0.7 < space["median_distance_ratio"] < 1.3
        assert audit["releasable"] is True and audit["audit_passed"] is True, audit["reasons"]


def test_a_constant_generator_copies_nobody():
    constant = np.full((100, 16, 16, 1), 128, np.uint8)
    audit = _audit(constant, HELDOUT, TRAIN)
    assert audit["spaces"]["pixels_16"]["copy_rate"] == 0.0


def test_the_excess_test_is_two_sample_and_one_sided():
    # 3 of 300 held-out close; 30 of 1000 synthetic close is an excess, 10 of 1000 is not.
    assert privacy.excess_p_value(30, 1000, 3, 300) < 0.05
    assert privacy.excess_p_value(10, 1000, 3, 300) > 0.5
    assert privacy.excess_p_value(0, 1000, 3, 300) == 1.0


def test_the_floor_covers_near_copies_and_only_them():
    originals = TRAIN[:128]
    v = privacy.pixel_vectors(originals, 16)
    floor = privacy.floor_distance(
        v, privacy.pixel_vectors(privacy.near_copies(originals, 0), 16), 0.99
    )
    fresh = privacy.pixel_vectors(privacy.near_copies(originals, 1), 16)
    d_fresh = 1 - np.sum(v * fresh, axis=1)
    assert np.mean(d_fresh < floor) > 0.95
    sim, _ = privacy.nearest(privacy.pixel_vectors(HELDOUT, 16), privacy.pixel_vectors(TRAIN, 16))
    assert np.mean(1 - sim < floor) < 0.01  # new patients are not near copies


def test_override_is_recorded_and_needs_the_audit_to_fail():
    copies = TRAIN[:100]
    audit = _audit(copies, HELDOUT, TRAIN, override="IRB 2026-17: reviewed by the DPO")
    assert audit["releasable"] is True and audit["audit_passed"] is False
    assert audit["override"] == {"reason": "IRB 2026-17: reviewed by the DPO"}
    assert "override" in audit["reasons"][-1]
    honest = _audit(_patients(100, seed=5), HELDOUT, TRAIN, override="not needed")
    assert honest["override"] is None


def test_closest_pairs_and_the_stripped_card_entry():
    synthetic = np.concatenate([_patients(50, seed=6), TRAIN[[10, 20]]])
    audit = _audit(synthetic, HELDOUT, TRAIN)
    pairs = privacy.closest_pairs(audit, "pixels_16", 2)
    assert {(s, t) for s, t, _ in pairs} == {(50, 10), (51, 20)}
    rows, titles = privacy.pairs_grid_rows(
        pairs,
        lambda s: synthetic[s],
        lambda t: TRAIN[t],
        threshold=audit["spaces"]["pixels_16"]["threshold_distance"],
    )
    assert rows.shape == (1, 8, 16, 16, 1) and titles == ["d 0.000-0.000, 2 COPY"]
    np.testing.assert_array_equal(rows[0, :4], [synthetic[50], TRAIN[10], synthetic[51], TRAIN[20]])
    assert (rows[0, 4:] == 255).all()
    stripped = privacy.strip_arrays(audit)
    assert all("_nearest" not in s for s in stripped["spaces"].values())
    assert "_flagged" not in stripped
    json.dumps(stripped)


def test_seeded_subset():
    idx = np.arange(100, 200)
    a = privacy.seeded_subset(idx, 10, seed=0, stream=1)
    assert len(a) == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, privacy.seeded_subset(idx, 10, seed=0, stream=1))
    assert not np.array_equal(a, privacy.seeded_subset(idx, 10, seed=0, stream=2))
    np.testing.assert_array_equal(privacy.seeded_subset(idx, 0, seed=0, stream=1), idx)


def test_the_seen_share_is_at_chance_for_a_generator_that_saw_nobody():
    strata = np.repeat([0, 1], [250, 150])  # 300 training images, then 100 held-out
    strata = np.concatenate([strata[:300], np.repeat([0, 1], [50, 50])])
    low = 0
    for seed in range(20):
        nearest = np.random.default_rng(seed).integers(0, 400, 1000)
        _, expected, p = privacy.seen_share_test(nearest, strata, 300)
        assert expected == pytest.approx(0.75, abs=0.05)
        low += p < 0.05
    assert low <= 4  # about 1 in 20 by chance


def test_the_seen_share_catches_memorization_and_not_the_mix_of_combinations():
    rng = np.random.default_rng(1)
    strata = np.concatenate([np.repeat([0, 1], [270, 30]), np.repeat([0, 1], [50, 50])])
    # A generator drawing combination 0 only, near any of its patients, seen or not.
    combo0 = np.flatnonzero(strata == 0)
    share, expected, p = privacy.seen_share_test(rng.choice(combo0, 1000), strata, 300)
    assert share > 0.8 and p > 0.01  # far above 300/400, and still no memorization
    # One that puts half its images next to training patients. (The test's power comes
    # from the number of real images: it permutes their labels.)
    nearest = rng.integers(0, 400, 1000)
    nearest[:500] = rng.integers(0, 300, 500)
    share, expected, p = privacy.seen_share_test(nearest, strata, 300)
    assert share > expected + 0.05 and p < 1e-4
