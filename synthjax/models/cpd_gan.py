"""The study's cpD-GAN: conditional pixel-norm generator and label-projection discriminator.

Data flow: `train/gan.py` trains `Generator` and `Discriminator` (WGAN-GP) directly at the
final resolution; `synthesize.py` runs the EMA generator on the real splits' label vectors to
write the synthetic dataset.

Generator ("skip", StyleGAN2-like without mapping network or modulation): the input is
concat(pixel_norm(z), y); a dense layer makes a 4x4 map; each resolution 8..R upsamples and
applies two 3x3 convs. After every layer: bias, leaky ReLU 0.2, then a conditional pixel norm
whose per-sample gain and shift are dense functions of concat(z, y). A 1x1 toRGB at every
resolution is added into an RGB image that is upsampled between resolutions. Output is
linear (data are in [-1, 1]).

Discriminator ("resnet"): 1x1 fromRGB, then per resolution R..8 a residual block of two 3x3
convs with a 2x box downsample, then minibatch stddev, a 3x3 conv and two dense layers at
4x4; the last dense layer gives one score per label and the output is their sum weighted by
the multi-hot label vector (projection-style conditioning).

Channels follow ProGAN/StyleGAN: nf(stage) = clip(fmap_base / 2**stage, 1, fmap_max) with
stage 1 at 4x4 and stage s at 2**(s+1). All weights use equalized learning rate. As in the
study's code, the convs that resample (generator upsampling convs, discriminator downsampling
convs and residual shortcuts) use gain sqrt(2); every other layer uses gain 1.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synthjax.models.conditioning import LabelMapping, ProjectionHead
from synthjax.models.layers import (
    EqualizedConv2D,
    EqualizedDense,
    GanNetwork,
    check_images_and_labels,
    check_latent_and_labels,
    compute_dtype,
    gan_param_counts,
    minibatch_stddev,
    pixel_norm,
    upsample_2x,
    upsample_2x_smooth,
)

Array = jax.Array
Dtype = Any
PyTree = Any

RESAMPLING_GAIN = math.sqrt(2.0)


def feature_maps(stage: int, fmap_base: int, fmap_max: int, fmap_min: int = 1) -> int:
    """Channel count at a stage (stage 1 = 4x4, stage s = 2**(s+1) pixels on a side)."""
    return int(np.clip(int(fmap_base / 2.0**stage), fmap_min, fmap_max))


def resolution_log2(resolution: int) -> int:
    log2 = round(math.log2(resolution))
    if resolution < 4 or 2**log2 != resolution:
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    return log2


def _leaky_relu(x: Array) -> Array:
    return nn.leaky_relu(x, negative_slope=0.2)


class ConditionalPixelNorm(nn.Module):
    """x * rsqrt(mean(x**2, channels) + 1e-8) * gamma + beta, gamma/beta per sample.

    gamma and beta are equalized dense layers of the conditioning vector concat(z, y). Their
    weights start at zero and their biases at 1 and 0, so the layer starts as a plain pixel
    norm and learns how much the latent and the labels rescale each channel.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cond: Array) -> Array:
        """x: float[B, H, W, C], cond: float[B, D] -> dtype[B, H, W, C]."""
        c = x.shape[-1]
        gamma = EqualizedDense(c, bias_init=1.0, init_scale=0.0, dtype=self.dtype, name="gamma")
        beta = EqualizedDense(c, bias_init=0.0, init_scale=0.0, dtype=self.dtype, name="beta")
        scale = gamma(cond)[:, None, None, :]
        shift = beta(cond)[:, None, None, :]
        return pixel_norm(x.astype(self.dtype)) * scale + shift


class EqualizedNetwork(GanNetwork):
    """A GAN network of equalized-learning-rate layers (cpD's and prog's)."""

    bf16_resolution: int = 0  # layers at this resolution and above compute in bfloat16

    def nf(self, stage: int) -> int:
        """Channels at a stage (1 = 4x4): fmap_base halved per stage, at most fmap_max."""
        return feature_maps(stage, self.fmap_base, self.fmap_max)

    def equalized_conv(
        self, features: int, kernel_size: int, name: str, res: int = 4, **kw: Any
    ) -> EqualizedConv2D:
        """A conv of a layer working at res x res (in bfloat16 from bf16_resolution up)."""
        return EqualizedConv2D(
            features,
            kernel_size,
            lowering=self.conv_lowering,
            dtype=compute_dtype(res, self.dtype, self.bf16_resolution),
            name=name,
            **kw,
        )


