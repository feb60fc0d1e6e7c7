"""The GAN's losses: the adversarial pair each recipe names (`recipes.GAN_LOSSES`), chosen
from a table, and the terms added to them (auxiliary classifier, mode seeking).

Data flow: inside `gan.train_step`, the discriminator's scores and auxiliary logits ->
`discriminator_loss` (D's update) and `generator_loss` (G's update) -> (loss, metrics).
The losses see scores, not networks: where a term needs D's gradient at some images (the
gradient penalty, R1) the step passes `critic`, D scoring images under the reals' labels.
Every function is pure jnp and traced inside the jitted step.

| `gan.loss` | D | G |
|---|---|---|
| `wgan_gp` (the study's) | WGAN critic + gradient penalty + drift | -E[D(G(z))] |
| `logistic_r1` | non-saturating logistic + lazy R1 (StyleGAN2) | E[softplus(-D(G(z)))] |

(WGAN-GP: Gulrajani et al. 2017; the drift term: Karras et al. 2018.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from synthjax.train import recipes

Critic = Callable[[jax.Array], jax.Array]  # float[B, H, W, C] -> scores float32[B]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The static settings of the losses (hashable: part of the step's static settings)."""

    loss: str  # a key of D_LOSSES / G_LOSSES
    gp_weight: float
    drift_weight: float
    r1_gamma: float
    r1_interval: int
    aux: str  # "none" | "softmax" (the study's AC-GAN) | "sigmoid"
    aux_weight: float
    aux_weight_g: float
    mode_seeking: float

    @classmethod
    def from_config(cls, gan: ml_collections.ConfigDict) -> LossSettings:
        design = recipes.resolve(gan)  # the recipe decides these (or the config overrides)
        return cls(
            **{k: getattr(design, k) for k in ("loss", "r1_gamma", "aux", "mode_seeking")},
            **{k: gan[k] for k in ("gp_weight", "drift_weight", "r1_interval", "aux_weight")},
            aux_weight_g=gan.aux_weight if gan.aux_weight_g < 0 else gan.aux_weight_g,
        )


# --- terms ------------------------------------------------------------------------------


def label_penalty(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """AC-GAN term: softmax cross-entropy against the label vector normalised to sum 1
    (the study's prog-GAN); an all-zero vector contributes nothing. Returns float32[B]."""
    target = labels / jnp.maximum(jnp.sum(labels, axis=1, keepdims=True), 1.0)
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=1), axis=1)


def multilabel_penalty(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The synthjax recipe's auxiliary term: sigmoid cross-entropy per label, summed over
    labels (every label of an all-zero vector is a negative). Returns float32[B]."""
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=1)


AUX_PENALTIES = {"softmax": label_penalty, "sigmoid": multilabel_penalty}


def aux_penalty(kind: str, logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over the batch of the auxiliary classifier's loss of `kind` ('softmax' |
    'sigmoid'): logits float32[B, K + 1] against the conditioning vectors float32[B, K + 1]
    (`gan.conditioning_labels`: the labels and their "no finding" entry)."""
    return jnp.mean(AUX_PENALTIES[kind](logits, targets))


def mode_seeking_ratio(images: jax.Array, z: jax.Array) -> jax.Array:
    """Mean |G(z1, y) - G(z2, y)| / mean |z1 - z2| over the pairs (i, i + B/2), which share
    their labels (Mao et al. 2019, mode seeking GANs): small when the generator ignores its
    latent for a label vector, the conditional mode collapse an auxiliary classifier invites.
    images: float[B, H, W, C], z: float[B, L]; B even."""
    half = images.shape[0] // 2
    d_images = jnp.mean(jnp.abs(images[:half] - images[half : 2 * half]))
    d_z = jnp.mean(jnp.abs(z[:half] - z[half : 2 * half]))
    return d_images / d_z


def r1_penalty(critic: Critic, real: jax.Array) -> jax.Array:
    """Mean over the batch of |d critic(x) / dx|^2 at the real images (Mescheder et al.).

    critic: float[B, H, W, C] -> float32[B] (per-sample scores; samples are independent
    apart from minibatch stddev, whose cross-sample terms are included as in StyleGAN2).
    """
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(real)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


def gradient_penalty(critic: Critic, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
    """WGAN-GP's term: mean (|d critic / dx| - 1)^2 on straight lines between real and fake
    images (one uniform mixing weight per pair, drawn from `key`)."""
    n = real.shape[0]
    eps = jax.random.uniform(key, (n, 1, 1, 1), jnp.float32)
    mixed = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(mixed)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))


