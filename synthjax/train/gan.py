"""GAN training: the train state, the pure train step of either GAN, and the `gan` stage.

Data flow: grain batches of real images (uint8) + their label vectors -> global arrays on
the mesh -> `train_step` (one discriminator and one generator update, as the study's
trainer alternated them; the recipe's losses, `recipes.py`; optional ADA) -> EMA generator
-> sample grids, model selection by FD and label fidelity (`fd_monitor`) and checkpoints.
The discriminator step's fakes carry the real minibatch's label vectors (as the study's
`D_wgangp`); the generator step draws its label vectors on device from the training set's
("labels for fakes sampled from the empirical training label set"). Both networks see the
labels through `conditioning_labels`, which adds an explicit "no finding" entry.

The schedule (`schedule.py`) splits the run into phases: one for cpD-GAN, one per
resolution for prog-GAN. Each phase is one jitted step with its resolution and batch
static and its fade-in alpha computed from the step inside, and the loop picks the step of
the phase it is in, so a resumed run continues in the same phase at the same alpha.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from synthjax.core import compiler, distributed, parallel
from synthjax.core.checkpoint import state_sha256
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.prepared import prepared
from synthjax.eval import grids
from synthjax.models import cpd_gan, dcgan, inception, prog_gan
from synthjax.models.layers import downsample_2x, resolve_conv_lowering, upsample_2x
from synthjax.train import augment, classifier, fd_monitor, recipes
from synthjax.train.loop import Hook, LoopSettings, restore_final_state, train_loop
from synthjax.train.schedule import Phase, Schedule, build_schedule

PyTree = Any


@flax.struct.dataclass
class GanState:
    """Everything that changes during GAN training (a pytree; checkpointed whole).

    rng: uint32 key data of the base key; each step folds its step number into it.
    phase, alpha: the schedule's phase of the last step and the weight its newest layers had
      (prog-GAN's fade-in; 0 and 1 for cpD-GAN).
    ada_p: the augmentation strength; ada_signs / ada_count accumulate sign(D(real)) between
      its adjustments.
    best_*: the selected EMA generator (`gan.select`: by Fréchet distance, label fidelity or
      both), its scores (best_step -1: none selected yet) and the evaluations since it
      (early stopping); min_fd: the lowest FD seen (the guard of 'combined' selection).
    """

    step: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_ema: PyTree
    g_opt: PyTree
    d_opt: PyTree
    rng: jax.Array
    phase: jax.Array
    alpha: jax.Array
    ada_p: jax.Array
    ada_signs: jax.Array
    ada_count: jax.Array
    best_g_ema: PyTree
    best_fd: jax.Array
    best_label_fidelity: jax.Array
    best_step: jax.Array
    fd_evals_since_best: jax.Array
    min_fd: jax.Array

    def trainable(self) -> dict[str, PyTree]:
        """What the fingerprint covers: everything but the (constant) base key."""
        return {
            "step": self.step,
            "g_params": self.g_params,
            "d_params": self.d_params,
            "g_ema": self.g_ema,
            "g_opt": self.g_opt,
            "d_opt": self.d_opt,
            "phase": self.phase,
            "alpha": self.alpha,
            "ada_p": self.ada_p,
            "best_g_ema": self.best_g_ema,
            "best_step": self.best_step,
        }


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
        fmap_max=gan.fmap_max,
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
    if gan.arch != "cpd":
        raise ValueError(f"gan.arch={gan.arch!r}; known: 'cpd', 'prog', 'dcgan'")
    return GanModels(
        "cpd",
        cpd_gan.Generator(latent_dim=gan.latent_dim, fmap_base=gan.fmap_base, **g_cond, **sizes),
        cpd_gan.Discriminator(fmap_base=gan.fmap_base, **d_cond, **sizes),
    )


def learning_rate(gan: ml_collections.ConfigDict) -> float:
    """`gan.learning_rate`, or the architecture's own where it sets one (> 0)."""
    own = {"prog": gan.prog.learning_rate, "dcgan": gan.dcgan.learning_rate}.get(gan.arch, 0.0)
    return own if own > 0 else gan.learning_rate


def make_optimizer(gan: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.adam(learning_rate(gan), b1=gan.adam_b1, b2=gan.adam_b2, eps=gan.adam_eps)


def init_state(
    seed: int,
    models: GanModels,
    optimizer: optax.GradientTransformation,
    *,
    latent_dim: int,
    num_labels: int,
    image_shape: tuple[int, int, int],
    ada_start_p: float = 0.0,
) -> GanState:
    """A fresh state (call under `jax.jit` with `out_shardings` to create it sharded)."""
    key = jax.random.key(seed)
    k_g, k_d, k_run = jax.random.split(key, 3)
    g_params, d_params = models.init(
        k_g, k_d, latent_dim=latent_dim, num_labels=num_labels, image_shape=image_shape
    )
    zero = jnp.zeros((), jnp.float32)
    return GanState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_ema=g_params,
        g_opt=optimizer.init(g_params),
        d_opt=optimizer.init(d_params),
        rng=jax.random.key_data(k_run),
        phase=jnp.zeros((), jnp.int32),
        alpha=jnp.ones((), jnp.float32),
        ada_p=jnp.full((), ada_start_p, jnp.float32),
        ada_signs=zero,
        ada_count=zero,
        best_g_ema=g_params,
        best_fd=jnp.full((), jnp.inf, jnp.float32),
        best_label_fidelity=jnp.full((), -jnp.inf, jnp.float32),
        best_step=jnp.full((), -1, jnp.int32),
        fd_evals_since_best=jnp.zeros((), jnp.int32),
        min_fd=jnp.full((), jnp.inf, jnp.float32),
    )


def sample_fake_labels(key: jax.Array, label_table: jax.Array, n: int) -> jax.Array:
    """n label vectors drawn uniformly from the training set's rows (its empirical law)."""
    return label_table[jax.random.randint(key, (n,), 0, label_table.shape[0])]


def reals_at_level(real: jax.Array, level: int, alpha: jax.Array, fading: bool) -> jax.Array:
    """Real images as prog-GAN's D sees them in a phase: box-downsampled to `level` (the
    dataset's own pyramid filter) and, while the level fades in, blended with their
    upsampled `level / 2` version exactly as the generator's output is.

    real: float32[B, R, R, C] -> float32[B, level, level, C].
    """
    while real.shape[1] > level:
        real = downsample_2x(real)
    if fading:
        real = real + (upsample_2x(downsample_2x(real)) - real) * (1.0 - alpha)
    return real


def label_penalty(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """AC-GAN term: softmax cross-entropy against the label vector normalised to sum 1
    (the study's prog-GAN); an all-zero vector contributes nothing. Returns float32[B]."""
    target = labels / jnp.maximum(jnp.sum(labels, axis=1, keepdims=True), 1.0)
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=1), axis=1)


