"""Adaptive discriminator augmentation: gates, geometry, statistics, gradients, p updates."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.core import parallel
from synthjax.train import augment

# One batch shape for the single-augmentation tests, so each augmentation compiles once.
N, SIZE, CHANNELS = 1024, 32, 3

_augment = jax.jit(augment.augment, static_argnames="augmentations")
_update = jax.jit(
    augment.update_strength, static_argnames=("target", "images_per_update", "speed_kimg")
)


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed)


def _run(images: np.ndarray, seed: int, p: float, *names: str) -> np.ndarray:
    return np.asarray(
        _augment(jnp.asarray(images), _key(seed), jnp.float32(p), augmentations=names)
    )


def _smooth_images(seed: int, n: int, size: int = SIZE, channels: int = 1) -> np.ndarray:
    """float32[n, size, size, channels] in [-0.9, 0.9]: blurred noise, different per sample,
    with no symmetry that an augmentation could map onto itself."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, size, size, channels))
    freq = np.fft.fftfreq(size)
    lowpass = np.exp(-(freq[:, None] ** 2 + freq[None, :] ** 2) / (2 * 0.08**2))
    smooth = np.real(
        np.fft.ifft2(np.fft.fft2(noise, axes=(1, 2)) * lowpass[..., None], axes=(1, 2))
    )
    smooth /= np.abs(smooth).max(axis=(1, 2, 3), keepdims=True)
    return (0.9 * smooth).astype(np.float32)


def _grey(seed: int) -> np.ndarray:
    """float32[N, SIZE, SIZE, CHANNELS]: _smooth_images with equal channels."""
    return np.repeat(_smooth_images(seed, N), CHANNELS, axis=-1)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool[B]: which samples differ at all."""
    return np.any(np.asarray(a) != np.asarray(b), axis=(1, 2, 3))


def _blobs(sigma_x: float, sigma_y: float) -> np.ndarray:
    """float32[N, SIZE, SIZE, CHANNELS]: a centred Gaussian blob, -1 background, peak 1."""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    blob = 2 * np.exp(-(x**2) / (2 * sigma_x**2) - y**2 / (2 * sigma_y**2)) - 1
    return np.broadcast_to(blob[None, :, :, None], (N, SIZE, SIZE, CHANNELS)).astype(np.float32)


def _moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central second moments (mu_xx, mu_yy, mu_xy) of channel 0 + 1, per sample."""
    w = (np.asarray(images, np.float64)[..., 0] + 1) / 2
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    total = w.sum(axis=(1, 2))
    dx = x[None] - ((w * x).sum(axis=(1, 2)) / total)[:, None, None]
    dy = y[None] - ((w * y).sum(axis=(1, 2)) / total)[:, None, None]
    return tuple((w * d).sum(axis=(1, 2)) / total for d in (dx * dx, dy * dy, dx * dy))


@pytest.mark.parametrize("name", augment.AUGMENTATIONS)
def test_each_augmentation_keeps_shape_dtype_and_sample_identity(name):
    # Sample i carries its own colour signature v_i (channel offsets summing to 0, at angle
    # 2*pi*i/N) on a grey texture. Each augmentation only keeps a sample's mean chroma or
    # scales it by a positive factor (cutout, contrast), so output i must still point at v_i
    # and at no other sample's signature.
    angles = 2 * np.pi * np.arange(N) / N
    chroma = 0.25 * np.cos(angles[:, None] - 2 * np.pi * np.arange(3)[None, :] / 3)
    images = 0.6 * _grey(0) + chroma[:, None, None, :].astype(np.float32)
    out = _augment(jnp.asarray(images), _key(1), jnp.float32(1.0), augmentations=(name,))
    assert out.shape == images.shape and out.dtype == jnp.float32
    assert _changed(out, images).mean() > 0.9

    def signature(x):
        x = np.asarray(x, np.float64)
        v = (x - x.mean(axis=-1, keepdims=True)).mean(axis=(1, 2))
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    np.testing.assert_array_equal(
        np.argmax(signature(out) @ signature(images).T, axis=1), np.arange(N)
    )


def test_samples_are_augmented_independently():
    # Changing one input sample changes exactly that output sample, bit for bit.
    images = _smooth_images(2, 8)
    other = images.copy()
    other[5] = _smooth_images(3, 1)[0]
    names = augment.AUGMENTATIONS
    changed = _changed(_run(images, 4, 1.0, *names), _run(other, 4, 1.0, *names))
    np.testing.assert_array_equal(changed, np.arange(8) == 5)


@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_exact_identity(channels):
    images = _smooth_images(5, 8, channels=channels)
    out = _run(images, 6, 0.0, *augment.AUGMENTATIONS)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), images.view(np.uint32))
    np.testing.assert_array_equal(_run(images, 6, 1.0), images)  # nothing enabled


