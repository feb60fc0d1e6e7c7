"""Conditioning: does each recipe's generator draw what its labels ask for?

A tiny dataset where label k draws a bright bar in band k (and an all-zero vector draws
none) has a perfect classifier: the mean brightness of each band. A few hundred CPU steps
of each recipe must reach label fidelity > 0.9 under that classifier. Beside it, the unit
checks of the conditioning fix: the D step's fakes carry the real batch's labels, and an
all-zero label vector gets non-zero discriminator gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from synthjax.core import parallel
from synthjax.eval.label_fidelity import label_fidelity
from synthjax.models import conditioning
from synthjax.train import gan, gan_losses, gan_models, recipes

SIZE, K = 16, 3
BANDS = [(2, 5), (7, 10), (12, 15)]  # rows of label k's bar
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def bars(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8[N, 16, 16, 1]: grey noise, plus a bright bar in band k where label k is 1."""
    images = rng.normal(70, 12, (len(labels), SIZE, SIZE, 1))
    for k, (top, bottom) in enumerate(BANDS):
        on = labels[:, k] > 0.5
        images[on, top:bottom, 2:14] = rng.normal(210, 12, (on.sum(), bottom - top, 12, 1))
    return np.clip(images, 0, 255).astype(np.uint8)


def band_scores(images: np.ndarray) -> np.ndarray:
    """The perfect classifier of the bars: mean brightness per band, float[N, K]."""
    x = images.astype(np.float32)
    return np.stack([x[:, t:b, 2:14].mean(axis=(1, 2, 3)) for t, b in BANDS], axis=1)


def random_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.random((n, K)) < 0.4).astype(np.float32)  # ~22% all-zero rows


def _config(recipe: str, **overrides):
    c = default.get_config("smoke")
    c.gan.recipe = recipe
    c.gan.cpd.batch_size = c.gan.dcgan.batch_size = 32
    c.gan.latent_dim = 32
    c.gan.cpd.fmap_base = 256
    c.gan.cpd.fmap_max = c.gan.prog.fmap_max = 32
    c.gan.cpd.learning_rate = c.gan.dcgan.learning_rate = 0.002
    c.gan.ema_decay = 0.99
    c.conv_lowering = "native"
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = c
        for section in sections:
            node = node[section]
        node[name] = value
    return c


def train_on_bars(cfg, steps: int, seed: int = 0) -> tuple[float, dict]:
    """Trains cfg's GAN on bars for `steps`; returns (mean label fidelity, the result)."""
    rng = np.random.default_rng(seed)
    table = random_labels(2048, rng)
    data = bars(table, rng)
    setup = gan.gan_setup(cfg, num_labels=K, image_shape=(SIZE, SIZE, 1))
    mesh = parallel.make_mesh(1)
    replicated = parallel.replicated(mesh)
    state = jax.jit(setup.init, out_shardings=replicated).lower().compile(FAST_COMPILE)()
    phase = setup.schedule.phases[0]
    step_fn = gan.make_train_step(cfg.gan, setup.models, setup.optimizer, phase)
    label_table = jnp.asarray(table)
    batch = cfg.gan[cfg.gan.arch].batch_size
    example = {"image": jnp.asarray(data[:batch]), "labels": label_table[:batch]}
    compiled = (
        jax.jit(step_fn, donate_argnums=0)
        .lower(state, example, label_table)
        .compile(compiler_options=FAST_COMPILE)
    )
    for _ in range(steps):
        pick = rng.integers(0, len(table), batch)
        state, _ = compiled(
            state, {"image": jnp.asarray(data[pick]), "labels": label_table[pick]}, label_table
        )
    test_labels = random_labels(512, rng)
    z = rng.standard_normal((512, cfg.gan.latent_dim)).astype(np.float32)
    generate = jax.jit(functools.partial(gan.generate_images, models=setup.models))
    images = np.asarray(generate(state.g_ema, jnp.asarray(z), jnp.asarray(test_labels)))
    result = label_fidelity(band_scores(images), test_labels, ("top", "middle", "bottom"))
    return result["auroc_mean"], result


def test_the_band_classifier_is_perfect_on_real_bars():
    rng = np.random.default_rng(1)
    labels = random_labels(300, rng)
    result = label_fidelity(band_scores(bars(labels, rng)), labels, ("a", "b", "c"))
    assert result["auroc_mean"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe,arch", [("synthjax", "cpd"), ("study", "cpd"), ("synthjax", "dcgan")]
)
def test_each_recipe_draws_the_bars_its_labels_ask_for(recipe, arch):
    fidelity, result = train_on_bars(_config(recipe, **{"gan.arch": arch}), steps=300)
    assert fidelity > 0.9, result


def test_d_step_fakes_carry_the_real_batch_labels(monkeypatch):
    """The D step's generator call gets the real minibatch's label array itself; the G
    step's gets labels drawn from the table (checked while tracing: no compile)."""
    cfg = _config("study")
    setup = gan.gan_setup(cfg, num_labels=K, image_shape=(SIZE, SIZE, 1))
    seen = []
    original = gan_models.GanModels.generate

    def spy(self, g_params, z, labels, **kw):
        seen.append(labels)
        return original(self, g_params, z, labels, **kw)

    monkeypatch.setattr(gan_models.GanModels, "generate", spy)
    step = gan.make_train_step(cfg.gan, setup.models, setup.optimizer, setup.schedule.phases[0])
    checks = {}

    def traced(state, batch, table):
        out = step(state, batch, table)
        checks["d_fakes_are_the_batch_labels"] = seen[0] is batch["labels"]
        checks["g_fakes_are_the_batch_labels"] = seen[1] is batch["labels"]
        return out

    rng = np.random.default_rng(0)
    labels = random_labels(16, rng)
    batch = {"image": jnp.asarray(bars(labels, rng)), "labels": jnp.asarray(labels)}
    jax.eval_shape(traced, jax.eval_shape(setup.init), batch, jnp.asarray(random_labels(64, rng)))
    assert checks == {"d_fakes_are_the_batch_labels": True, "g_fakes_are_the_batch_labels": False}


