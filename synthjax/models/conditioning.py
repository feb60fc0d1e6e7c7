"""How labels enter the GANs: the study's raw concatenation, or the synthjax recipe's
normalised label embedding with a mapping network (generator side) and a projection head
with an auxiliary multi-label classifier (discriminator side).

Data flow: `cpd_gan` and `prog_gan` build their conditioning from these modules, chosen by
the resolved recipe (`synthjax/train/recipes.py`); `train/gan.py` reads the auxiliary logits
the discriminator returns.

Why the synthjax side exists. In the study's generator the multi-hot label vector enters as
raw 0/1 values beside hundreds of unit-variance latents: with latent 128 and 5 labels about
1.6% of the input energy of every conditional gain and shift, so the generator can (and, in
short runs, does) ignore it. StyleGAN2-ADA's answer is to embed the labels with a dense layer
and normalise the embedding to the latent's second moment, so labels and latents enter the
mapping network with equal weight; an all-zero label vector (NIH "No Finding") then still has
an embedding of its own (the layer's bias). In the study's discriminator, the score
sum_k y_k * score_k(x) has no unconditional term: an all-zero label vector scores exactly 0,
and neither network learns from those images. The projection discriminator (Miyato &
Koyama 2018) adds an unconditional score to the inner product of the image features with a
normalised label embedding, and the auxiliary head (a multi-label classifier trained with
sigmoid cross-entropy on real images) gives the generator a direct, dense signal for every
label: it is trained to make its fakes classified as the labels it was asked for.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from synthjax.models.layers import EqualizedDense

Array = jax.Array


def normalize_second_moment(x: Array, epsilon: float = 1e-8) -> Array:
    """Scales each row to unit mean square. x: float[B, D] -> float32[B, D]."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + epsilon)


class LabelMapping(nn.Module):
    """(z, labels) -> w float32[B, features]: z and a dense label embedding, each normalised
    to unit second moment, concatenated and passed through `num_layers` equalized dense
    layers with leaky ReLU (StyleGAN2-ADA's conditional mapping network)."""

    features: int
    num_layers: int = 2
    lr_mul: float = 0.01

    @nn.compact
    def __call__(self, z: Array, labels: Array) -> Array:
        """z: float32[B, L], labels: float32[B, K] -> float32[B, features]."""
        embed = EqualizedDense(self.features, name="label_embed")(labels.astype(jnp.float32))
        x = jnp.concatenate([normalize_second_moment(z), normalize_second_moment(embed)], -1)
        for i in range(self.num_layers):
            x = EqualizedDense(
                self.features, lr_mul=self.lr_mul, gain=math.sqrt(2.0), name=f"mapping_{i}"
            )(x)
            x = nn.leaky_relu(x, negative_slope=0.2)
        return x


class ProjectionHead(nn.Module):
    """The discriminator's conditional output for the synthjax recipe.

    score = u(h) + <P h, e(y)> / sqrt(D), with u an unconditional linear score, P a linear
    map of the features into D dimensions and e(y) a dense label embedding normalised to
    unit second moment (so the label term does not grow with the number of positive
    labels, and an all-zero vector has an embedding of its own). With `num_aux` > 0 it also
    returns that many auxiliary logits, a multi-label classifier on the same features.
    """

    embed_dim: int
    num_aux: int = 0

    @nn.compact
    def __call__(self, h: Array, labels: Array) -> tuple[Array, Array | None]:
        """h: float[B, F], labels: float32[B, K] -> (scores float32[B], logits [B, A] or None)."""
        h = h.astype(jnp.float32)
        unconditional = EqualizedDense(1, name="unconditional")(h)[:, 0]
        projected = EqualizedDense(self.embed_dim, name="project")(h)
        embed = normalize_second_moment(
            EqualizedDense(self.embed_dim, name="label_embed")(labels.astype(jnp.float32))
        )
        scores = unconditional + jnp.sum(projected * embed, axis=-1) / math.sqrt(self.embed_dim)
        logits = EqualizedDense(self.num_aux, name="aux")(h) if self.num_aux else None
        return scores, logits