@pytest.mark.parametrize("name", augment.AUGMENTATIONS)
def test_gate_opens_with_probability_p(name):
    images = _grey(7)
    # p = 1 changes (nearly) every sample: translation draws a zero shift on both axes with
    # probability (1/8)^2 at size 32; every other augmentation changes every sample.
    assert _changed(_run(images, 8, 1.0, name), images).mean() >= 0.95
    assert 0.26 <= _changed(_run(images, 8, 0.3, name), images).mean() <= 0.34


def test_gates_are_independent_across_augmentations():
    images = _grey(9)
    out = _run(images, 10, 0.5, "brightness", "cutout")
    zeroed = np.any((out == 0) & (images != 0), axis=(1, 2, 3))
    # Brightness changes every pixel; cutout alone changes at most a quarter of them.
    shifted = np.mean(out != images, axis=(1, 2, 3)) > 0.5
    assert 0.45 <= zeroed.mean() <= 0.55 and 0.45 <= shifted.mean() <= 0.55
    assert 0.2 <= np.mean(zeroed & shifted) <= 0.3  # 0.5 * 0.5


def test_integer_translation_is_exact_with_mirrored_borders():
    rng = np.random.default_rng(11)
    images = rng.uniform(-1, 1, (N, SIZE, SIZE, CHANNELS)).astype(np.float32)
    out = _run(images, 12, 1.0, "translate")
    m = 4  # round(0.125 * 32): the largest shift
    shifts = []
    for image, result in zip(images[:128], out[:128], strict=True):
        padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")
        found = [
            (dy, dx)
            for dy in range(-m, m + 1)
            for dx in range(-m, m + 1)
            if np.array_equal(padded[m - dy : m - dy + SIZE, m - dx : m - dx + SIZE], result)
        ]
        assert len(found) == 1, "not an exact integer shift with mirrored borders"
        shifts.append(found[0])
    shifts = np.array(shifts)
    assert np.abs(shifts).max() == m
    assert len(np.unique(shifts[:, 0])) >= 7 and len(np.unique(shifts[:, 1])) >= 7


def test_xflip_mirrors_width():
    images = _smooth_images(13, N, channels=CHANNELS)
    np.testing.assert_array_equal(_run(images, 14, 1.0, "xflip"), images[:, :, ::-1])


def test_geometric_transforms_leave_no_padding_cue():
    # Zero padding would put dark corners into a rotated or shrunk constant image.
    images = np.full((32, 16, 16, 1), 0.7, np.float32)
    out = _run(images, 15, 1.0, "translate", "rotate", "scale")
    np.testing.assert_allclose(out, images, atol=1e-6)


def test_rotation_angles_are_small_and_spread():
    mxx, myy, mxy = _moments(_run(_blobs(6.0, 2.0), 16, 1.0, "rotate"))
    degrees = np.degrees(0.5 * np.arctan2(2 * mxy, mxx - myy))
    max_deg = augment.ROTATE_MAX_DEGREES
    assert np.abs(degrees).max() <= max_deg + 0.5
    assert np.abs(degrees).max() >= 0.9 * max_deg
    assert 0.9 <= np.std(degrees) / (max_deg / np.sqrt(3)) <= 1.1  # uniform on [-max, max]


def test_scale_is_lognormal():
    images = _blobs(3.0, 3.0)
    before, after = _moments(images), _moments(_run(images, 17, 1.0, "scale"))
    log2_ratio = 0.5 * np.log2((after[0] + after[1]) / (before[0] + before[1]))
    assert abs(np.mean(log2_ratio)) < 0.03
    assert 0.9 <= np.std(log2_ratio) / augment.SCALE_LOG2_STD <= 1.1


def test_brightness_statistics():
    images = _grey(18)
    diff = _run(images, 19, 1.0, "brightness").astype(np.float64) - images
    offsets = diff.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        diff, np.broadcast_to(offsets[:, None, None, None], diff.shape), atol=1e-6
    )
    assert abs(offsets.mean()) < 0.02
    assert 0.9 <= offsets.std() / augment.BRIGHTNESS_STD <= 1.1


def test_contrast_statistics():
    images = _grey(20).astype(np.float64)
    out = _run(images.astype(np.float32), 21, 1.0, "contrast").astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), atol=1e-5)
    log2_factor = np.log2(out.std(axis=(1, 2, 3)) / images.std(axis=(1, 2, 3)))
    assert abs(log2_factor.mean()) < 0.05
    assert 0.9 <= log2_factor.std() / augment.CONTRAST_LOG2_STD <= 1.1


def test_cutout_is_a_clipped_grey_square():
    rng = np.random.default_rng(22)
    images = rng.uniform(0.2, 1.0, (N, SIZE, SIZE, CHANNELS)).astype(np.float32)
    out = _run(images, 23, 1.0, "cutout")
    cut = out == 0
    np.testing.assert_array_equal(out[~cut], images[~cut])
    np.testing.assert_array_equal(cut, cut[..., :1] & np.ones_like(cut))  # all channels
    cut = cut[..., 0]
    rows, cols = cut.any(axis=2), cut.any(axis=1)
    np.testing.assert_array_equal(cut, rows[:, :, None] & cols[:, None, :])  # one rectangle
    side = int(augment.CUTOUT_SIZE * SIZE)
    for line in np.concatenate([rows, cols]):
        (idx,) = np.nonzero(line)
        assert 0 < len(idx) <= side and idx[-1] - idx[0] + 1 == len(idx)
        if 0 < idx[0] and idx[-1] < SIZE - 1:
            assert len(idx) == side
    # A uniform centre covers 0.4375 of each axis on average, 0.19 of the area.
    assert 0.17 <= cut.mean() <= 0.21


