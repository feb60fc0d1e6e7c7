"""The memorization audit: nearest neighbours, copy rates, the release decision.

The constructed cases have known answers: a generator that copies training images (exactly,
or with new brightness, contrast and noise) must be caught in both spaces; one that draws
new patients from the same distribution must pass; a constant generator copies nobody.
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
    def space(fn):
        return privacy.AuditSets(fn(synthetic), fn(heldout), fn(train))

    return {
        "pixels_16": space(lambda im: privacy.pixel_vectors(im, 16)),
        "domain_features": space(lambda im: privacy.unit_rows(_features(im))),
    }


def _audit(synthetic, heldout, train, **kw):
    return privacy.memorization_audit(
        _sets(synthetic, heldout, train), percentile=1.0, max_copy_rate=0.05, **kw
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


def test_nearest_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(privacy, "_QUERY_BLOCK", 7)
    rng = np.random.default_rng(2)
    q = privacy.unit_rows(rng.standard_normal((50, 6)))
    r = privacy.unit_rows(rng.standard_normal((30, 6)))
    sim, idx = privacy.nearest(q, r)
    brute = q @ r.T
    np.testing.assert_array_equal(idx, brute.argmax(axis=1))
    np.testing.assert_allclose(sim, brute.max(axis=1), rtol=1e-6)


def test_a_generator_that_copies_training_images_is_caught():
    rng = np.random.default_rng(3)
    copies = TRAIN[rng.choice(len(TRAIN), 200)]
    # Disguised: new contrast and brightness, a little noise.
    noisy = copies.astype(np.float32) * 0.8 + 20 + rng.normal(0, 2, copies.shape)
    disguised = np.clip(noisy, 0, 255).astype(np.uint8)
    for synthetic in (copies, disguised):
        audit = _audit(synthetic, HELDOUT, TRAIN)
        for space in audit["spaces"].values():
            assert space["copy_rate"] > 0.95
            assert space["excess_p_value"] < 1e-10
            assert space["median_distance_ratio"] < 0.2
        assert audit["releasable"] is False and audit["audit_passed"] is False
        assert audit["override"] is None
        assert "above the 5.00% limit" in audit["reasons"][0]


def test_new_patients_from_the_same_distribution_pass():
    audit = _audit(_patients(500, seed=4), HELDOUT, TRAIN)
    for space in audit["spaces"].values():
        assert space["copy_rate"] < 0.05
        assert 0.7 < space["median_distance_ratio"] < 1.3
    assert audit["releasable"] is True and audit["audit_passed"] is True
    assert audit["copy_rate"] == max(s["copy_rate"] for s in audit["spaces"].values())


def test_a_constant_generator_copies_nobody():
    constant = np.full((100, 16, 16, 1), 128, np.uint8)
    audit = _audit(constant, HELDOUT, TRAIN)
    assert audit["spaces"]["pixels_16"]["copy_rate"] == 0.0


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
    json.dumps(stripped)


def test_seeded_subset():
    idx = np.arange(100, 200)
    a = privacy.seeded_subset(idx, 10, seed=0, stream=1)
    assert len(a) == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, privacy.seeded_subset(idx, 10, seed=0, stream=1))
    assert not np.array_equal(a, privacy.seeded_subset(idx, 10, seed=0, stream=2))
    np.testing.assert_array_equal(privacy.seeded_subset(idx, 0, seed=0, stream=1), idx)