@pytest.mark.parametrize("arch", ["cpd", "dcgan"])
@pytest.mark.parametrize("recipe", ["study", "synthjax"])
def test_all_zero_labels_reach_the_discriminator(recipe, arch):
    """An all-zero label vector scores something D can learn from (non-zero gradients)."""
    cfg = _config(recipe, **{"gan.arch": arch})
    setup = gan.gan_setup(cfg, num_labels=K, image_shape=(SIZE, SIZE, 1))
    state = jax.jit(setup.init).lower().compile(FAST_COMPILE)()
    images = jnp.asarray(bars(np.zeros((8, K), np.float32), np.random.default_rng(0)))
    x = images.astype(jnp.float32) / 127.5 - 1.0
    zeros = jnp.zeros((8, K), jnp.float32)

    def score(d_params):
        scores, _ = setup.models.discriminate(d_params, x, zeros, jnp.float32(1.0))
        return jnp.sum(scores)

    grads = jax.jit(jax.grad(score)).lower(state.d_params).compile(FAST_COMPILE)(state.d_params)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    assert norm > 1e-3


def test_conditioning_labels_add_an_explicit_no_finding_entry():
    y = jnp.array([[0, 0, 0], [1, 0, 1]], jnp.float32)
    np.testing.assert_array_equal(gan_models.conditioning_labels(y), [[0, 0, 0, 1], [1, 0, 1, 0]])


def test_normalised_label_embedding_has_unit_second_moment():
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 5.0, (4, 64)), jnp.float32)
    y = conditioning.normalize_second_moment(x)
    np.testing.assert_allclose(jnp.mean(y**2, axis=1), 1.0, rtol=1e-5)


def test_recipe_fields_override_the_recipe():
    cfg = _config("synthjax")
    assert recipes.resolve(cfg.gan).loss == "logistic_r1"
    cfg.gan.loss = "wgan_gp"
    cfg.gan.aux = "none"
    design = recipes.resolve(cfg.gan)
    assert (design.loss, design.aux, design.g_conditioning) == ("wgan_gp", "none", "mapping")
    study = recipes.resolve(_config("study").gan)
    assert (study.loss, study.g_conditioning, study.d_conditioning, study.aux) == (
        "wgan_gp",
        "concat",
        "label_sum",
        "none",
    )
    cfg.gan.aux = "hinge"
    with pytest.raises(ValueError, match=r"gan\.aux"):
        recipes.resolve(cfg.gan)
    # On dcgan the synthjax recipe drops R1 and mode seeking (both cost it on the quickstart);
    # an explicit value still wins.
    plain = _config("synthjax", **{"gan.arch": "dcgan"})
    assert (recipes.resolve(plain.gan).r1_gamma, recipes.resolve(plain.gan).mode_seeking) == (0, 0)
    assert recipes.resolve(_config("synthjax").gan).r1_gamma == 1.0  # cpD keeps R1
    plain.gan.mode_seeking = 0.5
    assert recipes.resolve(plain.gan).mode_seeking == 0.5


@pytest.mark.parametrize("arch", ["cpd", "prog", "dcgan"])
@pytest.mark.parametrize("recipe", ["study", "synthjax"])
def test_every_recipe_builds_a_train_step_for_every_architecture(arch, recipe):
    """The step of each arch x recipe traces (shapes only, nothing compiled) and reports the
    auxiliary terms exactly when the design has an auxiliary classifier."""
    cfg = _config(recipe)
    cfg.gan.arch = arch
    setup = gan.gan_setup(cfg, num_labels=K, image_shape=(SIZE, SIZE, 1))
    rng = np.random.default_rng(0)
    labels = random_labels(16, rng)
    batch = {"image": jnp.asarray(bars(labels, rng)), "labels": jnp.asarray(labels)}
    phase = setup.schedule.final
    step = gan.make_train_step(cfg.gan, setup.models, setup.optimizer, phase)
    _, metrics = jax.eval_shape(step, jax.eval_shape(setup.init), batch, jnp.asarray(labels))
    design = recipes.resolve(cfg.gan)
    assert ("label_loss_g" in metrics) == design.has_aux
    assert ("gp" in metrics) == (design.loss == "wgan_gp")


def test_mode_seeking_ratio_is_zero_for_a_generator_that_ignores_its_latent():
    z = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), jnp.float32)
    same = jnp.ones((8, 2, 2, 1))
    assert float(gan_losses.mode_seeking_ratio(same, z)) == 0.0
    # Images that move with z move the ratio: here |G1 - G2| = 2 |z1 - z2| on average.
    images = jnp.broadcast_to(2.0 * z[:, :1, None, None], (8, 2, 2, 1))
    want = float(jnp.mean(jnp.abs(images[:4] - images[4:])) / jnp.mean(jnp.abs(z[:4] - z[4:])))
    assert float(gan_losses.mode_seeking_ratio(images, z)) == pytest.approx(want)