def test_randomness_comes_from_the_key():
    images = _grey(24)
    np.testing.assert_array_equal(_run(images, 25, 1.0, "rotate"), _run(images, 25, 1.0, "rotate"))
    assert _changed(_run(images, 25, 1.0, "rotate"), _run(images, 26, 1.0, "rotate")).all()


def test_gradients_flow_and_p_does_not_recompile():
    traces = []
    images = jnp.asarray(_smooth_images(27, 8, size=16))
    weights = jnp.linspace(0.5, 1.5, images.size, dtype=jnp.float32).reshape(images.shape)

    def loss(x, p):
        traces.append(None)
        y = augment.augment(x, _key(28), p, augmentations=augment.AUGMENTATIONS)
        return jnp.sum(weights * y)

    grad = jax.jit(jax.grad(loss))
    g1 = np.asarray(grad(images, jnp.float32(1.0)))
    assert np.all(np.isfinite(g1)) and np.any(g1 != 0)
    g0 = np.asarray(grad(images, jnp.float32(0.0)))
    np.testing.assert_array_equal(g0, weights)  # p == 0: the identity's gradient
    assert not np.allclose(g1, g0)
    grad(images, jnp.float32(0.3))
    assert len(traces) == 1 and grad._cache_size() == 1


def test_second_order_gradients_for_a_gradient_penalty():
    def critic(x):
        y = augment.augment(x, _key(29), 1.0, augmentations=augment.AUGMENTATIONS)
        return jnp.sum(jnp.tanh(y) ** 2)

    images = jnp.asarray(_smooth_images(30, 4, size=8))
    penalty = jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(critic)(x) ** 2)))(images)
    assert np.all(np.isfinite(penalty)) and np.any(penalty != 0)


def test_batch_sharded_over_devices_matches_one_device():
    mesh = parallel.make_mesh(4)
    images = jnp.asarray(_smooth_images(31, 8))
    run = jax.jit(
        functools.partial(augment.augment, augmentations=augment.AUGMENTATIONS),
        in_shardings=(parallel.batch_sharding(mesh), parallel.replicated(mesh), None),
    )
    sharded = run(jax.device_put(images, parallel.batch_sharding(mesh)), _key(32), 1.0)
    # Same random draws whatever the sharding; only float rounding may differ.
    single = _run(images, 32, 1.0, *augment.AUGMENTATIONS)
    np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-5)


def test_update_strength():
    kw = {"target": 0.6, "images_per_update": 256, "speed_kimg": 100.0}
    step = 256 / (100.0 * 1000)
    up = _update(jnp.float32(0.5), jnp.float32(0.9), **kw)
    down = _update(jnp.float32(0.5), jnp.float32(0.1), **kw)
    assert up.dtype == jnp.float32 and up.shape == ()
    np.testing.assert_allclose(up, 0.5 + step, rtol=1e-6)
    np.testing.assert_allclose(down, 0.5 - step, rtol=1e-6)
    assert _update(jnp.float32(0.5), jnp.float32(0.6), **kw) == jnp.float32(0.5)
    assert _update(jnp.float32(0.5), jnp.float32(jnp.nan), **kw) == jnp.float32(0.5)
    assert _update(jnp.float32(0.999), jnp.float32(1.0), **kw) == 1.0
    assert _update(jnp.float32(0.001), jnp.float32(-1.0), **kw) == 0.0
    assert augment.update_strength(0.0, -1.0, **kw) == 0.0  # plain Python numbers work too
    with pytest.raises(ValueError, match="speed_kimg"):
        augment.update_strength(0.5, 0.9, target=0.6, images_per_update=256, speed_kimg=0)


def test_parse_augmentations():
    assert augment.parse_augmentations("rotate,translate,rotate") == ("translate", "rotate")
    assert augment.parse_augmentations(" cutout , xflip ") == ("xflip", "cutout")
    assert augment.parse_augmentations("") == ()
    default = augment.parse_augmentations(augment.DEFAULT_AUGMENTATIONS)
    assert default == tuple(a for a in augment.AUGMENTATIONS if a != "xflip")
    with pytest.raises(ValueError, match=r"'yflip'.*known: xflip, translate, rotate"):
        augment.parse_augmentations("translate,yflip")


def test_augment_rejects_bad_augmentation_names():
    images = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="yflip"):
        augment.augment(images, _key(0), 0.5, augmentations=("yflip",))
    with pytest.raises(TypeError, match="parse_augmentations"):
        augment.augment(images, _key(0), 0.5, augmentations="translate")
