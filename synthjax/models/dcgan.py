"""A DCGAN-style conditional GAN: the synthjax recipe's fast-converging architecture.

Data flow: `train/gan.py` builds these when `gan.arch = dcgan` and trains them directly at
the final resolution, like cpD-GAN (one level, no growing); `synthesize.py` runs the EMA
generator on the real splits' label vectors.

Why it exists. At the quickstart's budget (400 steps of 64 images at 32x32, a few minutes
on 2 CPU cores) the study's cpD generator (equalized learning rate, pixel norms, a skip
image path) had not yet drawn the anatomy: its samples were noise over a chest outline and
the classifier trained on them scored at chance on real images. A plain convolutional
generator with group normalisation and a tanh output (Radford et al. 2016, with group norm
in place of batch norm so a sample never depends on its batch) draws lungs, heart and
mediastinum within the same budget. The measurements are in the README.

Generator: a dense label embedding concatenated to z, a dense layer to a 4x4 map, then per
resolution 8..R a nearest-neighbour 2x upsample and a 3x3 conv, each followed by group
norm and ReLU; a final 3x3 conv and tanh (data are in [-1, 1]). Channels halve with every
doubling of resolution: nf(res) = clip(fmap_base / res, fmap_min, fmap_max).

The group norm is adaptive (`norm='adaptive'`, the default): its scale and shift are
computed per sample from (z, label embedding), as conditional batch norm does in BigGAN.
Group norm removes each sample's mean and spread at every layer, and with one learned
affine for all samples (`norm='group'`) nothing downstream can put them back: on the
quickstart phantom the synthetic images' brightness varied 9 times less than the real
ones' (standard deviation of the per-image mean 1.6 against 14.8 grey levels), and a
classifier trained on them failed on the real images' exposures. The per-sample affine
restored it (11.8) and lifted TSTR (the README's ablation).

Discriminator: a 3x3 conv at full resolution, then 4x4 stride-2 convs down to 4x4 (each
doubling the channels), leaky ReLU 0.2 after each, no normalisation; the 4x4 map is
flattened into a dense layer of features h. The conditional output is the study's label
sum, sum_k y_k score_k(h), or a projection (Miyato & Koyama 2018): u(h) + <E y, h>, with
the "no finding" entry of `train/gan.conditioning_labels` giving all-zero rows an embedding.
An auxiliary multi-label head on h serves the synthjax recipe's classifier loss.

Weights use LeCun-normal initialisation and ordinary (not equalized) learning rates;
every convolution goes through `layers.conv2d`, so the lowering is chosen in one place.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synthjax.models.cpd_gan import resolution_log2
from synthjax.models.layers import (
    Conv,
    GanNetwork,
    check_images_and_labels,
    check_latent_and_labels,
    upsample_2x,
)

Array = jax.Array
Dtype = Any

LABEL_EMBED = 128  # the generator's label embedding width


def feature_maps(res: int, fmap_base: int, fmap_max: int, fmap_min: int = 16) -> int:
    """Channels at a resolution: halved with every doubling, clipped to [fmap_min, fmap_max]."""
    return int(np.clip(fmap_base // res, fmap_min, fmap_max))


def group_count(channels: int, max_groups: int = 8) -> int:
    """The largest divisor of `channels` that is at most `max_groups`."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


def plain_conv(
    features: int, kernel_size: int, name: str, *, stride: int = 1, lowering: str, dtype: Dtype
) -> Conv:
    """A conv with bias and LeCun-normal weights. Stride 2 with a 4x4 kernel pads 1 on each
    side (DCGAN's), so the side halves exactly."""
    return Conv(
        features,
        kernel_size,
        stride=stride,
        padding=1 if stride == 2 and kernel_size == 4 else "SAME",
        use_bias=True,
        lowering=lowering,
        dtype=dtype,
        kernel_init=nn.initializers.lecun_normal(),
        name=name,
    )