# --- the adversarial pairs -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CriticInputs:
    """What a discriminator loss may look at beyond the scores (before augmentation)."""

    critic: Critic  # D on images under the reals' labels (augmented as the reals are)
    real: jax.Array  # float32[B, H, W, C]
    fake: jax.Array  # float32[B, H, W, C]
    key: jax.Array  # the gradient penalty's mixing weights
    step: jax.Array  # int32: the step (lazy R1 runs every r1_interval steps)


def wgan_gp_d_loss(
    s_real: jax.Array, s_fake: jax.Array, inputs: CriticInputs, s: LossSettings
) -> tuple[jax.Array, Metrics]:
    """-(E[D(real)] - E[D(fake)]) + gp_weight * gradient penalty + drift_weight * E[D(real)^2].
    The penalty is taken before augmentation, so it constrains D on the data's own space."""
    with jax.named_scope("gradient_penalty"):
        penalty = gradient_penalty(inputs.critic, inputs.real, inputs.fake, inputs.key)
    wasserstein = jnp.mean(s_real) - jnp.mean(s_fake)
    drift = jnp.mean(jnp.square(s_real))
    loss = -wasserstein + s.gp_weight * penalty + s.drift_weight * drift
    return loss, {"wasserstein": wasserstein, "gp": penalty}


def logistic_r1_d_loss(
    s_real: jax.Array, s_fake: jax.Array, inputs: CriticInputs, s: LossSettings
) -> tuple[jax.Array, Metrics]:
    """E[softplus(D(fake))] + E[softplus(-D(real))] + lazy R1: every r1_interval steps,
    r1_gamma / 2 * r1_interval * R1 (StyleGAN2)."""
    loss = jnp.mean(jax.nn.softplus(s_fake)) + jnp.mean(jax.nn.softplus(-s_real))
    if s.r1_gamma <= 0:
        return loss, {}
    r1 = jax.lax.cond(
        inputs.step % s.r1_interval == 0,
        lambda: r1_penalty(inputs.critic, inputs.real),
        lambda: jnp.zeros((), jnp.float32),
    )
    return loss + (0.5 * s.r1_gamma * s.r1_interval) * r1, {"r1": r1}


def wgan_g_loss(scores: jax.Array) -> jax.Array:
    return -jnp.mean(scores)


def non_saturating_g_loss(scores: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(-scores))


D_LOSSES = {"wgan_gp": wgan_gp_d_loss, "logistic_r1": logistic_r1_d_loss}
G_LOSSES = {"wgan_gp": wgan_g_loss, "logistic_r1": non_saturating_g_loss}


# --- the two updates' losses ----------------------------------------------------------------


def discriminator_loss(
    scores: jax.Array,
    logits: jax.Array | None,
    real_targets: jax.Array,
    fake_targets: jax.Array,
    inputs: CriticInputs,
    s: LossSettings,
) -> tuple[jax.Array, tuple[Metrics, jax.Array, jax.Array]]:
    """D's loss on one pass over [reals; fakes] (scores float32[2B], logits float32[2B, K+1]
    or None; targets float32[B, K+1] each). Returns (loss, (metrics, s_real, s_fake))."""
    n = inputs.real.shape[0]
    s_real, s_fake = scores[:n], scores[n:]
    metrics = {"d_real": jnp.mean(s_real), "d_fake": jnp.mean(s_fake)}
    loss, loss_metrics = D_LOSSES[s.loss](s_real, s_fake, inputs, s)
    metrics.update(loss_metrics)
    if s.aux != "none":
        label_loss = aux_penalty(s.aux, logits[:n], real_targets)
        if s.aux == "softmax":  # the study's AC-GAN trains D's classifier on fakes too
            label_loss = label_loss + aux_penalty(s.aux, logits[n:], fake_targets)
        loss = loss + s.aux_weight * label_loss
        metrics["label_loss_d"] = label_loss
    metrics["loss_d"] = loss
    return loss, (metrics, s_real, s_fake)


def generator_loss(
    scores: jax.Array,
    logits: jax.Array | None,
    targets: jax.Array,
    images: jax.Array,
    z: jax.Array,
    s: LossSettings,
) -> tuple[jax.Array, Metrics]:
    """G's loss from D's scores float32[B] (and logits) of its images float[B, H, W, C],
    drawn from latents z float32[B, L] for the conditioning vectors `targets`."""
    loss = G_LOSSES[s.loss](scores)
    metrics = {}
    if s.aux != "none":
        label_loss = aux_penalty(s.aux, logits, targets)
        loss = loss + s.aux_weight_g * label_loss
        metrics["label_loss_g"] = label_loss
    if s.mode_seeking:
        diversity = mode_seeking_ratio(images, z)
        loss = loss + s.mode_seeking / (diversity + 1e-5)
        metrics["diversity_g"] = diversity
    metrics["loss_g"] = loss
    return loss, metrics