def multilabel_penalty(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The synthjax recipe's auxiliary term: sigmoid cross-entropy per label, summed over
    labels (every label of an all-zero vector is a negative). Returns float32[B]."""
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=1)


def aux_penalty(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """float32[B]: the auxiliary classifier's loss of `kind` ('softmax' | 'sigmoid') for
    logits float32[B, K + 1] against K-label vectors (with their "no finding" entry)."""
    target = conditioning_labels(labels)
    if kind == "softmax":
        return label_penalty(logits, target)
    return multilabel_penalty(logits, target)


def mode_seeking_ratio(images: jax.Array, z: jax.Array) -> jax.Array:
    """Mean |G(z1, y) - G(z2, y)| / mean |z1 - z2| over the pairs (i, i + B/2), which share
    their labels (Mao et al. 2019, mode seeking GANs): small when the generator ignores its
    latent for a label vector, the conditional mode collapse an auxiliary classifier invites.
    images: float[B, H, W, C], z: float[B, L]; B even."""
    half = images.shape[0] // 2
    d_images = jnp.mean(jnp.abs(images[:half] - images[half : 2 * half]))
    d_z = jnp.mean(jnp.abs(z[:half] - z[half : 2 * half]))
    return d_images / d_z


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """Mean over the batch of |d critic(x) / dx|^2 at the real images (Mescheder et al.).

    critic: float[B, H, W, C] -> float32[B] (per-sample scores; samples are independent
    apart from minibatch stddev, whose cross-sample terms are included as in StyleGAN2).
    """
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(real)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static settings of a train step (hashable; bound with functools.partial)."""

    latent_dim: int
    loss: str  # "wgan_gp" | "logistic_r1"
    gp_weight: float
    drift_weight: float
    r1_gamma: float
    r1_interval: int
    aux: str  # "none" | "softmax" (the study's AC-GAN) | "sigmoid"
    aux_weight: float
    aux_weight_g: float
    mode_seeking: float
    ema_decay: float
    ema_warmup: bool
    reset_optimizer: bool
    ada: bool
    ada_augmentations: tuple[str, ...]
    ada_target: float
    ada_interval: int
    ada_kimg: float
    ada_midpoint: bool  # centre r_t between the real and fake scores (see adapt_augmentation)

    @classmethod
    def from_config(cls, gan: ml_collections.ConfigDict) -> StepSettings:
        design = recipes.resolve(gan)
        return cls(
            latent_dim=gan.latent_dim,
            loss=design.loss,
            gp_weight=gan.gp_weight,
            drift_weight=gan.drift_weight,
            r1_gamma=design.r1_gamma,
            r1_interval=gan.r1_interval,
            aux=design.aux,
            aux_weight=gan.aux_weight,
            aux_weight_g=gan.aux_weight if gan.aux_weight_g < 0 else gan.aux_weight_g,
            mode_seeking=design.mode_seeking,
            ema_decay=gan.ema_decay,
            ema_warmup=gan.ema_warmup,
            reset_optimizer=gan.prog.reset_optimizer,
            ada=gan.ada.enabled,
            ada_augmentations=augment.parse_augmentations(gan.ada.augmentations),
            ada_target=gan.ada.target,
            ada_interval=gan.ada.interval,
            ada_kimg=gan.ada.speed_kimg,
            ada_midpoint=ada_center(gan) == "midpoint",
        )


def ada_center(gan: ml_collections.ConfigDict) -> str:
    """`gan.ada.center` resolved: 'auto' is 'midpoint' under WGAN-GP, 'zero' otherwise."""
    if gan.ada.center != "auto":
        return gan.ada.center
    return "midpoint" if recipes.resolve(gan).loss == "wgan_gp" else "zero"


def adapt_augmentation(
    p: jax.Array,
    signs: jax.Array,
    count: jax.Array,
    real_scores: jax.Array,
    step: jax.Array,
    center: jax.Array | float = 0.0,
    *,
    target: float,
    interval: int,
    speed_kimg: float,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """ADA's feedback loop, one step of it: accumulate sign(D(real) - center); after every
    `interval` steps move p by sign(r_t - target) * images / (speed_kimg * 1000) (Karras et
    al. 2020).

    real_scores: float32[B], D's outputs on this step's (augmented) reals. center: where D's
    scale says "undecided": 0 for a logistic D (ADA's own heuristic); for a WGAN critic, whose
    offset is arbitrary, the midpoint of this step's mean real and mean fake scores. Returns
    the new (p, signs, count) and r_t = E[sign(D(real) - center)] over the images seen since
    the last move.
    """
    signs = signs + jnp.sum(jnp.sign(real_scores - center))
    count = count + real_scores.shape[0]
    rt = signs / jnp.maximum(count, 1.0)
    adjust = (step + 1) % interval == 0
    moved = augment.update_strength(
        p,
        rt,
        target=target,
        images_per_update=real_scores.shape[0] * interval,
        speed_kimg=speed_kimg,
    )
    return (
        jnp.where(adjust, moved, p),
        jnp.where(adjust, 0.0, signs),
        jnp.where(adjust, 0.0, count),
        rt,
    )


def _fresh_where(reset: jax.Array, fresh: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda f, o: jnp.where(reset, f, o), fresh, old)


def train_step(
    state: GanState,
    batch: dict[str, jax.Array],
    label_table: jax.Array,
    *,
    models: GanModels,
    optimizer: optax.GradientTransformation,
    settings: StepSettings,
    phase: Phase,
) -> tuple[GanState, dict[str, jax.Array]]:
    """One discriminator update, then one generator update, then the EMA, in `phase`.

    batch: {"image": uint8[B, R, R, C], "labels": float32[B, K]} at the dataset resolution.
    label_table: float32[N, K], the training label vectors fakes are conditioned on.
    The phase (its resolution, batch and where its fade-in starts) is static: one compiled
    program per phase, alpha computed from `state.step` inside it.
    """
    s = settings
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_zd, k_yd, k_eps, k_zg, k_yg = jax.random.split(key, 5)
    # Augmentation keys on a branch of their own: without ADA a step draws exactly what it
    # drew before ADA existed, so cpD-GAN runs reproduce across versions.
    k_ar, k_af, k_ag = jax.random.split(jax.random.fold_in(key, 1), 3)
    level = phase.resolution
    if phase.fade_steps:
        t = (state.step - phase.start_step).astype(jnp.float32) / phase.fade_steps
        alpha = jnp.clip(t, 0.0, 1.0)
    else:
        alpha = jnp.ones((), jnp.float32)
    real = reals_at_level(
        pipeline.images_to_float(batch["image"]), level, alpha, phase.fade_steps > 0
    )
    real_labels = batch["labels"]
    n = real.shape[0]

    g_opt, d_opt = state.g_opt, state.d_opt
    if s.reset_optimizer and phase.index > 0:
        # ProGAN resets Adam's moments whenever layers are added or finish fading in.
        reset = (state.step == phase.start_step) | (state.step == phase.stable_start)
        g_opt = _fresh_where(reset, optimizer.init(state.g_params), g_opt)
        d_opt = _fresh_where(reset, optimizer.init(state.d_params), d_opt)

    def augmented(images, k):
        if not s.ada:
            return images
        return augment.augment(images, k, state.ada_p, augmentations=s.ada_augmentations)

    def generate(g_params, k_z, labels):
        z = jax.random.normal(k_z, (n, s.latent_dim), jnp.float32)
        return models.generate(g_params, z, labels, level=level, alpha=alpha)

    # The named scopes label the compiled program's operations for profiles
    # (benchmarks/step_profile.py); they change nothing computed.
    with jax.named_scope("d_update"):
        # The D step's fakes carry the real minibatch's labels, as the study's D_wgangp
        # conditioned them: D compares real and fake images of the same label vectors, and
        # the gradient penalty's real/fake mixtures keep one consistent label.
        del k_yd  # drawn for the split's layout, so the other keys stay as they were
        fake_labels = real_labels
        fake = jax.lax.stop_gradient(generate(state.g_params, k_zd, fake_labels))

    def d_loss_fn(d_params):
        def critic(images, labels, k):
            return models.discriminate(d_params, augmented(images, k), labels, alpha)

        # Reals and fakes in one pass (each keeps its own minibatch statistics): the same
        # scores as two passes, from matrix products twice as tall.
        scores, logits = models.discriminate(
            d_params,
            jnp.concatenate([augmented(real, k_ar), augmented(fake, k_af)]),
            jnp.concatenate([real_labels, fake_labels]),
            alpha,
            num_batches=2,
        )
        s_real, s_fake = scores[:n], scores[n:]
        logits_real, logits_fake = (None, None) if logits is None else (logits[:n], logits[n:])
        metrics = {"d_real": jnp.mean(s_real), "d_fake": jnp.mean(s_fake)}
        if s.loss == "wgan_gp":
            # Gradient penalty on straight lines between real and fake images (real labels),
            # taken before augmentation so it constrains D on the data's own space.
            with jax.named_scope("gradient_penalty"):
                eps = jax.random.uniform(k_eps, (n, 1, 1, 1), jnp.float32)
                mixed = eps * real + (1.0 - eps) * fake
                grads = jax.grad(lambda x: jnp.sum(critic(x, real_labels, k_ar)[0]))(mixed)
                norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)) + 1e-12)
                penalty = jnp.mean(jnp.square(norms - 1.0))
            wasserstein = jnp.mean(s_real) - jnp.mean(s_fake)
            drift = jnp.mean(jnp.square(s_real))
            loss = -wasserstein + s.gp_weight * penalty + s.drift_weight * drift
            metrics.update(wasserstein=wasserstein, gp=penalty)
        else:
            loss = jnp.mean(jax.nn.softplus(s_fake)) + jnp.mean(jax.nn.softplus(-s_real))
            if s.r1_gamma > 0:  # lazy R1 (StyleGAN2): every r1_interval steps, times it
                r1 = jax.lax.cond(
                    state.step % s.r1_interval == 0,
                    lambda: r1_penalty(lambda x: critic(x, real_labels, k_ar)[0], real),
                    lambda: jnp.zeros((), jnp.float32),
                )
                loss = loss + (0.5 * s.r1_gamma * s.r1_interval) * r1
                metrics["r1"] = r1
        if s.aux != "none":
            label_loss = jnp.mean(aux_penalty(s.aux, logits_real, real_labels))
            if s.aux == "softmax":  # the study's AC-GAN trains D's classifier on fakes too
                label_loss = label_loss + jnp.mean(aux_penalty(s.aux, logits_fake, fake_labels))
            loss = loss + s.aux_weight * label_loss
            metrics["label_loss_d"] = label_loss
        metrics["loss_d"] = loss
        return loss, (metrics, s_real, s_fake)

    with jax.named_scope("d_update"):
        d_grads, (d_metrics, s_real, s_fake) = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
        with jax.named_scope("optimizer"):
            d_updates, d_opt = optimizer.update(d_grads, d_opt, state.d_params)
            d_params = optax.apply_updates(state.d_params, d_updates)

    g_labels = sample_fake_labels(k_yg, label_table, n)
    if s.mode_seeking:  # pairs: sample i and i + n/2 share their labels, not their latents
        g_labels = jnp.concatenate([g_labels[: n // 2], g_labels[: n // 2]])

    def g_loss_fn(g_params):
        z = jax.random.normal(k_zg, (n, s.latent_dim), jnp.float32)
        images = models.generate(g_params, z, g_labels, level=level, alpha=alpha)
        scores, logits = models.discriminate(d_params, augmented(images, k_ag), g_labels, alpha)
        if s.loss == "wgan_gp":
            loss = -jnp.mean(scores)
        else:
            loss = jnp.mean(jax.nn.softplus(-scores))  # non-saturating
        metrics = {}
        if s.aux != "none":
            label_loss = jnp.mean(aux_penalty(s.aux, logits, g_labels))
            loss = loss + s.aux_weight_g * label_loss
            metrics["label_loss_g"] = label_loss
        if s.mode_seeking:
            diversity = mode_seeking_ratio(images, z)
            loss = loss + s.mode_seeking / (diversity + 1e-5)
            metrics["diversity_g"] = diversity
        metrics["loss_g"] = loss
        return loss, metrics

    with jax.named_scope("g_update"):
        g_grads, g_metrics = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
        with jax.named_scope("optimizer"):
            g_updates, g_opt = optimizer.update(g_grads, g_opt, state.g_params)
            g_params = optax.apply_updates(state.g_params, g_updates)

    decay = jnp.asarray(s.ema_decay, jnp.float32)
    if s.ema_warmup:
        # Early on the EMA would mostly average the random init: ramp the decay up.
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    with jax.named_scope("ema"):
        g_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.g_ema, g_params)

    ada_p, ada_signs, ada_count = state.ada_p, state.ada_signs, state.ada_count
    metrics = {**d_metrics, **g_metrics}
    if s.ada:
        ada_p, ada_signs, ada_count, rt = adapt_augmentation(
            ada_p,
            ada_signs,
            ada_count,
            s_real,
            state.step,
            0.5 * (jnp.mean(s_real) + jnp.mean(s_fake)) if s.ada_midpoint else 0.0,
            target=s.ada_target,
            interval=s.ada_interval,
            speed_kimg=s.ada_kimg,
        )
        metrics.update(ada_p=state.ada_p, ada_rt=rt)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_ema=g_ema,
        g_opt=g_opt,
        d_opt=d_opt,
        phase=jnp.int32(phase.index),
        alpha=alpha,
        ada_p=ada_p,
        ada_signs=ada_signs,
        ada_count=ada_count,
    )
    metrics["grad_norm_d"] = optax.tree.norm(d_grads)
    metrics["grad_norm_g"] = optax.tree.norm(g_grads)
    if phase.fade_steps:
        metrics["alpha"] = alpha
    return new_state, metrics


def make_train_step(
    gan: ml_collections.ConfigDict,
    models: GanModels,
    optimizer: optax.GradientTransformation,
    phase: Phase,
) -> Callable[..., tuple[GanState, dict[str, jax.Array]]]:
    """`train_step` for one phase with the config's static settings bound (for `jax.jit`)."""
    return functools.partial(
        train_step,
        models=models,
        optimizer=optimizer,
        settings=StepSettings.from_config(gan),
        phase=phase,
    )


def generate_images(
    g_params: PyTree,
    z: jax.Array,
    labels: jax.Array,
    *,
    models: GanModels,
    level: int | None = None,
    alpha: jax.Array | float = 1.0,
) -> jax.Array:
    """EMA (or raw) generator -> uint8[B, level, level, C] (default: the target resolution).

    z: float32[B, L]; labels: float32[B, K].
    """
    level = models.generator.resolution if level is None else level
    return pipeline.images_to_uint8(
        models.generate(g_params, z, labels, level=level, alpha=jnp.asarray(alpha, jnp.float32))
    )


# --- the `gan` stage ---------------------------------------------------------------------


def sample_grid_inputs(
    seed: int, combos: np.ndarray, *, rows: int, cols: int, latent_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed latents and labels of the monitoring grid: row r = combination r (most frequent
    first), the same `cols` latents in every row so rows differ only by their labels.

    Returns z: float32[rows * cols, latent_dim], labels: float32[rows * cols, K].
    """
    rows = min(rows, len(combos))
    rng = np.random.default_rng([seed, 7])
    z = rng.standard_normal((cols, latent_dim)).astype(np.float32)
    z = np.tile(z, (rows, 1))
    labels = np.repeat(combos[:rows].astype(np.float32), cols, axis=0)
    return z, labels


# The marking of the real-image grid `samples/real.png`, drawn on the image.
REAL_GRID_TITLE = "REAL PATIENT IMAGES - private, not part of any release"
REAL_GRID_FOOTER = (
    "real training images, the reference for the sample grids: keep inside the hospital"
)


def save_real_grid(
    path,
    source,
    indices: np.ndarray,
    combos: np.ndarray,
    *,
    cols: int,
    row_titles: list[str],
    seed: int,
    attribution: str | None = None,
) -> None:
    """Real training images laid out like the sample grids (row r = combination r), so
    generated rows can be compared with what they should look like.

    It sits beside the synthetic grids and looks like them, so the picture itself says what
    it is (`REAL_GRID_TITLE`, `REAL_GRID_FOOTER`): a copy that leaves its folder still does.
    `synthjax.export` never releases it."""
    labels = (source.labels[indices] > 0.5).astype(np.uint8)
    rng = np.random.default_rng([seed, 11])
    blank = np.zeros(source.image_shape, np.uint8)
    rows = []
    for combo in combos:
        members = indices[np.all(labels == combo, axis=1)]
        chosen = rng.permutation(members)[:cols]
        images = [source[int(i)]["image"] for i in chosen]
        rows.append(images + [blank] * (cols - len(images)))
    grids.save_image_grid(
        path,
        np.asarray(rows),
        row_titles=row_titles,
        title=REAL_GRID_TITLE,
        footer=REAL_GRID_FOOTER + (f" | {attribution}" if attribution else ""),
    )


def upsample_to(images: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour upsampling of uint8[..., r, r, C] to `resolution` (grid display)."""
    factor = resolution // images.shape[-2]
    return images.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else images


@dataclasses.dataclass(frozen=True)
class GanSetup:
    """What a run's config decides about the GAN: models, optimizer, schedule, initialiser."""

    models: GanModels
    optimizer: optax.GradientTransformation
    schedule: Schedule
    init: Callable[[], GanState]  # builds a fresh state (wrap in jit with out_shardings)


def gan_setup(
    cfg: ml_collections.ConfigDict, *, num_labels: int, image_shape: tuple[int, int, int]
) -> GanSetup:
    """Models, optimizer, schedule and initialiser for images of `image_shape` (its side is
    the target resolution)."""
    resolution = image_shape[0]
    models = build_models(
        cfg.gan,
        resolution=resolution,
        num_labels=num_labels,
        channels=image_shape[-1],
        conv_lowering=cfg.conv_lowering,
    )
    optimizer = make_optimizer(cfg.gan)
    init = functools.partial(
        init_state,
        cfg.seed,
        models,
        optimizer,
        latent_dim=cfg.gan.latent_dim,
        num_labels=num_labels,
        image_shape=image_shape,
        ada_start_p=cfg.gan.ada.start_p if cfg.gan.ada.enabled else 0.0,
    )
    return GanSetup(models, optimizer, build_schedule(cfg.gan, resolution), init)


def _run_setup(run: Run) -> GanSetup:
    return gan_setup(
        run.config,
        num_labels=len(prepared(run).label_names),
        image_shape=prepared(run).source("train").image_shape,
    )


def feature_space(run: Run) -> fd_monitor.FeatureSpace:
    """The feature space `gan.fd.features` names."""
    fd = run.config.gan.fd
    if fd.features == "inception":
        fn = inception.features_fn(fd.inception_weights, batch_size=fd.batch_size)
        return fd_monitor.CallableFeatures(fn)
    return classifier.DomainFeatures(run)


def run_stage(run: Run) -> dict[str, Any]:
    """Trains the GAN on the prepared real training subset; returns the stage summary."""
    cfg, mesh = run.config, run.mesh
    data = prepared(run)
    train_source = data.source("train")
    train_indices = data.subset.indices["train"]
    setup = _run_setup(run)
    models, optimizer, schedule = setup.models, setup.optimizer, setup.schedule
    for phase in schedule.phases:
        parallel.check_batch_size(
            "gan.prog.batch_sizes" if models.arch == "prog" else "gan.batch_size",
            phase.batch_size,
            mesh,
        )
    replicated = parallel.replicated(mesh)
    create_state = compiler.jit(setup.init, out_shardings=replicated)
    label_table = jax.device_put(train_source.labels[train_indices], replicated)
    # One compiled step per phase (compiled when the phase first runs).
    jit_steps = [
        distributed.CompiledEverywhere(
            compiler.jit(make_train_step(cfg.gan, models, optimizer, phase), donate_argnums=0),
            f"gan step, phase {phase.index}",
        )
        for phase in schedule.phases
    ]
    step_fn = lambda state, batch, step: jit_steps[schedule.phase_at(step).index](
        state, batch, label_table
    )
    dataset = pipeline.train_dataset(
        train_source,
        train_indices,
        global_batch=schedule.batch_plan(),
        seed=cfg.seed,
        hflip=cfg.dataset.hflip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    samples_dir = run.stage_dir("gan") / "samples"
    z, grid_labels = sample_grid_inputs(
        cfg.seed,
        data.subset.combos,
        rows=cfg.gan.sample_rows,
        cols=cfg.gan.sample_cols,
        latent_dim=cfg.gan.latent_dim,
    )
    rows = len(grid_labels) // cfg.gan.sample_cols
    row_titles = [
        grids.label_combination_name(c, data.label_names) for c in data.subset.combos[:rows]
    ]
    generate = compiler.jit(
        functools.partial(generate_images, models=models), static_argnames=("level",)
    )
    attribution = run.summary("prepare").get("attribution")  # shown wherever images are

    def save_samples(state: GanState, step: int):
        phase = schedule.phase_at(step - 1)
        alpha = phase.alpha(step - 1)
        images = generate(state.g_ema, z, grid_labels, level=phase.resolution, alpha=alpha)
        images = upsample_to(parallel.gather(images), cfg.dataset.resolution)
        if run.is_host0:
            samples_dir.mkdir(parents=True, exist_ok=True)
            grown = (
                ""
                if schedule.grown_at(step - 1)
                else (f", growing: {phase.resolution}x{phase.resolution} at alpha {alpha:.2f}")
            )
            grids.save_image_grid(
                samples_dir / f"step_{step:07d}.png",
                images.reshape(rows, cfg.gan.sample_cols, *images.shape[1:]),
                row_titles=row_titles,
                footer=attribution,
                title=f"EMA generator, step {step} ({schedule.kimg_at(step):.1f} kimg{grown})",
            )
        return state, {}

    if run.is_host0 and not (samples_dir / "real.png").exists():
        save_real_grid(
            samples_dir / "real.png",
            train_source,
            train_indices,
            data.subset.combos[:rows],
            cols=cfg.gan.sample_cols,
            row_titles=row_titles,
            seed=cfg.seed,
            attribution=attribution,
        )

    hooks = [Hook("samples", cfg.gan.sample_every, save_samples)]
    monitor = None
    if cfg.gan.fd.every_kimg > 0:
        split = cfg.gan.fd.reference_split
        real_classifier = (
            classifier.DomainFeatures(run) if run.finished("classifier_real") else None
        )
        space = (
            real_classifier
            if cfg.gan.fd.features == "classifier" and real_classifier is not None
            else feature_space(run)
        )
        monitor = fd_monitor.FrechetMonitor(
            cfg.gan.fd,
            space=space,
            classifier=real_classifier,
            label_names=tuple(data.label_names),
            combos=data.subset.combos,
            select=cfg.gan.select,
            fd_guard=cfg.gan.select_fd_guard,
            generate=distributed.CompiledEverywhere(
                compiler.jit(functools.partial(generate_images, models=models)), "gan fd generate"
            ),
            reference=(data.source(split), data.subset.indices[split]),
            latent_dim=cfg.gan.latent_dim,
            schedule=schedule,
            mesh=mesh,
            seed=cfg.seed,
        )
        hooks.append(
            Hook("fd", 0, monitor.hook, due=fd_monitor.fd_is_due(schedule, cfg.gan.fd.every_kimg))
        )

    result = train_loop(
        LoopSettings(
            name="gan",
            stage_dir=run.stage_dir("gan"),
            total_steps=schedule.total_steps,
            global_batch=schedule.constant_batch or 0,
            checkpoint_every=cfg.gan.checkpoint_every,
            log_every=cfg.gan.log_every,
            images_at=schedule.images_at,
        ),
        mesh=mesh,
        create_state=create_state,
        step_fn=step_fn,
        dataset=dataset,
        hooks=hooks,
        finished=monitor.finished if monitor is not None else None,
    )
    state = result.state
    best_step = int(jax.device_get(state.best_step))
    return {
        "step": result.step,
        "kimg": schedule.kimg_at(result.step),
        "state_sha256": state_sha256(state.trainable()),
        "arch": models.arch,
        "phases": [dataclasses.asdict(p) for p in schedule.phases],
        "early_stopped": result.stopped_early,
        "selected": {
            "by": cfg.gan.select if best_step >= 0 else "last",
            "step": best_step if best_step >= 0 else result.step,
            "kimg": schedule.kimg_at(best_step if best_step >= 0 else result.step),
            "fd": float(jax.device_get(state.best_fd)) if best_step >= 0 else None,
            "label_fidelity": _finite_or_none(state.best_label_fidelity)
            if best_step >= 0
            else None,
            "features": cfg.gan.fd.features if monitor is not None else None,
        },
        "recipe": dataclasses.asdict(recipes.resolve(cfg.gan)),
        "ada_p": float(jax.device_get(state.ada_p)),
        "train_images": len(train_indices),
        "throughput": result.throughput,
    }


def _finite_or_none(value: jax.Array) -> float | None:
    value = float(jax.device_get(value))
    return value if np.isfinite(value) else None


def restore_generator(run: Run) -> tuple[GanModels, PyTree]:
    """The trained models and the EMA generator `synthesize` uses: the selected one
    (`gan.select`) when selection ran, else the last."""
    setup = _run_setup(run)
    abstract = parallel.replicated_abstract(setup.init, run.mesh)
    state = restore_final_state(run.stage_dir("gan"), abstract)
    selected = int(jax.device_get(state.best_step)) >= 0
    return setup.models, state.best_g_ema if selected else state.g_ema
