"""The study's prog-GAN: a progressively grown conditional GAN with an AC-GAN discriminator.

Data flow: `train/gan.py` trains `Generator` and `Discriminator` phase by phase
(`train/schedule.py`): at 8x8 first, then each doubled resolution is faded in (alpha 0 -> 1)
and trained, up to the target; `synthesize.py` runs the EMA generator at the target.

Both networks are built once at the target resolution with every layer they will ever use,
so the parameter pytree (and the optimizer state and checkpoint) has one shape for the whole
run. A call at a lower `level` simply leaves the finer layers out; gradients of unused
layers are zero. That keeps each phase one compiled program with alpha a traced scalar.

Generator (ProGAN, Karras et al. 2018): input concat(pixel_norm(z), y); a dense layer to a
4x4 map and a 3x3 conv; per resolution 8..level, a fused nearest-upsample + 3x3 conv and a
3x3 conv; pixel norm after every layer; a 1x1 toRGB per resolution. While resolution R fades
in, the output is lerp(upsample(toRGB_{R/2}), toRGB_R, alpha).

Discriminator: fromRGB (1x1) at the input resolution; per resolution level..8 a 3x3 conv and
a fused 3x3 conv + 2x box downsample; while R fades in, the features entering R/2 are
lerp(fromRGB_{R/2}(downsample(x)), block_R(fromRGB_R(x)), alpha). At 4x4: minibatch stddev,
a 3x3 conv and two dense layers whose last gives 1 + K outputs: the Wasserstein score and
K AC-GAN label logits (trained with softmax cross-entropy against the label vector normalised
to sum 1, as in the study).

Gains follow ProGAN: sqrt(2) for every hidden layer (He), sqrt(2)/4 for the generator's
first dense layer, 1 for toRGB and the output layer; all weights use equalized learning rate.
Channels: nf(stage) = min(fmap_base / 2**stage, fmap_max), stage 1 = 4x4 (the study:
fmap_base 8192, fmap_max 512, latent 512).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from synthjax.models.conditioning import LabelMapping, ProjectionHead
from synthjax.models.cpd_gan import EqualizedNetwork, resolution_log2
from synthjax.models.layers import (
    EqualizedConv2D,
    EqualizedDense,
    check_latent_and_labels,
    downsample_2x,
    gan_param_counts,
    minibatch_stddev,
    pixel_norm,
    upsample_2x,
)

Array = jax.Array
Dtype = Any
PyTree = Any

HE_GAIN = math.sqrt(2.0)


def _leaky_relu(x: Array) -> Array:
    return nn.leaky_relu(x, negative_slope=0.2)


def _lerp(a: Array, b: Array, t: Array) -> Array:
    return a + (b - a) * t


class Generator(EqualizedNetwork):
    """Progressive conditional generator: (z, labels, alpha) -> float32[B, level, level, C]."""

    latent_dim: int = 512
    fmap_base: int = 8192
    start_resolution: int = 8  # the first phase's resolution (no fade-in there)
    # 'concat' (the study: concat(pixel_norm(z), y) is the input) or 'mapping' (a
    # normalised label embedding and a mapping network make the input w).
    conditioning: str = "concat"
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01

    @nn.compact
    def __call__(
        self,
        z: Array,
        labels: Array,
        alpha: Array | float = 1.0,
        *,
        level: int | None = None,
        build_all: bool = False,
    ) -> Array:
        """Images at `level` (default: the target resolution).

        z: float32[B, latent_dim]; labels: float32[B, num_labels]; alpha: scalar weight of
        the `level` layers against the upsampled `level / 2` output (1 = fully grown).
        build_all: also run every toRGB, so `init` creates all parameters.
        """
        target_log2 = resolution_log2(self.resolution)
        start_log2 = resolution_log2(self.start_resolution)
        level = self.resolution if level is None else level
        level_log2 = resolution_log2(level)
        if not start_log2 <= level_log2 <= target_log2:
            raise ValueError(f"level {level} is outside {self.start_resolution}..{self.resolution}")
        check_latent_and_labels(z, labels, self.latent_dim, self.num_labels)
        last = target_log2 if build_all else level_log2

        def conv(log2: int, features: int, kernel: int, name: str, **kw: Any) -> EqualizedConv2D:
            return self.equalized_conv(features, kernel, name, 2**log2, **kw)

        rgb_layers: dict[int, nn.Module] = {}  # each created once, however often it is used

        def to_rgb(x: Array, log2: int) -> Array:
            if log2 not in rgb_layers:
                r = f"{2**log2}x{2**log2}"
                rgb_layers[log2] = conv(log2, self.channels, 1, f"{r}_to_rgb")
            return rgb_layers[log2](x).astype(jnp.float32)

        def norm(x: Array) -> Array:
            return pixel_norm(_leaky_relu(x))

        if self.conditioning == "mapping":
            x = LabelMapping(
                self.latent_dim, self.mapping_layers, self.mapping_lr_mul, name="mapping"
            )(z, labels)
        elif self.conditioning == "concat":
            # Only z is normalised, so the labels keep their 0/1 scale at any latent size (the
            # study normalised concat(z, y); the same at latent 512 up to the labels' weight).
            z = pixel_norm(z.astype(jnp.float32))
            x = jnp.concatenate([z, labels.astype(jnp.float32)], -1)
        else:
            raise ValueError(f"unknown generator conditioning {self.conditioning!r}")
        x = EqualizedDense(self.nf(1) * 16, gain=HE_GAIN / 4, use_bias=False, name="4x4_dense")(x)
        bias = self.param("4x4_dense_bias", nn.initializers.zeros, (self.nf(1),), jnp.float32)
        x = norm(x.reshape(-1, 4, 4, self.nf(1)) + bias)  # one bias per channel, as ProGAN
        x = norm(conv(2, self.nf(1), 3, "4x4_conv", gain=HE_GAIN)(x))
        outputs = {2: x}
        for log2 in range(3, last + 1):
            r = f"{2**log2}x{2**log2}"
            nf = self.nf(log2 - 1)
            x = norm(conv(log2, nf, 3, f"{r}_conv0_up", resample="up", gain=HE_GAIN)(x))
            x = norm(conv(log2, nf, 3, f"{r}_conv1", gain=HE_GAIN)(x))
            outputs[log2] = x
        if build_all:
            for log2 in range(start_log2, target_log2 + 1):
                to_rgb(outputs[log2], log2)
        images = to_rgb(outputs[level_log2], level_log2)
        if level_log2 > start_log2:
            coarse = upsample_2x(to_rgb(outputs[level_log2 - 1], level_log2 - 1))
            images = _lerp(coarse, images, jnp.asarray(alpha, jnp.float32))
        return images


class Discriminator(EqualizedNetwork):
    """Progressive critic: (images, labels, alpha) -> (scores float32[B], auxiliary logits
    float32[B, num_aux] or None). The study's is an AC-GAN: an unconditional score and
    num_aux = K label logits; with conditioning 'projection' the score is conditional too."""

    fmap_base: int = 8192
    mbstd_group_size: int = 4
    start_resolution: int = 8
    # 'label_sum': the study's, an unconditional score (labels reach D through the
    # auxiliary head only); 'projection': the score projects the features on a label embedding.
    conditioning: str = "label_sum"
    num_aux: int = -1  # auxiliary label logits (-1: num_labels, the study's AC-GAN head)

    @nn.compact
    def __call__(
        self,
        images: Array,
        labels: Array,
        alpha: Array | float = 1.0,
        *,
        build_all: bool = False,
        num_batches: int = 1,
    ) -> tuple[Array, Array | None]:
        """images: float32[B, L, L, C], start_resolution <= L <= resolution, labels:
        float32[B, K] -> (scores float32[B], label logits float32[B, num_aux] or None).

        build_all: also run every fromRGB (images must then be at the target resolution), so
        `init` creates all parameters.
        """
        target_log2 = resolution_log2(self.resolution)
        start_log2 = resolution_log2(self.start_resolution)
        level_log2 = resolution_log2(images.shape[1])
        square = tuple(images.shape[1:]) == (images.shape[1], images.shape[1], self.channels)
        if not square or not start_log2 <= level_log2 <= target_log2:
            raise ValueError(
                f"expected images [B, L, L, {self.channels}] with {self.start_resolution} <= L "
                f"<= {self.resolution}, got {images.shape}"
            )
        if build_all and level_log2 != target_log2:
            raise ValueError("build_all needs images at the target resolution")

        def conv(log2: int, features: int, kernel: int, name: str, **kw: Any) -> EqualizedConv2D:
            return self.equalized_conv(features, kernel, name, 2**log2, gain=HE_GAIN, **kw)

        def from_rgb(x: Array, log2: int) -> Array:
            r = f"{2**log2}x{2**log2}"
            return _leaky_relu(conv(log2, self.nf(log2 - 1), 1, f"{r}_from_rgb")(x))

        def block(x: Array, log2: int) -> Array:
            r = f"{2**log2}x{2**log2}"
            x = _leaky_relu(conv(log2, self.nf(log2 - 1), 3, f"{r}_conv0")(x))
            x = conv(log2, self.nf(log2 - 2), 3, f"{r}_conv1_down", resample="down")(x)
            return _leaky_relu(x).astype(jnp.float32)

        images = images.astype(jnp.float32)
        x = from_rgb(images, level_log2)
        if level_log2 > 2:
            x = block(x, level_log2)
        if level_log2 > start_log2:
            coarse = from_rgb(downsample_2x(images), level_log2 - 1)
            x = _lerp(coarse.astype(jnp.float32), x, jnp.asarray(alpha, jnp.float32))
            if build_all:  # the input layers of the coarser phases
                pyramid = downsample_2x(images)
                for log2 in range(level_log2 - 2, start_log2 - 1, -1):
                    pyramid = downsample_2x(pyramid)
                    from_rgb(pyramid, log2)
        for log2 in range(level_log2 - 1, 2, -1):
            x = block(x, log2)

        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size, 1, num_batches)
        x = _leaky_relu(conv(2, self.nf(1), 3, "4x4_conv")(x))
        x = _leaky_relu(EqualizedDense(self.nf(0), gain=HE_GAIN, name="4x4_dense")(x))
        num_aux = self.num_labels if self.num_aux < 0 else self.num_aux
        if self.conditioning == "projection":
            return ProjectionHead(self.nf(0), num_aux, name="projection")(x, labels)
        if self.conditioning != "label_sum":
            raise ValueError(f"unknown discriminator conditioning {self.conditioning!r}")
        out = EqualizedDense(1 + num_aux, name="output")(x).astype(jnp.float32)
        return out[:, 0], (out[:, 1:] if num_aux else None)


# The study's prog-GAN sizes for `param_counts`, grown from 8x8.
STUDY_SIZES = dict(
    num_labels=14, channels=1, latent_dim=512, fmap_base=8192, fmap_max=512, start_resolution=8
)


def param_counts(resolution: int, **sizes: Any) -> tuple[int, int]:
    """(generator, discriminator) parameter counts with every layer of every phase; `sizes`
    override `STUDY_SIZES`."""
    sizes = {**STUDY_SIZES, **sizes, "resolution": resolution}
    sizes["start_resolution"] = min(sizes["start_resolution"], resolution)
    latent_dim = sizes.pop("latent_dim")
    g, d = Generator(latent_dim=latent_dim, **sizes), Discriminator(**sizes)
    return gan_param_counts(g, d, build_all=True)
