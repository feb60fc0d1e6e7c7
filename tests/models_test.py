"""Tests for synthjax.models: conv lowerings, GAN layers and shapes, DenseNet sizes.

Everything runs on tiny shapes or through `jax.eval_shape`; each GAN/DenseNet test compiles
once so the file stays well under a minute on two CPU cores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.models import cpd_gan, dcgan, densenet, layers

TINY = dict(fmap_base=256, fmap_max=32)
STUDY_RESOLUTIONS = (32, 64, 128, 256)


# Tests check values, not speed: XLA's cheapest CPU settings cut compile time about 4x.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _run(fn, *args):
    """jit-compiles fn for these arguments with FAST_COMPILE and calls it."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


def _host_init(model, *args, he_scaled_kernels: bool = False, **kwargs):
    """Variables with the model's shapes, filled on the host.

    Compiling a model's `init` (one random draw per parameter) costs several seconds on two
    CPU cores; tests that only need plausible values use this instead. Kernels are N(0, 1)
    (what equalized layers store) or N(0, 2 / fan_in); conditional pixel-norm kernels are zero
    and BatchNorm scales and variances one, as after the real init.
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        names = [getattr(p, "key", "") for p in path]
        if names[-1] == "kernel" and not {"gamma", "beta"} & set(names):
            std = np.sqrt(2.0 / np.prod(leaf.shape[:-1])) if he_scaled_kernels else 1.0
            return (std * rng.standard_normal(leaf.shape)).astype(np.float32)
        one = names[-1] in ("scale", "var") or (names[-1] == "bias" and "gamma" in names)
        return np.full(leaf.shape, 1.0 if one else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# --- convolution lowering -------------------------------------------------------------------


def test_resolve_conv_lowering():
    assert layers.resolve_conv_lowering("native") == "native"
    assert layers.resolve_conv_lowering("im2col") == "im2col"
    assert layers.resolve_conv_lowering("hybrid") == "hybrid"
    expected = "hybrid" if jax.default_backend() == "cpu" else "native"
    assert layers.resolve_conv_lowering("auto") == expected
    with pytest.raises(ValueError, match="'auto', 'native', 'im2col', 'hybrid'"):
        layers.resolve_conv_lowering("winograd")


@pytest.mark.parametrize(
    "kernel_size, stride, padding, size",
    [(1, 1, "SAME", 6), (3, 1, "SAME", 6), (7, 2, 3, 12), (3, 2, "SAME", 7)],
)
def test_im2col_matches_native_values_and_gradients(kernel_size, stride, padding, size):
    x = _normal(0, (2, size, size, 3))
    kernel = _normal(1, (kernel_size, kernel_size, 3, 4))
    cotangent = _normal(
        2, layers.conv2d(x, kernel, stride=stride, padding=padding, lowering="native").shape
    )

    def loss(x, kernel, lowering):
        y = layers.conv2d(x, kernel, stride=stride, padding=padding, lowering=lowering)
        return jnp.sum(y * cotangent), y

    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
    (gx_n, gk_n), y_n, (gx_i, gk_i), y_i = _run(
        lambda x, k: (*grad(x, k, "native"), *grad(x, k, "im2col")), x, kernel
    )
    np.testing.assert_allclose(y_i, y_n, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gx_i, gx_n, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gk_i, gk_n, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("lowering", ["native", "im2col", "hybrid"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_fused_resampling_matches_unfused(lowering, kernel_size):
    x = _normal(0, (2, 6, 6, 3))
    kernel = _normal(1, (kernel_size, kernel_size, 3, 5))

    def fused_and_unfused(x, kernel):
        return (
            layers.resampled_conv2d(x, kernel, resample="up", lowering=lowering),
            layers.conv2d(layers.upsample_2x(x), kernel, lowering="native"),
            layers.resampled_conv2d(x, kernel, resample="down", lowering=lowering),
            layers.downsample_2x(layers.conv2d(x, kernel, lowering="native")),
        )

    up, up_ref, down, down_ref = _run(fused_and_unfused, x, kernel)
    assert up.shape == (2, 12, 12, 5) and down.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(up, up_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(down, down_ref, rtol=1e-5, atol=1e-4)


def test_upsample_and_downsample():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    up = layers.upsample_2x(x)
    np.testing.assert_array_equal(
        up[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )
    np.testing.assert_array_equal(layers.downsample_2x(up), x)
    np.testing.assert_allclose(layers.downsample_2x(x)[0, 0, 0, 0], 1.5)


# --- GAN layers ----------------------------------------------------------------------------


def test_minibatch_stddev_hand_case():
    # Group size 4 over a batch of 8: sample i is in group i % 2. Group 0 (even samples) is
    # constant, group 1 (odd samples) alternates 0, 2: population stddev 1.
    values = jnp.array([5.0, 0.0, 5.0, 2.0, 5.0, 0.0, 5.0, 2.0])
    x = jnp.broadcast_to(values[:, None, None, None], (8, 2, 2, 1))
    y = layers.minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 2, 2, 2)
    np.testing.assert_array_equal(y[..., :1], x)
    np.testing.assert_allclose(y[::2, :, :, 1], 1e-4, rtol=1e-3)  # sqrt(0 + 1e-8)
    np.testing.assert_allclose(y[1::2, :, :, 1], 1.0, rtol=1e-6)
    # A batch smaller than the group size is one group; the feature averages over channels.
    x2 = jnp.stack([jnp.zeros((1, 1, 2)), jnp.array([[[2.0, 0.0]]])])
    np.testing.assert_allclose(layers.minibatch_stddev(x2)[..., 2], (1.0 + 1e-4) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        layers.minibatch_stddev(jnp.zeros((6, 2, 2, 1)), group_size=4)


@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_equalized_dense_runtime_scale(lr_mul):
    layer = layers.EqualizedDense(256, lr_mul=lr_mul, bias_init=0.5, gain=2.0)
    x = _normal(0, (3, 64))
    params = _run(lambda x: layer.init(jax.random.key(1), x), x)["params"]
    # Stored weights are N(0, 1 / lr_mul^2); the effective initial bias is bias_init.
    np.testing.assert_allclose(np.std(params["kernel"]) * lr_mul, 1.0, rtol=0.05)
    np.testing.assert_allclose(params["bias"] * lr_mul, 0.5, rtol=1e-6)
    expected = x @ params["kernel"] * (2.0 * lr_mul / np.sqrt(64)) + params["bias"] * lr_mul
    y = _run(layer.apply, {"params": params}, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_equalized_conv_runtime_scale():
    layer = layers.EqualizedConv2D(4, 3, lr_mul=0.5, lowering="im2col")
    x = jnp.ones((1, 5, 5, 8))
    shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), x))["params"]
    params = {"kernel": jnp.ones(shapes["kernel"].shape), "bias": jnp.full((4,), 2.0)}
    y = _run(layer.apply, {"params": params}, x)
    # Interior pixel: 9 * 8 taps of 1, times he_std * lr_mul; bias 2 times lr_mul.
    np.testing.assert_allclose(y[0, 2, 2], 72 * 0.5 / np.sqrt(72) + 1.0, rtol=1e-6)


def test_conditional_pixel_norm_normalises_then_applies_per_sample_gain_and_shift():
    norm = cpd_gan.ConditionalPixelNorm()
    x = 10.0 * _normal(0, (2, 3, 3, 6))
    cond = _normal(1, (2, 5))

    def at_init_and_random(x, cond):
        params = norm.init(jax.random.key(2), x, cond)["params"]
        random = jax.tree.map(lambda p: _normal(3, p.shape), params)
        dense = layers.EqualizedDense(6)
        gamma = dense.apply({"params": random["gamma"]}, cond)
        beta = dense.apply({"params": random["beta"]}, cond)
        at_init = norm.apply({"params": params}, x, cond)
        return at_init, norm.apply({"params": random}, x, cond), gamma, beta

    at_init, y, gamma, beta = _run(at_init_and_random, x, cond)
    # At init gamma = 1 and beta = 0: a plain pixel norm.
    np.testing.assert_allclose(jnp.mean(at_init**2, axis=-1), 1.0, rtol=1e-5)
    normalised = x / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(
        y, normalised * gamma[:, None, None] + beta[:, None, None], rtol=1e-5, atol=1e-5
    )


# --- cpD-GAN -------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_gan_output_shapes(resolution):
    g = cpd_gan.Generator(resolution, num_labels=5, latent_dim=16, **TINY)
    d = cpd_gan.Discriminator(resolution, num_labels=5, **TINY)
    z, y = jnp.zeros((8, 16)), jnp.zeros((8, 5))
    key = jax.random.key(0)
    images = jax.eval_shape(lambda: g.init_with_output(key, z, y)[0])
    assert images.shape == (8, resolution, resolution, 1) and images.dtype == jnp.float32
    scores, logits = jax.eval_shape(lambda x: d.init_with_output(key, x, y)[0], images)
    assert scores.shape == (8,) and scores.dtype == jnp.float32 and logits is None


@pytest.mark.parametrize("conditioning", ["projection", "label_sum"])
def test_dcgan_shapes_range_and_channel_plan(conditioning):
    g = dcgan.Generator(32, num_labels=5, latent_dim=16, fmap_base=512, fmap_max=64)
    d = dcgan.Discriminator(
        32, num_labels=5, fmap_base=512, fmap_max=64, conditioning=conditioning, num_aux=5
    )
    z, y = _normal(0, (8, 16)), jnp.zeros((8, 5)).at[:, 1].set(1.0)
    g_vars = _host_init(g, z, y)
    images = g.apply(g_vars, 10.0 * z, y)
    assert images.shape == (8, 32, 32, 1)
    assert float(jnp.max(jnp.abs(images))) <= 1.0  # tanh: the data's range
    (scores, logits), _ = d.init_with_output(jax.random.key(1), images, y)
    assert scores.shape == (8,) and logits.shape == (8, 5)
    # Channels halve per doubling, clipped to [16, fmap_max]: 64 at 4x4 and 8x8, 32 at 16x16,
    # 16 at 32x32.
    assert [dcgan.feature_maps(r, 512, 64) for r in (4, 8, 16, 32, 64)] == [64, 64, 32, 16, 16]
    kernels = g_vars["params"]
    assert kernels["16x16_conv"]["kernel"].shape == (3, 3, 64, 32)
    assert kernels["to_rgb"]["kernel"].shape == (3, 3, 16, 1)


@pytest.mark.parametrize("norm", ["group", "adaptive"])
def test_dcgan_samples_do_not_depend_on_their_batch(norm):
    """Group norm, not batch norm: a sample is the same alone or among others."""
    g = dcgan.Generator(16, num_labels=3, latent_dim=8, fmap_base=256, fmap_max=32, norm=norm)
    z, y = _normal(0, (6, 8)), jnp.eye(3)[jnp.array([0, 1, 2, 0, 1, 2])]
    g_vars = _host_init(g, z, y)
    together = g.apply(g_vars, z, y)
    alone = g.apply(g_vars, z[:1], y[:1])
    np.testing.assert_allclose(together[:1], alone, atol=1e-5)


def test_dcgan_adaptive_norm_gives_each_sample_its_own_brightness():
    """Group norm takes every sample's mean and spread away; a shared affine cannot give them
    back (the first dcgan's samples all had one brightness). The adaptive norm's scale and
    shift come from each sample's z: it starts as plain group norm (zero-initialised) and
    can set the output's per-sample brightness."""
    kw = dict(num_labels=3, latent_dim=8, fmap_base=256, fmap_max=32)
    z, y = _normal(0, (64, 8)), jnp.zeros((64, 3))
    group, adaptive = dcgan.Generator(16, norm="group", **kw), dcgan.Generator(16, **kw)
    a_vars = jax.jit(adaptive.init)(jax.random.key(0), z, y)  # the real initialisation
    style = {k for k in a_vars["params"] if k.endswith("_style")}
    assert style == {f"{r}x{r}_norm_style" for r in (4, 8, 16)}
    assert all(not np.any(a_vars["params"][k]["kernel"]) for k in style)
    # The same weights elsewhere (group norm's affine at its init, 1 and 0): the same images.
    g_params = {
        k: (v if k.endswith("_norm") else a_vars["params"][k])
        for k, v in _host_init(group, z, y)["params"].items()
    }
    np.testing.assert_allclose(
        group.apply({"params": g_params}, z, y), adaptive.apply(a_vars, z, y), atol=1e-5
    )
    # A shift driven by z[0] in the last norm moves each image's brightness with z[0].
    last = dict(a_vars["params"]["16x16_norm_style"])
    channels = last["bias"].shape[0] // 2
    kernel = np.zeros(last["kernel"].shape, np.float32)
    kernel[0, channels:] = 1.0
    params = {**a_vars["params"], "16x16_norm_style": {**last, "kernel": jnp.asarray(kernel)}}
    brightness = np.asarray(adaptive.apply({"params": params}, z, y)).mean(axis=(1, 2, 3))
    before = np.asarray(adaptive.apply(a_vars, z, y)).mean(axis=(1, 2, 3))
    assert brightness.std() > 3 * before.std()
    assert abs(np.corrcoef(brightness, np.asarray(z[:, 0]))[0, 1]) > 0.5


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    key = jax.random.key(0)
    z, y = jnp.zeros((4, 16)), jnp.zeros((4, 5))
    g = cpd_gan.Generator(32, num_labels=5, latent_dim=16, dtype=jnp.bfloat16, **TINY)
    images, g_vars = jax.eval_shape(lambda: g.init_with_output(key, z, y))
    d = cpd_gan.Discriminator(32, num_labels=5, dtype=jnp.bfloat16, **TINY)
    (scores, _), d_vars = jax.eval_shape(lambda x: d.init_with_output(key, x, y), images)
    net = densenet.densenet_narrow(3, dtype=jnp.bfloat16)
    (logits, features), n_vars = jax.eval_shape(
        lambda: net.init_with_output(key, jnp.zeros((2, 32, 32, 1)), train=False)
    )
    assert images.dtype == scores.dtype == logits.dtype == features.dtype == jnp.float32
    leaves = jax.tree.leaves((g_vars, d_vars, n_vars))
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.float32)}