class Generator(EqualizedNetwork):
    """Conditional skip generator: (z, labels) -> images float32[B, R, R, channels]."""

    latent_dim: int = 512
    # 'concat' (the study: concat(z, y) feeds every conditional norm) or 'mapping' (a
    # normalised label embedding and a mapping network make w, which feeds them instead).
    conditioning: str = "concat"
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    # How the skip path's image is upsampled between resolutions: 'nearest' (the study's)
    # or 'bilinear' (StyleGAN2's [1, 3, 3, 1] filter: no 4x4 blocks while finer layers learn).
    rgb_upsample: str = "nearest"

    @nn.compact
    def __call__(self, z: Array, labels: Array) -> Array:
        """z: float32[B, latent_dim], labels: float32[B, num_labels] -> float32[B, R, R, C]."""
        res_log2 = resolution_log2(self.resolution)
        check_latent_and_labels(z, labels, self.latent_dim, self.num_labels)
        z = z.astype(jnp.float32)
        labels = labels.astype(jnp.float32)
        if self.conditioning == "mapping":
            cond = LabelMapping(
                self.latent_dim, self.mapping_layers, self.mapping_lr_mul, name="mapping"
            )(z, labels)
            x = cond
        elif self.conditioning == "concat":
            cond = jnp.concatenate([z, labels], axis=-1)
            # Only z is normalised so the labels keep their 0/1 scale at any latent size;
            # the study's code normalised concat(z, y), nearly the same at latent 512.
            x = jnp.concatenate([pixel_norm(z), labels], axis=-1)
        else:
            raise ValueError(f"unknown generator conditioning {self.conditioning!r}")

        conv = self.equalized_conv

        def activate(x: Array, name: str) -> Array:
            dtype = self.dtype if x.dtype == jnp.float32 else x.dtype
            return ConditionalPixelNorm(dtype=dtype, name=name)(_leaky_relu(x), cond)

        x = EqualizedDense(self.nf(1) * 16, dtype=self.dtype, name="4x4_dense")(x)
        x = activate(x.reshape(-1, 4, 4, self.nf(1)), "4x4_dense_norm")
        x = activate(conv(self.nf(1), 3, "4x4_conv")(x), "4x4_conv_norm")
        rgb = conv(self.channels, 1, "4x4_to_rgb")(x)

        for log2 in range(3, res_log2 + 1):
            r, res = f"{2**log2}x{2**log2}", 2**log2
            nf = self.nf(log2 - 1)
            x = conv(nf, 3, f"{r}_conv0_up", res, resample="up", gain=RESAMPLING_GAIN)(x)
            x = activate(x, f"{r}_conv0_norm")
            x = activate(conv(nf, 3, f"{r}_conv1", res)(x), f"{r}_conv1_norm")
            to_rgb = conv(self.channels, 1, f"{r}_to_rgb", res)(x).astype(jnp.float32)
            upsample = upsample_2x_smooth if self.rgb_upsample == "bilinear" else upsample_2x
            rgb = upsample(rgb) + to_rgb
        return rgb.astype(jnp.float32)


class Discriminator(EqualizedNetwork):
    """Conditional resnet discriminator: (images, labels) -> scores float32[B]."""

    mbstd_group_size: int = 4
    # 'label_sum' (the study: sum_k y_k * score_k) or 'projection' (an unconditional score
    # plus the features' inner product with a normalised label embedding).
    conditioning: str = "label_sum"
    num_aux: int = 0  # > 0: also this many auxiliary label logits (a multi-label classifier)

    @nn.compact
    def __call__(
        self, images: Array, labels: Array, *, num_batches: int = 1
    ) -> tuple[Array, Array | None]:
        """images: float32[B, R, R, C], labels: float32[B, K] -> (scores float32[B],
        auxiliary label logits float32[B, num_aux] or None).

        With num_labels = 0 the score is a single unconditional one per image.
        `num_batches` > 1: images stack that many minibatches (each keeps its own minibatch
        statistics), so several are scored in one pass with larger matrix products.
        """
        res_log2 = resolution_log2(self.resolution)
        check_images_and_labels(images, labels, self.resolution, self.channels, self.num_labels)

        conv = self.equalized_conv

        r, res = f"{self.resolution}x{self.resolution}", self.resolution
        x = _leaky_relu(conv(self.nf(res_log2 - 1), 1, f"{r}_from_rgb", res)(images))
        for log2 in range(res_log2, 2, -1):
            r, res = f"{2**log2}x{2**log2}", 2**log2
            shortcut = conv(
                self.nf(log2 - 2),
                1,
                f"{r}_skip",
                res,
                use_bias=False,
                resample="down",
                gain=RESAMPLING_GAIN,
            )(x)
            x = _leaky_relu(conv(self.nf(log2 - 1), 3, f"{r}_conv0", res)(x))
            x = _leaky_relu(
                conv(
                    self.nf(log2 - 2),
                    3,
                    f"{r}_conv1_down",
                    res,
                    resample="down",
                    gain=RESAMPLING_GAIN,
                )(x)
            )
            # Keeps the residual sum at unit variance, as in StyleGAN2's resnet D.
            x = (x + shortcut) * (1.0 / math.sqrt(2.0))
            x = x.astype(compute_dtype(res // 2, self.dtype, self.bf16_resolution))

        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size, 1, num_batches)
        x = _leaky_relu(conv(self.nf(1), 3, "4x4_conv")(x))
        x = _leaky_relu(EqualizedDense(self.nf(0), dtype=self.dtype, name="4x4_dense")(x))
        if self.conditioning == "projection":
            return ProjectionHead(self.nf(0), self.num_aux, name="projection")(x, labels)
        if self.conditioning != "label_sum":
            raise ValueError(f"unknown discriminator conditioning {self.conditioning!r}")
        logits = None
        if self.num_aux:
            logits = EqualizedDense(self.num_aux, name="aux")(x).astype(jnp.float32)
        scores = EqualizedDense(max(self.num_labels, 1), dtype=self.dtype, name="label_scores")(x)
        scores = scores.astype(jnp.float32)
        if self.num_labels == 0:
            return scores[:, 0], logits
        # The study's conditioning: one score per label, weighted by the multi-hot label vector.
        return jnp.sum(scores * labels.astype(jnp.float32), axis=1), logits


# The study's sizes for `param_counts`: 14 labels, 1 channel, latent 512.
STUDY_SIZES = dict(num_labels=14, channels=1, latent_dim=512, fmap_base=16384, fmap_max=512)


def param_counts(resolution: int, **sizes: Any) -> tuple[int, int]:
    """(generator, discriminator) parameter counts, from shapes only; `sizes` override
    `STUDY_SIZES`."""
    sizes = {**STUDY_SIZES, **sizes, "resolution": resolution}
    latent_dim = sizes.pop("latent_dim")
    return gan_param_counts(Generator(latent_dim=latent_dim, **sizes), Discriminator(**sizes))
