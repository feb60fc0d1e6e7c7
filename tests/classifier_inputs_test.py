"""Tests for synthjax.train.classifier_inputs: the study's classifier input (tile, resize,
ImageNet normalisation) against PIL's bilinear resize, the default protocol unchanged, and
the translate/scale augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from synthjax.data import input_pipeline as pipeline
from synthjax.train import classifier_inputs as ci

STUDY = ci.InputSpec(protocol="study", resolution=224)


def _pil_bilinear(channel: np.ndarray, size: int) -> np.ndarray:
    """float32[H, W] -> float32[size, size] by PIL's float ('F') bilinear resize, what
    torchvision's Resize does on PIL images (half-pixel centres, antialiased shrinking)."""
    image = Image.fromarray(channel.astype(np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float32)


def test_study_input_is_224x224x3_and_imagenet_normalised():
    values = np.array([0, 51, 128, 255], np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (4, 32, 32, 1))
    x = np.asarray(ci.classifier_inputs(jnp.asarray(images), STUDY))
    assert x.shape == (4, 224, 224, 3) and x.dtype == np.float32
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    for i, v in enumerate(values):
        expected = (v / 255.0 - mean) / std  # a flat image stays flat through the resize
        np.testing.assert_allclose(x[i], np.broadcast_to(expected, (224, 224, 3)), atol=1e-5)
    # e.g. black: -0.485 / 0.229 = -2.1179 in the red channel, white: 2.6400 in blue
    np.testing.assert_allclose(x[0, 0, 0], [-2.117904, -2.035714, -1.804444], atol=1e-5)
    np.testing.assert_allclose(x[3, 0, 0], [2.248908, 2.428571, 2.64], atol=1e-5)


@pytest.mark.parametrize("side", [32, 64, 256], ids=["up7x", "up3.5x", "down"])
def test_study_resize_matches_pil_bilinear(side):
    rng = np.random.default_rng(side)
    images = rng.integers(0, 256, (2, side, side, 1), dtype=np.uint8)
    x = np.asarray(ci.classifier_inputs(jnp.asarray(images), STUDY))
    mean, std = np.array(ci.IMAGENET_MEAN), np.array(ci.IMAGENET_STD)
    for b in range(2):
        resized = _pil_bilinear(images[b, :, :, 0] / 255.0, 224)
        for c in range(3):  # grayscale tiled: every channel is the same image
            np.testing.assert_allclose(x[b, :, :, c] * std[c] + mean[c], resized, atol=2e-5)


def test_study_keeps_rgb_and_skips_resize_at_the_input_size():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = np.asarray(ci.classifier_inputs(jnp.asarray(images), ci.InputSpec("study", 64)))
    expected = (images / 255.0 - np.array(ci.IMAGENET_MEAN)) / np.array(ci.IMAGENET_STD)
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_default_protocol_is_the_images_in_minus_one_to_one_unchanged():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8))
    spec = ci.InputSpec()
    assert spec.protocol == "synthjax"
    np.testing.assert_array_equal(
        ci.classifier_inputs(images, spec, jax.random.key(0)), pipeline.images_to_float(images)
    )
    assert ci.model_input_shape(spec, (16, 16, 1)) == (16, 16, 1)
    assert ci.model_input_shape(STUDY, (16, 16, 1)) == (224, 224, 3)


def test_study_refuses_other_channel_counts():
    with pytest.raises(ValueError, match=r"classifier\.protocol='study'"):
        ci.model_input_shape(STUDY, (32, 32, 9))


def test_augmentation_moves_images_only_with_a_key_and_only_geometrically():
    rng = np.random.default_rng(2)
    images = jnp.asarray(rng.integers(0, 256, (64, 32, 32, 1), dtype=np.uint8))
    inputs = jax.jit(ci.classifier_inputs, static_argnums=1)
    for protocol in ci.PROTOCOLS:
        plain = ci.InputSpec(protocol, 64)
        spec = ci.InputSpec(protocol, 64, augment=True)
        clean = np.asarray(inputs(images, plain))
        # No key (validation, test, features): never augmented.
        np.testing.assert_array_equal(inputs(images, spec), clean)
        a = np.asarray(inputs(images, spec, jax.random.key(3)))
        b = np.asarray(inputs(images, spec, jax.random.key(3)))
        np.testing.assert_array_equal(a, b)  # the key decides
        moved = np.any(a != clean, axis=(1, 2, 3))
        # Each of translate and scale with p = 0.5: 1 - 0.25 of the samples on average.
        assert 0.5 < moved.mean() < 0.95, moved.mean()
        # Unmoved samples are bit for bit the clean ones; moved ones stay in the value range
        # (bilinear resampling with mirrored borders: no fill, no brightness change).
        np.testing.assert_array_equal(a[~moved], clean[~moved])
        assert a.min() >= clean.min() - 1e-5 and a.max() <= clean.max() + 1e-5

    flat = jnp.full((8, 32, 32, 1), 77, jnp.uint8)
    spec = ci.InputSpec("synthjax", augment=True)
    np.testing.assert_allclose(
        ci.classifier_inputs(flat, spec, jax.random.key(0)), pipeline.images_to_float(flat)
    )
