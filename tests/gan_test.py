"""GAN training pieces: prog-GAN growth and fade-in, the losses' terms, ADA's feedback loop,
and a few real train steps (both architectures, both losses, ADA, bfloat16)."""

import functools
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from configs import default
from synthjax.core import parallel
from synthjax.core.checkpoint import state_sha256
from synthjax.core.errors import Preempted
from synthjax.core.metrics import read_metrics
from synthjax.data import input_pipeline as pipeline
from synthjax.models import cpd_gan, layers, param_counts, prog_gan
from synthjax.train import augment, gan, gan_losses, loop

TINY = dict(fmap_base=64, fmap_max=16)
# Tests check values, not speed: XLA's cheapest CPU settings cut compile time severalfold.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compile(fn, *args, donate=True):
    jitted = jax.jit(fn, donate_argnums=0 if donate else ())
    return jitted.lower(*args).compile(compiler_options=FAST_COMPILE)


def _fresh_state(setup, sharding):
    """setup.init under FAST_COMPILE (drawing every parameter compiles slowly otherwise)."""
    init = jax.jit(setup.init, out_shardings=sharding)
    return init.lower().compile(compiler_options=FAST_COMPILE)()


def _run(fn, *args):
    return _compile(fn, *args, donate=False)(*args)


def _normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def _prog_models(resolution=16, num_labels=3, channels=1):
    g = prog_gan.Generator(resolution, num_labels, channels, latent_dim=8, **TINY)
    d = prog_gan.Discriminator(resolution, num_labels, channels, **TINY)
    z, y = jnp.zeros((4, 8)), jnp.zeros((4, num_labels))
    x = jnp.zeros((4, resolution, resolution, channels))
    g_vars = _run(lambda z, y: g.init(jax.random.key(0), z, y, build_all=True), z, y)
    d_vars = _run(lambda x, y: d.init(jax.random.key(1), x, y, build_all=True), x, y)
    return g, d, g_vars, d_vars


# --- prog-GAN growth --------------------------------------------------------------------


def test_prog_gan_grows_with_one_parameter_tree_and_fades_in_continuously():
    g, d, g_vars, d_vars = _prog_models(resolution=16)
    z, y = _normal(0, (4, 8)), jnp.eye(4, 3)
    x16 = _normal(1, (4, 16, 16, 1))

    def run(g_vars, d_vars):
        return {
            "g8": g.apply(g_vars, z, y, 1.0, level=8),
            "g16_a0": g.apply(g_vars, z, y, 0.0, level=16),
            "g16_a1": g.apply(g_vars, z, y, 1.0, level=16),
            "g16_mid": g.apply(g_vars, z, y, 0.3, level=16),
            "d8": d.apply(d_vars, layers.downsample_2x(x16), y, 1.0),
            "d16_a0": d.apply(d_vars, x16, y, 0.0),
            "d16_a1": d.apply(d_vars, x16, y, 1.0),
        }

    out = _run(run, g_vars, d_vars)
    assert out["g8"].shape == (4, 8, 8, 1) and out["g16_a1"].shape == (4, 16, 16, 1)
    # alpha 0: the new layers have no weight, so the grown networks equal the old ones.
    np.testing.assert_allclose(out["g16_a0"], layers.upsample_2x(out["g8"]), atol=1e-5)
    for a, b in zip(out["d16_a0"], out["d8"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # In between, a straight line from the old output to the new one.
    expected = 0.7 * out["g16_a0"] + 0.3 * out["g16_a1"]
    np.testing.assert_allclose(out["g16_mid"], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["g16_a1"], out["g16_a0"], atol=1e-3)
    scores, logits = out["d16_a1"]
    assert scores.shape == (4,) and logits.shape == (4, 3)


def test_prog_gan_unused_layers_get_no_gradient_at_the_first_level():
    g, _, g_vars, _ = _prog_models(resolution=16)
    z, y = _normal(0, (2, 8)), jnp.ones((2, 3))
    grads = _run(jax.grad(lambda v: jnp.sum(g.apply(v, z, y, 1.0, level=8) ** 2)), g_vars)["params"]
    for name, tree in grads.items():
        norm = float(sum(jnp.sum(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)))
        if name.startswith("16x16"):
            assert norm == 0.0, name
        else:
            assert norm > 0.0, name


def test_prog_gan_param_counts_for_the_study_sizes():
    counts = {r: prog_gan.param_counts(r) for r in (32, 64, 128, 256, 512, 1024)}
    # ProGAN at 1024 without labels, RGB, grown from 4x4: 23.1M per network (Karras et al.).
    g, d = prog_gan.param_counts(1024, num_labels=0, channels=3, start_resolution=4)
    assert round(g / 1e6, 1) == 23.1 and round(d / 1e6, 1) == 23.1
    gs = [counts[r][0] for r in sorted(counts)]
    assert gs == sorted(set(gs))  # every resolution adds layers
    # Conditioning: 14 labels add 14 x 4 x 4 x 512 weights to G's first layer, 14 outputs to D.
    g32, d32 = counts[32]
    g0, d0 = prog_gan.param_counts(32, num_labels=0)
    assert g32 - g0 == 14 * 16 * 512 and d32 - d0 == 14 * 513


# --- loss terms ---------------------------------------------------------------------------


def test_label_penalty_uses_labels_normalised_to_sum_one():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]])
    labels = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    log_p = jax.nn.log_softmax(logits)
    expected = [-(log_p[0, 0] + log_p[0, 1]) / 2, -log_p[1, 2], 0.0]
    np.testing.assert_allclose(gan_losses.label_penalty(logits, labels), expected, rtol=1e-6)


