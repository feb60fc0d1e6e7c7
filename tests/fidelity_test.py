"""Fréchet distance, and GAN model selection by it (best generator, patience, start)."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import linalg

from synthjax.core import parallel
from synthjax.eval import fidelity
from synthjax.train import fd_monitor
from synthjax.train.schedule import Phase, Schedule
from synthjax.train.selection import BestSoFar


def _reference_fd(mu1, cov1, mu2, cov2):
    """The usual formula with scipy's sqrtm of the product (full-rank covariances)."""
    root = linalg.sqrtm(cov1 @ cov2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * root))


def test_frechet_distance_matches_sqrtm_and_the_1d_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 0.5
    stats_a, stats_b = fidelity.gaussian_stats(a), fidelity.gaussian_stats(b)
    fd = fidelity.frechet_distance(*stats_a, *stats_b)
    assert fd == pytest.approx(_reference_fd(*stats_a, *stats_b), rel=1e-8)
    assert fidelity.frechet_distance_of_features(a, a) == pytest.approx(0.0, abs=1e-8)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    one = fidelity.frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])
    )
    assert one == pytest.approx(4.0 + 1.0)


def test_frechet_distance_is_finite_with_more_features_than_images():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 1.0
    fd = fidelity.frechet_distance_of_features(a, b)
    assert np.isfinite(fd) and fd > 60.0  # the mean shift alone contributes 64
    with pytest.raises(ValueError, match="mismatched"):
        fidelity.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


@flax.struct.dataclass
class _State:
    g_ema: jax.Array
    best: BestSoFar
    min_fd: jax.Array


class _Pixels:
    """A feature space that is the pixels themselves."""

    def of_images(self, images):
        return images.reshape(len(images), -1).astype(np.float32)


def _source(n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 110, (n, 2, 2, 1)).astype(np.uint8)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)

    class Source:
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"image": images[i], "labels": labels[i]}

    source = Source()
    source.labels = labels
    return source


def test_monitor_keeps_the_best_generator_and_stops_after_patience():
    fd = ml_collections.ConfigDict(
        dict(num_images=40, batch_size=8, start_kimg=0.2, patience=2, reference_split="train")
    )
    # 100 images a step: selection counts from step 2.
    schedule = Schedule((Phase(0, 2, 100, 0, 0, 10, 0),), 10)
    mesh = parallel.make_mesh(1)

    def generate(g_params, z, labels):
        # "Generator" whose images sit g_params grey levels away from the real ones' 100.
        del labels
        return jnp.broadcast_to(100 + g_params, (z.shape[0], 2, 2, 1)).astype(jnp.uint8)

    monitor = fd_monitor.FrechetMonitor(
        fd,
        space=_Pixels(),
        generate=jax.jit(generate),
        reference=(_source(), np.arange(40)),
        latent_dim=3,
        schedule=schedule,
        mesh=mesh,
        seed=0,
    )
    state = _State(
        g_ema=jnp.float32(0),
        best=BestSoFar.start(jnp.float32(0), {"fd": np.inf, "label_fidelity": -np.inf}, step=-1),
        min_fd=jnp.float32(np.inf),
    )
    history = []
    for step, offset in [(1, 1), (2, 30), (3, 5), (4, 9), (5, 40), (6, 2)]:
        state, metrics = monitor.hook(state.replace(g_ema=jnp.float32(offset)), step)
        history.append((metrics["fd"], state.best.selected_step(), monitor.finished(state)))
    fds = [h[0] for h in history]
    assert fds[0] < fds[3] < fds[1] < fds[4]  # FD grows with the offset
    # Step 1 is before start_kimg: logged, not selected. Then 30 (best), 5 (best), 9, 40.
    assert [h[1] for h in history] == [-1, 2, 3, 3, 3, 6]
    assert [h[2] for h in history] == [False, False, False, False, True, False]
    assert float(state.best.params) == 2.0 and state.best.score("fd") == pytest.approx(fds[5])


@pytest.mark.parametrize("block", [512, 7])
def test_prdc_matches_the_reference_package(monkeypatch, block):
    prdc_reference = pytest.importorskip("prdc", reason="pip install prdc (the test extra)")
    monkeypatch.setattr(fidelity, "_DISTANCE_BLOCK", block)  # several blocks, same answer
    rng = np.random.default_rng(2)
    real = rng.standard_normal((300, 8)).astype(np.float32)
    fake = (0.7 * rng.standard_normal((250, 8)) + 0.4).astype(np.float32)
    got = fidelity.prdc(real, fake, k=5)
    want = prdc_reference.compute_prdc(real, fake, nearest_k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert got[name] == pytest.approx(float(want[name]), abs=1e-9), name


def test_prdc_of_identical_and_disjoint_sets():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((200, 4))
    # An exact copy: every fake sits at the centre of its twin's ball, and each ball holds
    # its centre and the k - 1 neighbours strictly inside its radius: density exactly 1.
    same = fidelity.prdc(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=1e-12)
    far = fidelity.prdc(real, real + 100.0, k=5)
    assert far == {**far, "precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # A constant generator: realistic only if its one point falls in a real ball, and it
    # covers at most the balls around that point.
    constant = fidelity.prdc(real, np.zeros((200, 4)), k=5)
    assert constant["recall"] < 0.1 and constant["coverage"] < 0.1
    with pytest.raises(ValueError, match="more than k"):
        fidelity.prdc(real[:5], real[:5], k=5)
