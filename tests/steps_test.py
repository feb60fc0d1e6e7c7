"""Pure train steps: one device and four devices compute the same update."""

import functools

import jax
import numpy as np
import pytest

from configs import default
from synthjax.core import parallel
from synthjax.train import classifier, gan, gan_models
from synthjax.train.schedule import build_schedule

# Tests check values, not speed: XLA's cheapest CPU settings cut compile time severalfold,
# and both meshes compile with the same settings.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compiled(fn, *args, donate=False):
    jitted = jax.jit(fn, donate_argnums=0) if donate else fn
    return jitted.lower(*args).compile(compiler_options=FAST_COMPILE)


def _batch(rng, n, res, k):
    return {
        "image": rng.integers(0, 256, (n, res, res, 1)).astype(np.uint8),
        "labels": (rng.random((n, k)) < 0.4).astype(np.float32),
    }


def _run_gan(num_devices, steps=3):
    cfg = default.get_config("smoke")
    mesh = parallel.make_mesh(num_devices)
    rep = parallel.replicated(mesh)
    models = gan_models.build_models(
        cfg.gan, resolution=8, num_labels=3, channels=1, conv_lowering="im2col"
    )
    opt = gan.make_optimizer(cfg.gan)
    init = jax.jit(
        functools.partial(
            gan.init_state,
            0,
            models,
            opt,
            latent_dim=cfg.gan.latent_dim,
            num_labels=3,
            image_shape=(8, 8, 1),
        ),
        out_shardings=rep,
    )
    state = _compiled(init)()
    phase = build_schedule(cfg.gan, 8).phases[0]
    rng = np.random.default_rng(0)
    table = jax.device_put((rng.random((20, 3)) < 0.4).astype(np.float32), rep)
    batches = [parallel.to_global(_batch(rng, 8, 8, 3), mesh) for _ in range(steps)]
    step = _compiled(
        gan.make_train_step(cfg.gan, models, opt, phase), state, batches[0], table, donate=True
    )
    metrics = []
    for batch in batches:
        state, m = step(state, batch, table)
        metrics.append(jax.device_get(m))
    return parallel.to_host(state.fingerprinted()), metrics


def test_gan_step_same_on_one_and_four_devices():
    one, m1 = _run_gan(1)
    four, m4 = _run_gan(4)
    assert int(one["step"]) == 3
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    for a, b in zip(m1, m4, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)
    assert all(np.isfinite(v) for m in m1 for v in m.values())


def _run_classifier(num_devices, steps=3):
    cfg = default.get_config("smoke")
    mesh = parallel.make_mesh(num_devices)
    rep = parallel.replicated(mesh)
    model = classifier.build_model(cfg, 3)
    opt = classifier.make_optimizer(1e-3)
    init = jax.jit(
        functools.partial(classifier.init_state, 0, model, opt, (16, 16, 1)), out_shardings=rep
    )
    state = _compiled(init)()
    rng = np.random.default_rng(1)
    weights = jax.device_put(np.array([1.0, 2.0, 3.0], np.float32), rep)
    batches = [parallel.to_global(_batch(rng, 8, 16, 3), mesh) for _ in range(steps)]
    step = _compiled(
        functools.partial(classifier.train_step, model=model, optimizer=opt),
        state,
        batches[0],
        weights,
        donate=True,
    )
    for batch in batches:
        state, m = step(state, batch, weights)
    return parallel.to_host(state.fingerprinted()), jax.device_get(m)


def test_classifier_step_same_on_one_and_four_devices():
    one, m1 = _run_classifier(1)
    four, m4 = _run_classifier(4)
    # Batch-norm statistics are over the global batch on any number of devices. Adam
    # divides by sqrt(v), so summation-order noise in tiny gradients shows up as absolute
    # differences of a fraction of one step (lr 1e-3): compare at that scale.
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)


@pytest.mark.parametrize("pos,expected", [(np.array([[1, 0], [1, 0], [0, 0]]), [0.5, 1.0])])
def test_positive_weights(pos, expected):
    np.testing.assert_allclose(classifier.positive_weights(pos.astype(np.float32)), expected)


@pytest.mark.parametrize("arch", ["cpd", "prog"])
def test_gan_step_compiles_once_and_moves_nothing_implicitly(arch):
    """The training loop's contract for speed: one program per phase for the whole run (no
    recompiles as steps, batches and alpha change) and no implicit host<->device transfer:
    batches go in through `to_global`, metrics come out through `device_get`."""
    cfg = default.get_config("smoke")
    cfg.gan.arch = arch
    mesh = parallel.make_mesh(2)
    setup = gan.gan_setup(cfg, num_labels=3, image_shape=(16, 16, 1))
    rep = parallel.replicated(mesh)
    state = _compiled(jax.jit(setup.init, out_shardings=rep))()
    phase = setup.schedule.phases[-1 if arch == "cpd" else 1]  # prog: a fading phase
    step = jax.jit(
        gan.make_train_step(cfg.gan, setup.models, setup.optimizer, phase),
        donate_argnums=0,
        compiler_options=FAST_COMPILE,
    )
    rng = np.random.default_rng(2)
    table = jax.device_put((rng.random((20, 3)) < 0.4).astype(np.float32), rep)
    with jax.transfer_guard("disallow"):
        for _ in range(4):
            batch = parallel.to_global(_batch(rng, 8, 16, 3), mesh)
            state, metrics = step(state, batch, table)
            values = jax.device_get(metrics)
    assert step._cache_size() == 1
    assert all(np.isfinite(v) for v in values.values())