def test_r1_penalty_matches_finite_differences():
    w = _normal(0, (4, 4, 2))

    def critic(x):  # smooth and per sample, so central differences are accurate
        return jnp.sum(jnp.tanh(x * w), axis=(1, 2, 3)) + 0.5 * jnp.sum(x**2, axis=(1, 2, 3))

    x = 0.5 * _normal(1, (3, 4, 4, 2))
    penalty = float(_run(lambda x: gan_losses.r1_penalty(critic, x), x))
    h, flat = 1e-2, np.asarray(x).reshape(3, -1)
    grads = np.zeros_like(flat)
    for i in range(flat.shape[1]):
        e = np.zeros_like(flat)
        e[:, i] = h
        up = np.asarray(critic(jnp.asarray((flat + e).reshape(x.shape))))
        down = np.asarray(critic(jnp.asarray((flat - e).reshape(x.shape))))
        grads[:, i] = (up - down) / (2 * h)
    expected = np.mean(np.sum(grads**2, axis=1))
    np.testing.assert_allclose(penalty, expected, rtol=1e-3)


def test_reals_at_level_fade_like_the_generator():
    real = _normal(0, (2, 16, 16, 1))
    down8 = layers.downsample_2x(real)
    np.testing.assert_allclose(gan.reals_at_level(real, 8, 1.0, False), down8, atol=1e-6)
    at0 = gan.reals_at_level(real, 16, jnp.float32(0.0), True)
    np.testing.assert_allclose(at0, layers.upsample_2x(down8), atol=1e-6)
    np.testing.assert_allclose(gan.reals_at_level(real, 16, jnp.float32(1.0), True), real)


# --- ADA's feedback loop ------------------------------------------------------------------