class Generator(GanNetwork):
    """(z, labels) -> images float32[B, R, R, channels] in [-1, 1]."""

    latent_dim: int = 128
    fmap_base: int = 512
    # 'group': group norm with learned affine weights, shared by every sample. 'adaptive':
    # group norm whose scale and shift are computed per sample from (z, label embedding).
    norm: str = "adaptive"

    def nf(self, res: int) -> int:
        return feature_maps(res, self.fmap_base, self.fmap_max)

    @nn.compact
    def __call__(self, z: Array, labels: Array) -> Array:
        """z: float32[B, latent_dim], labels: float32[B, num_labels] -> float32[B, R, R, C]."""
        res_log2 = resolution_log2(self.resolution)
        check_latent_and_labels(z, labels, self.latent_dim, self.num_labels)
        embed = nn.Dense(LABEL_EMBED, name="label_embed")(labels.astype(jnp.float32))
        style = jnp.concatenate([z.astype(jnp.float32), embed], axis=-1)
        x = nn.Dense(16 * self.nf(4), name="4x4_dense")(style).reshape(-1, 4, 4, self.nf(4))

        conv = functools.partial(plain_conv, lowering=self.conv_lowering, dtype=self.dtype)
        if self.norm not in ("group", "adaptive"):
            raise ValueError(f"gan.dcgan.norm must be 'group' or 'adaptive', got {self.norm!r}")
        adaptive = self.norm == "adaptive"

        def norm_relu(x: Array, name: str) -> Array:
            channels = x.shape[-1]
            x = nn.GroupNorm(
                num_groups=group_count(channels),
                use_scale=not adaptive,
                use_bias=not adaptive,
                dtype=self.dtype,
                name=name,
            )(x)
            if adaptive:
                # Each sample's own scale and shift, from its z and labels. Zero-initialised,
                # so training starts from plain group norm.
                affine = nn.Dense(
                    2 * channels, kernel_init=nn.initializers.zeros, name=f"{name}_style"
                )
                gain, shift = jnp.split(affine(style)[:, None, None, :].astype(x.dtype), 2, axis=-1)
                x = x * (1.0 + gain) + shift
            return nn.relu(x)

        x = norm_relu(x, "4x4_norm")
        for log2 in range(3, res_log2 + 1):
            res = 2**log2
            x = upsample_2x(x)
            x = conv(self.nf(res), 3, f"{res}x{res}_conv")(x)
            x = norm_relu(x, f"{res}x{res}_norm")
        x = conv(self.channels, 3, "to_rgb")(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(GanNetwork):
    """(images, labels) -> (scores float32[B], auxiliary logits float32[B, num_aux] or None)."""

    fmap_base: int = 512
    # 'label_sum' (the study's sum_k y_k * score_k) or 'projection' (an unconditional score
    # plus the features' inner product with a normalised label embedding).
    conditioning: str = "projection"
    num_aux: int = 0

    def nf(self, res: int) -> int:
        return feature_maps(res, self.fmap_base, self.fmap_max)

    @nn.compact
    def __call__(
        self, images: Array, labels: Array, *, num_batches: int = 1
    ) -> tuple[Array, Array | None]:
        """images: float32[B, R, R, C], labels: float32[B, K]. `num_batches` is accepted for
        the common calling convention; there are no minibatch statistics here."""
        del num_batches
        res_log2 = resolution_log2(self.resolution)
        check_images_and_labels(images, labels, self.resolution, self.channels, self.num_labels)
        lrelu = lambda x: nn.leaky_relu(x, negative_slope=0.2)
        res = self.resolution
        conv = functools.partial(plain_conv, lowering=self.conv_lowering, dtype=self.dtype)
        x = lrelu(conv(self.nf(res), 3, "from_rgb")(images))
        for log2 in range(res_log2, 2, -1):
            res = 2**log2
            x = lrelu(conv(self.nf(res // 2), 4, f"{res}x{res}_down", stride=2)(x))
        h = lrelu(nn.Dense(self.nf(4), name="4x4_dense")(x.reshape(x.shape[0], -1)))
        h = h.astype(jnp.float32)
        labels = labels.astype(jnp.float32)
        logits = nn.Dense(self.num_aux, name="aux")(h) if self.num_aux else None
        if self.conditioning == "projection":
            unconditional = nn.Dense(1, name="unconditional")(h)[:, 0]
            embed = nn.Dense(h.shape[-1], use_bias=False, name="label_embed")(labels)
            return unconditional + jnp.sum(embed * h, axis=-1), logits
        if self.conditioning != "label_sum":
            raise ValueError(f"unknown discriminator conditioning {self.conditioning!r}")
        scores = nn.Dense(max(self.num_labels, 1), name="label_scores")(h)
        if self.num_labels == 0:
            return scores[:, 0], logits
        return jnp.sum(scores * labels, axis=1), logits