def test_gan_labels_condition_both_networks_and_d_projects_per_label_scores():
    k = 5
    g = cpd_gan.Generator(32, num_labels=k, latent_dim=16, **TINY)
    d = cpd_gan.Discriminator(32, num_labels=k, **TINY)
    # One latent, eight label vectors: one-hots, all-zero, and two multi-hots.
    labels = jnp.concatenate(
        [jnp.eye(k), jnp.zeros((1, k)), jnp.array([[1.0, 0, 1, 0, 1], [0, 1, 1, 1, 0]])]
    )
    z = jnp.broadcast_to(_normal(0, (1, 16)), (8, 16))
    g_vars = _host_init(g, z, labels)
    d_vars = _host_init(d, jnp.zeros((8, 32, 32, 1)), labels)

    def run(g_vars, d_vars):
        images = g.apply(g_vars, z, labels)
        # Every sample sees the same image, so D's per-label scores are shared by all rows.
        same_image = jnp.broadcast_to(images[:1], images.shape)
        scores = d.apply(d_vars, same_image, labels)[0]
        other_scores = d.apply(d_vars, same_image, labels[::-1])[0]
        return images, scores, other_scores

    images, scores, other_scores = _run(run, g_vars, d_vars)
    assert np.all(np.isfinite(images)) and np.all(np.isfinite(scores))
    pairwise = jnp.abs(images[:, None] - images[None]).max(axis=(2, 3, 4))
    assert np.all(pairwise + np.eye(8) > 1e-4), "every label vector must change G's output"
    per_label = scores[:k]
    assert np.all(np.abs(per_label) > 0)
    np.testing.assert_allclose(scores[k], 0.0)
    np.testing.assert_allclose(scores, labels @ per_label, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other_scores, labels[::-1] @ per_label, rtol=1e-5, atol=1e-6)