@pytest.mark.parametrize("brightness, direction", [(0.8, 1), (-0.8, -1)])
def test_ada_strength_follows_a_toy_discriminator(brightness, direction):
    """A toy D that scores images by brightness: on bright reals it is 'overconfident'
    (r_t = 1 > 0.6) and p must rise; on dark reals (r_t = -1) p must fall."""

    def toy_d(images):
        return jnp.mean(images, axis=(1, 2, 3))

    adapt = jax.jit(
        functools.partial(augment.adapt_augmentation, target=0.6, interval=4, speed_kimg=0.1)
    )
    p, signs, count = jnp.float32(0.5), jnp.float32(0.0), jnp.float32(0.0)
    history = []
    for step in range(16):
        reals = brightness + 0.1 * _normal(step, (8, 4, 4, 1))
        p, signs, count, rt = adapt(p, signs, count, toy_d(reals), jnp.int32(step))
        history.append(float(p))
    assert float(rt) == pytest.approx(float(direction))
    # Moves only every 4 steps, by 8 images x 4 steps / 100 images = 0.32, clipped to [0, 1].
    expected = [min(1.0, max(0.0, 0.5 + direction * 0.32 * (s // 4))) for s in range(1, 17)]
    np.testing.assert_allclose(history, expected, atol=1e-6)


def test_ada_centre_reads_a_wgan_critic_with_an_offset():
    """A WGAN critic may score every real below 0 and still tell reals from fakes. Signs
    about 0 then say "all fake" (r_t = -1); about the real/fake midpoint they say what D
    sees: here every real is above it (r_t = 1), so p must rise."""
    real = jnp.asarray([-3.0, -2.5, -2.0, -2.8])
    fake = jnp.asarray([-6.0, -5.5, -5.0, -6.5])
    center = 0.5 * (jnp.mean(real) + jnp.mean(fake))
    adapt = functools.partial(augment.adapt_augmentation, target=0.6, interval=1, speed_kimg=0.1)
    zero = jnp.float32(0.0)
    p0, *_, rt0 = adapt(jnp.float32(0.5), zero, zero, real, jnp.int32(0))
    p1, *_, rt1 = adapt(jnp.float32(0.5), zero, zero, real, jnp.int32(0), center)
    assert (float(rt0), float(rt1)) == (-1.0, 1.0)
    assert float(p0) < 0.5 < float(p1)


@pytest.mark.parametrize(
    "loss, center, resolved",
    [("wgan_gp", "auto", "midpoint"), ("logistic_r1", "auto", "zero"), ("wgan_gp", "zero", "zero")],
)
def test_ada_centre_follows_the_loss(loss, center, resolved):
    cfg = default.get_config("smoke")
    cfg.gan.loss, cfg.gan.ada.center = loss, center
    assert augment.ada_center(cfg.gan) == resolved
    assert gan.StepSettings.from_config(cfg.gan).ada.midpoint == (resolved == "midpoint")


# --- real train steps -----------------------------------------------------------------------


def _steps(arch, loss, *, ada, bf16_resolution=0, resolution=16, steps=None):
    cfg = default.get_config("smoke")
    cfg.gan.recipe = "study"  # the study's networks; the loss as asked
    cfg.gan.arch, cfg.gan.loss = arch, loss
    cfg.gan.ada.enabled = ada
    cfg.gan.bf16_resolution = bf16_resolution
    cfg.gan.r1_interval = 2
    cfg.gan.cpd.fmap_base = cfg.gan.prog.fmap_base = 64
    cfg.gan.cpd.fmap_max = cfg.gan.prog.fmap_max = 16
    cfg.gan.ada.speed_kimg = 0.05
    mesh = parallel.make_mesh(2)
    rep = parallel.replicated(mesh)
    setup = gan.gan_setup(cfg, num_labels=3, image_shape=(resolution, resolution, 1))
    state = _fresh_state(setup, rep)
    rng = np.random.default_rng(0)
    table = jax.device_put((rng.random((20, 3)) < 0.5).astype(np.float32), rep)
    compiled, metrics = {}, []
    for step in steps or range(setup.schedule.total_steps):
        phase = setup.schedule.phase_at(step)
        batch = {
            "image": rng.integers(0, 256, (16, resolution, resolution, 1)).astype(np.uint8),
            "labels": (rng.random((16, 3)) < 0.5).astype(np.float32),
        }
        batch = parallel.to_global(batch, mesh)
        state = state.replace(step=jnp.int32(step)) if steps else state
        if phase.index not in compiled:
            fn = gan.make_train_step(cfg.gan, setup.models, setup.optimizer, phase)
            compiled[phase.index] = _compile(fn, state, batch, table)
        state, m = compiled[phase.index](state, batch, table)
        metrics.append(jax.device_get(m))
    return state, metrics, setup


@pytest.mark.slow  # ~45 s; bf16 steps also run in benchmarks/mixed_precision.py
def test_cpd_logistic_r1_with_ada_in_bfloat16_stays_finite():
    state, metrics, _ = _steps("cpd", "logistic_r1", ada=True, bf16_resolution=8, steps=range(6))
    assert all(np.isfinite(v) for m in metrics for v in m.values())
    r1 = [float(m["r1"]) for m in metrics]
    assert r1[0] > 0 and r1[1] == 0.0 and r1[2] > 0  # lazy: every r1_interval = 2 steps
    assert {leaf.dtype for leaf in jax.tree.leaves(state.g_params)} == {jnp.dtype(jnp.float32)}
    # p moves once, after step 4 (interval 4), by 64 images / 50 = 1.28: clipped to 0 or 1.
    assert [float(m["ada_p"]) for m in metrics[:4]] == [0.0] * 4
    assert float(metrics[4]["ada_p"]) == (1.0 if float(metrics[3]["ada_rt"]) > 0.6 else 0.0)
    assert "gp" not in metrics[0] and "label_loss_d" not in metrics[0]


def test_prog_run_stopped_mid_fade_resumes_to_the_same_fingerprint(tmp_path):
    """The training loop with prog-GAN's per-phase steps and batch plan, bfloat16 at 16x16:
    stopped by SIGTERM at step 17 (inside the 16x16 fade-in, 10..20), then resumed, it ends
    where an uninterrupted run ends, bit for bit; alpha rises over the fade, Adam restarts
    where layers are added and settle, every logged number is finite."""
    cfg = default.get_config("smoke")
    cfg.gan.arch = "prog"
    cfg.gan.recipe = "study"  # WGAN-GP and the AC-GAN head, as the study's prog-GAN
    cfg.gan.bf16_resolution = 16
    cfg.gan.cpd.fmap_base = cfg.gan.prog.fmap_base = 64
    cfg.gan.cpd.fmap_max = cfg.gan.prog.fmap_max = 16
    mesh = parallel.make_mesh(2)
    rep = parallel.replicated(mesh)
    setup = gan.gan_setup(cfg, num_labels=3, image_shape=(16, 16, 1))
    schedule = setup.schedule
    assert schedule.phase_at(17).index == 1 and 0 < schedule.phase_at(17).alpha(17) < 1
    rng = np.random.default_rng(0)
    source = [
        {
            "image": rng.integers(0, 256, (16, 16, 1)).astype(np.uint8),
            "labels": (rng.random(3) < 0.5).astype(np.float32),
        }
        for _ in range(40)
    ]
    table = jax.device_put(np.stack([r["labels"] for r in source]), rep)
    init = jax.jit(setup.init, out_shardings=rep).lower().compile(compiler_options=FAST_COMPILE)
    state0 = init()
    batches = pipeline.train_dataset(
        source, np.arange(40), global_batch=schedule.batch_plan(), seed=0
    )
    steps = [
        _compile(
            gan.make_train_step(cfg.gan, setup.models, setup.optimizer, p),
            state0,
            parallel.to_global(batches[p.start_step], mesh),
            table,
        )
        for p in schedule.phases
    ]

    def run(stage_dir, hooks=()):
        return loop.train_loop(
            loop.LoopSettings(
                name="gan",
                stage_dir=epath.Path(stage_dir),
                total_steps=schedule.total_steps,
                global_batch=0,
                checkpoint_every=5,
                log_every=1,
                images_at=schedule.images_at,
            ),
            mesh=mesh,
            create_state=init,
            step_fn=lambda s, b, i: steps[schedule.phase_at(i).index](s, b, table),
            dataset=pipeline.train_dataset(
                source, np.arange(40), global_batch=schedule.batch_plan(), seed=0
            ),
            hooks=hooks,
        )

    reference = run(tmp_path / "reference")

    def stop_at_17(state, step):
        if step == 17:
            os.kill(os.getpid(), signal.SIGTERM)
        return state, {}

    with pytest.raises(Preempted, match="step 17"):
        run(tmp_path / "resumed", hooks=[loop.Hook("stop", 1, stop_at_17)])
    resumed = run(tmp_path / "resumed")
    assert resumed.start_step == 17 and resumed.step == reference.step == 30
    assert state_sha256(resumed.state.fingerprinted()) == state_sha256(
        reference.state.fingerprinted()
    )
    assert float(resumed.state.alpha) == 1.0 and int(resumed.state.phase) == 1
    records = read_metrics(tmp_path / "reference" / "metrics.jsonl")
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k not in ("step", "stage"))
    alpha = {r["step"]: r.get("alpha") for r in records}
    fade = schedule.phases[1]
    assert alpha[10] is None and alpha[11] == 0.0  # step 11 ran step index 10
    assert alpha[12] == pytest.approx(1 / fade.fade_steps) and alpha[20] < 1.0
    assert {"label_loss_d", "label_loss_g", "gp"} <= set(records[0])
    # Adam restarted when the 16x16 layers settled (step index 20): 10 updates since.
    counts = {int(leaf) for leaf in jax.tree.leaves(reference.state.opt.g) if leaf.ndim == 0}
    assert counts == {10}


def test_readme_states_the_param_counts_it_prints():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = param_counts.markdown_table(param_counts.study_param_counts())
    assert table in readme


@pytest.mark.parametrize("arch", ["cpd", "prog"])
def test_one_pass_over_stacked_minibatches_scores_each_as_alone(arch):
    """The train step scores reals and fakes in one discriminator pass (num_batches=2); the
    minibatch-stddev statistics must stay within each minibatch, as with two passes."""
    real, fake = _normal(2, (8, 16, 16, 1)), 3.0 * _normal(3, (8, 16, 16, 1))
    labels = (jax.random.uniform(jax.random.key(4), (16, 3)) < 0.5).astype(jnp.float32)
    if arch == "prog":
        _, d, _, d_vars = _prog_models()
        score = lambda x, y, **kw: d.apply(d_vars, x, y, 1.0, **kw)[0]
    else:
        d = cpd_gan.Discriminator(16, 3, 1, fmap_base=64, fmap_max=16)
        d_vars = _run(lambda x, y: d.init(jax.random.key(1), x, y), real, labels[:8])
        score = lambda x, y, **kw: d.apply(d_vars, x, y, **kw)[0]
    both = _run(
        lambda a, b, y: score(jnp.concatenate([a, b]), y, num_batches=2), real, fake, labels
    )
    alone = _run(
        lambda a, b, y: jnp.concatenate([score(a, y[:8]), score(b, y[8:])]), real, fake, labels
    )
    np.testing.assert_allclose(both, alone, rtol=1e-5, atol=1e-5)
    # Scored as one minibatch of 16, the statistics would mix reals and fakes.
    mixed = _run(lambda a, b, y: score(jnp.concatenate([a, b]), y), real, fake, labels)
    assert np.max(np.abs(np.asarray(mixed) - np.asarray(alone))) > 1e-3
