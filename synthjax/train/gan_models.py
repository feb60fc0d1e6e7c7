"""The GAN's networks behind one calling convention (`GanModels`), built from the config
(`build_models`: cpD-GAN, prog-GAN or DCGAN, with the recipe's conditioning), and the
conditioning vector both networks see (`conditioning_labels`).

Used by the train step (`gan.py`), the `gan` stage's grids and selection, and `synthesize`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from synthjax.models import cpd_gan, dcgan, prog_gan
from synthjax.models.layers import resolve_conv_lowering
from synthjax.train import recipes

PyTree = Any


def conditioning_labels(labels: jax.Array) -> jax.Array:
    """float32[B, K] -> float32[B, K + 1]: the label vector and an explicit "no finding"
    entry, 1 exactly when every label is 0.

    Both networks see this vector. Without it an all-zero row (NIH ChestX-ray14's "No
    Finding", a folder dataset's healthy images, the brain CT phantom's no-bleed slices)
    would score exactly 0 in the study's D = sum_k y_k score_k, and neither D nor G would
    learn from those images; the softmax AC-GAN target of prog-GAN would be empty. Where
    every image has a positive label (CheXpert with the study's filter) the entry is always 0.
    """
    labels = labels.astype(jnp.float32)
    none = 1.0 - jnp.max(labels, axis=-1, keepdims=True, initial=0.0)
    return jnp.concatenate([labels, none], axis=-1)


@dataclasses.dataclass(frozen=True)
class GanModels:
    """Generator and discriminator of either architecture behind one calling convention.

    Callers pass the dataset's K-label vectors; the networks are conditioned on
    `conditioning_labels` of them (K + 1 entries) and the auxiliary logits cover those K + 1.
    """

    arch: str
    generator: nn.Module
    discriminator: nn.Module

    def generate(
        self, g_params: PyTree, z: jax.Array, labels: jax.Array, *, level: int, alpha: jax.Array
    ) -> jax.Array:
        """float32[B, level, level, C] (prog-GAN grows; cpD-GAN has one level)."""
        labels = conditioning_labels(labels)
        if self.arch == "prog":
            return self.generator.apply(g_params, z, labels, alpha, level=level)
        return self.generator.apply(g_params, z, labels)

    def discriminate(
        self,
        d_params: PyTree,
        images: jax.Array,
        labels: jax.Array,
        alpha: jax.Array,
        num_batches: int = 1,
    ) -> tuple[jax.Array, jax.Array | None]:
        """(scores float32[B], AC-GAN label logits float32[B, K] or None). `num_batches`:
        images stack that many minibatches, each with its own minibatch statistics."""
        labels = conditioning_labels(labels)
        if self.arch == "prog":
            return self.discriminator.apply(
                d_params, images, labels, alpha, num_batches=num_batches
            )
        return self.discriminator.apply(d_params, images, labels, num_batches=num_batches)

    def init(
        self,
        k_g: jax.Array,
        k_d: jax.Array,
        *,
        latent_dim: int,
        num_labels: int,
        image_shape: tuple[int, ...],
    ) -> tuple[PyTree, PyTree]:
        z = jnp.zeros((1, latent_dim), jnp.float32)
        y = conditioning_labels(jnp.zeros((1, num_labels), jnp.float32))
        x = jnp.zeros((1, *image_shape), jnp.float32)
        if self.arch == "prog":
            return (
                self.generator.init(k_g, z, y, build_all=True),
                self.discriminator.init(k_d, x, y, build_all=True),
            )
        return self.generator.init(k_g, z, y), self.discriminator.init(k_d, x, y)


ARCHS = ("cpd", "prog", "dcgan")  # what `build_models` builds for `gan.arch`


def build_models(
    gan: ml_collections.ConfigDict,
    *,
    resolution: int,
    num_labels: int,
    channels: int,
    conv_lowering: str,
) -> GanModels:
    """The generator and discriminator named by `gan.arch`."""
    lowering = resolve_conv_lowering(conv_lowering)
    design = recipes.resolve(gan)
    num_labels += 1  # the explicit "no finding" entry of `conditioning_labels`
    sizes = dict(
        resolution=resolution,
        num_labels=num_labels,
        channels=channels,
        fmap_max=gan[gan.arch].fmap_max,
        conv_lowering=lowering,
        bf16_resolution=gan.bf16_resolution,
    )
    plain_sizes = {k: v for k, v in sizes.items() if k not in ("fmap_max", "bf16_resolution")}
    g_cond = dict(
        conditioning=design.g_conditioning,
        **({"rgb_upsample": design.rgb_upsample} if gan.arch == "cpd" else {}),
        mapping_layers=gan.mapping_layers,
        mapping_lr_mul=gan.mapping_lr_mul,
    )
    d_cond = dict(
        conditioning=design.d_conditioning,
        num_aux=num_labels if design.has_aux else 0,
        mbstd_group_size=gan.mbstd_group_size,
    )
    if gan.arch == "prog":
        prog = dict(fmap_base=gan.prog.fmap_base, start_resolution=gan.prog.start_resolution)
        return GanModels(
            "prog",
            prog_gan.Generator(latent_dim=gan.latent_dim, **g_cond, **prog, **sizes),
            prog_gan.Discriminator(**d_cond, **prog, **sizes),
        )
    if gan.arch == "dcgan":
        dc = dict(fmap_base=gan.dcgan.fmap_base, fmap_max=gan.dcgan.fmap_max)
        return GanModels(
            "dcgan",
            dcgan.Generator(latent_dim=gan.latent_dim, norm=gan.dcgan.norm, **dc, **plain_sizes),
            dcgan.Discriminator(
                conditioning=design.d_conditioning, num_aux=d_cond["num_aux"], **dc, **plain_sizes
            ),
        )
    return GanModels(
        "cpd",
        cpd_gan.Generator(
            latent_dim=gan.latent_dim, fmap_base=gan.cpd.fmap_base, **g_cond, **sizes
        ),
        cpd_gan.Discriminator(fmap_base=gan.cpd.fmap_base, **d_cond, **sizes),
    )