def _expected_generator_params(r, k, c, latent, fmap_base, fmap_max):
    nf = lambda s: cpd_gan.feature_maps(s, fmap_base, fmap_max)
    cond = latent + k
    cpn = lambda ch: 2 * (cond * ch + ch)
    conv = lambda kk, cin, cout: kk * kk * cin * cout + cout
    total = cond * 16 * nf(1) + 16 * nf(1) + cpn(nf(1))
    total += conv(3, nf(1), nf(1)) + cpn(nf(1)) + conv(1, nf(1), c)
    for log2 in range(3, int(np.log2(r)) + 1):
        cin, cout = nf(log2 - 2), nf(log2 - 1)
        total += conv(3, cin, cout) + conv(3, cout, cout) + 2 * cpn(cout) + conv(1, cout, c)
    return total


def _expected_discriminator_params(r, k, c, fmap_base, fmap_max):
    nf = lambda s: cpd_gan.feature_maps(s, fmap_base, fmap_max)
    conv = lambda kk, cin, cout: kk * kk * cin * cout + cout
    log2_r = int(np.log2(r))
    total = conv(1, c, nf(log2_r - 1))
    for log2 in range(log2_r, 2, -1):
        a, b = nf(log2 - 1), nf(log2 - 2)
        total += conv(3, a, a) + conv(3, a, b) + a * b  # shortcut has no bias
    total += conv(3, nf(1) + 1, nf(1)) + 16 * nf(1) * nf(0) + nf(0) + nf(0) * k + k
    return total


def test_study_size_models_build_with_expected_param_counts():
    counts = {r: cpd_gan.param_counts(r) for r in STUDY_RESOLUTIONS}
    study = dict(fmap_base=16384, fmap_max=512)
    for r, (g, d) in counts.items():
        assert g == _expected_generator_params(r, 14, 1, 512, **study)
        assert d == _expected_discriminator_params(r, 14, 1, **study)
        assert 20e6 < g < 40e6 and 20e6 < d < 40e6
    gs, ds = zip(*(counts[r] for r in STUDY_RESOLUTIONS), strict=True)
    assert list(gs) == sorted(set(gs)) and list(ds) == sorted(set(ds))


# --- DenseNet ------------------------------------------------------------------------------


def _densenet_params(model, channels, size):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False)
    )
    return layers.count_params(variables["params"])


def test_densenet121_param_count_matches_torchvision():
    assert _densenet_params(densenet.densenet121(1000), channels=3, size=224) == 7_978_856
    # One input channel and 14 labels change only the stem conv and the head.
    expected = 7_978_856 - 7 * 7 * 3 * 64 + 7 * 7 * 1 * 64 - 1025 * 1000 + 1025 * 14
    assert _densenet_params(densenet.densenet121(14), channels=1, size=224) == expected


def test_densenet_narrow_train_and_eval():
    model = densenet.densenet_narrow(num_classes=3)
    x = _normal(0, (4, 32, 32, 1))
    variables = _host_init(model, x, train=False, he_scaled_kernels=True)

    def run(variables, x):
        train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        eval_out = model.apply(variables, x, train=False)
        return updates["batch_stats"], train_out, eval_out

    new_stats, (train_logits, train_features), (eval_logits, eval_features) = _run(
        run, variables, x
    )
    stats = variables["batch_stats"]
    assert train_logits.shape == eval_logits.shape == (4, 3)
    assert train_features.shape == eval_features.shape == (4, 123)
    assert np.all(train_features >= 0) and np.all(np.isfinite(eval_logits))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, new_stats)
    assert all(jax.tree.leaves(changed)), "train mode must update every running statistic"
    assert not np.allclose(train_features, eval_features)
