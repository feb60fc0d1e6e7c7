"""The GAN library: the train state and the pure train step of either GAN, and the setup a
config decides (models: `gan_models.py`; losses: `gan_losses.py`). No workdir needed, apart
from `run_setup` and `restore_generator`, which read a run's prepared data and checkpoint.

Data flow: grain batches of real images (uint8) + their label vectors -> global arrays on
the mesh -> `train_step` (one discriminator and one generator update, as the study's
trainer alternated them; the recipe's losses, `gan_losses.py`; optional ADA,
`augment.py`) -> EMA generator. The `gan` stage (`synthjax/stages/gan.py`) runs the loop,
the sample grids and model selection (`fd_monitor`) around it.

The discriminator step's fakes carry the real minibatch's label vectors (as the study's
`D_wgangp`); the generator step draws its label vectors on device from the training set's
("labels for fakes sampled from the empirical training label set"). Both networks see the
labels through `gan_models.conditioning_labels`, which adds an explicit "no finding" entry.

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
import jax
import jax.numpy as jnp
import ml_collections
import optax

from synthjax.core import parallel
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.prepared import prepared
from synthjax.models.layers import downsample_2x, upsample_2x
from synthjax.train import augment, gan_losses
from synthjax.train.gan_models import GanModels, build_models, conditioning_labels
from synthjax.train.loop import restore_final_state
from synthjax.train.schedule import Phase, Schedule, build_schedule
from synthjax.train.selection import BestSoFar

PyTree = Any


# --- the state ---------------------------------------------------------------------------


@flax.struct.dataclass
class GanOptimizers:
    """Adam's moments of the generator (g) and the discriminator (d)."""

    g: PyTree
    d: PyTree


@flax.struct.dataclass
class AdaState:
    """ADA (`augment.py`): the augmentation strength p, and sign(D(real)) summed over the
    `count` images seen since its last adjustment (float32 scalars)."""

    p: jax.Array
    signs: jax.Array
    count: jax.Array


@flax.struct.dataclass
class GanState:
    """Everything that changes during GAN training (a pytree; checkpointed whole).

    rng: uint32 key data of the base key; each step folds its step number into it.
    phase, alpha: the schedule's phase of the last step and the weight its newest layers had
      (prog-GAN's fade-in; 0 and 1 for cpD-GAN).
    best: the selected EMA generator (`gan.select`: by Fréchet distance, label fidelity or
      both; scores "fd" and "label_fidelity"; step -1: none selected yet) and the
      evaluations since it (early stopping); min_fd: the lowest FD seen (the guard of
      'combined' selection).
    """

    step: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_ema: PyTree
    opt: GanOptimizers
    rng: jax.Array
    phase: jax.Array
    alpha: jax.Array
    ada: AdaState
    best: BestSoFar
    min_fd: jax.Array

    def fingerprinted(self) -> dict[str, PyTree]:
        """What the stage's `state_sha256` covers: the parameters, the optimizers, where the
        schedule and ADA stand and the selected generator; not the (constant) base key nor
        the selection's bookkeeping. Named as in the flat layout, so fingerprints stay
        comparable across versions."""
        flat = self.flat_layout()
        return {k: flat[k] for k in FINGERPRINTED}

    def flat_layout(self) -> dict[str, PyTree]:
        """The state as the flat layout named it (checkpoints written before the nesting
        hold this tree; `train.loop` restores them through it)."""
        return {
            "step": self.step,
            "g_params": self.g_params,
            "d_params": self.d_params,
            "g_ema": self.g_ema,
            "g_opt": self.opt.g,
            "d_opt": self.opt.d,
            "rng": self.rng,
            "phase": self.phase,
            "alpha": self.alpha,
            "ada_p": self.ada.p,
            "ada_signs": self.ada.signs,
            "ada_count": self.ada.count,
            "best_g_ema": self.best.params,
            **self.best.flat_layout(evals_since="fd_evals_since_best"),
            "min_fd": self.min_fd,
        }

    @classmethod
    def from_flat_layout(cls, flat: dict[str, PyTree]) -> GanState:
        best = BestSoFar.from_flat_layout(
            flat, flat["best_g_ema"], ("fd", "label_fidelity"), "fd_evals_since_best"
        )
        return cls(
            step=flat["step"],
            g_params=flat["g_params"],
            d_params=flat["d_params"],
            g_ema=flat["g_ema"],
            opt=GanOptimizers(g=flat["g_opt"], d=flat["d_opt"]),
            rng=flat["rng"],
            phase=flat["phase"],
            alpha=flat["alpha"],
            ada=AdaState(p=flat["ada_p"], signs=flat["ada_signs"], count=flat["ada_count"]),
            best=best,
            min_fd=flat["min_fd"],
        )


# The fields of `flat_layout` that `GanState.fingerprinted` covers.
FINGERPRINTED = (
    "step",
    "g_params",
    "d_params",
    "g_ema",
    "g_opt",
    "d_opt",
    "phase",
    "alpha",
    "ada_p",
    "best_g_ema",
    "best_step",
)


# --- the optimizer and a fresh state -------------------------------------------------------


def learning_rate(gan: ml_collections.ConfigDict) -> float:
    """The architecture's own (`gan.<arch>.learning_rate`)."""
    return gan[gan.arch].learning_rate


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
        opt=GanOptimizers(g=optimizer.init(g_params), d=optimizer.init(d_params)),
        rng=jax.random.key_data(k_run),
        phase=jnp.zeros((), jnp.int32),
        alpha=jnp.ones((), jnp.float32),
        ada=AdaState(p=jnp.full((), ada_start_p, jnp.float32), signs=zero, count=zero),
        best=BestSoFar.start(g_params, {"fd": jnp.inf, "label_fidelity": -jnp.inf}, step=-1),
        min_fd=jnp.full((), jnp.inf, jnp.float32),
    )


# --- the train step ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static settings of a train step (hashable; bound with functools.partial)."""

    latent_dim: int
    losses: gan_losses.LossSettings
    ema_decay: float
    ema_warmup: bool
    reset_optimizer: bool
    ada: augment.AdaSettings

    @classmethod
    def from_config(cls, gan: ml_collections.ConfigDict) -> StepSettings:
        return cls(
            latent_dim=gan.latent_dim,
            losses=gan_losses.LossSettings.from_config(gan),
            ema_decay=gan.ema_decay,
            ema_warmup=gan.ema_warmup,
            reset_optimizer=gan.prog.reset_optimizer,
            ada=augment.AdaSettings.from_config(gan),
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


def ema_decay(settings: StepSettings, step: jax.Array) -> jax.Array:
    """The EMA generator's decay at `step`: `gan.ema_decay`, ramped up from 0.1 early on
    under `gan.ema_warmup` (the EMA would otherwise mostly average the random init)."""
    decay = jnp.asarray(settings.ema_decay, jnp.float32)
    if settings.ema_warmup:
        t = step.astype(jnp.float32)
        decay = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return decay


def _fresh_where(reset: jax.Array, fresh: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda f, o: jnp.where(reset, f, o), fresh, old)


def _optimizer_step(
    optimizer: optax.GradientTransformation, grads: PyTree, opt_state: PyTree, params: PyTree
) -> tuple[PyTree, PyTree]:
    with jax.named_scope("optimizer"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state


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
    alpha = jnp.asarray(phase.alpha(state.step), jnp.float32)
    real = reals_at_level(
        pipeline.images_to_float(batch["image"]), level, alpha, phase.fade_steps > 0
    )
    real_labels = batch["labels"]
    n = real.shape[0]

    g_opt, d_opt = state.opt.g, state.opt.d
    if s.reset_optimizer and phase.index > 0:
        # ProGAN resets Adam's moments whenever layers are added or finish fading in.
        reset = (state.step == phase.start_step) | (state.step == phase.stable_start)
        g_opt = _fresh_where(reset, optimizer.init(state.g_params), g_opt)
        d_opt = _fresh_where(reset, optimizer.init(state.d_params), d_opt)

    def augmented(images, k):
        if not s.ada.enabled:
            return images
        return augment.augment(images, k, state.ada.p, augmentations=s.ada.augmentations)

    # The named scopes label the compiled program's operations for profiles
    # (benchmarks/step_profile.py); they change nothing computed.
    with jax.named_scope("d_update"):
        # The D step's fakes carry the real minibatch's labels, as the study's D_wgangp
        # conditioned them: D compares real and fake images of the same label vectors, and
        # the gradient penalty's real/fake mixtures keep one consistent label.
        del k_yd  # drawn for the split's layout, so the other keys stay as they were
        fake_labels = real_labels
        z_d = jax.random.normal(k_zd, (n, s.latent_dim), jnp.float32)
        fake = models.generate(state.g_params, z_d, fake_labels, level=level, alpha=alpha)
        fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        def critic(images):  # under the reals' labels, augmented as the reals are
            return models.discriminate(d_params, augmented(images, k_ar), real_labels, alpha)[0]

        # Reals and fakes in one pass (each keeps its own minibatch statistics): the same
        # scores as two passes, from matrix products twice as tall.
        scores, logits = models.discriminate(
            d_params,
            jnp.concatenate([augmented(real, k_ar), augmented(fake, k_af)]),
            jnp.concatenate([real_labels, fake_labels]),
            alpha,
            num_batches=2,
        )
        inputs = gan_losses.CriticInputs(critic, real, fake, key=k_eps, step=state.step)
        real_targets, fake_targets = map(conditioning_labels, (real_labels, fake_labels))
        return gan_losses.discriminator_loss(
            scores, logits, real_targets, fake_targets, inputs, s.losses
        )

    with jax.named_scope("d_update"):
        d_grads, (d_metrics, s_real, s_fake) = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
        d_params, d_opt = _optimizer_step(optimizer, d_grads, d_opt, state.d_params)

    g_labels = sample_fake_labels(k_yg, label_table, n)
    if s.losses.mode_seeking:  # pairs: sample i and i + n/2 share their labels, not latents
        g_labels = jnp.concatenate([g_labels[: n // 2], g_labels[: n // 2]])

    def g_loss_fn(g_params):
        z = jax.random.normal(k_zg, (n, s.latent_dim), jnp.float32)
        images = models.generate(g_params, z, g_labels, level=level, alpha=alpha)
        scores, logits = models.discriminate(d_params, augmented(images, k_ag), g_labels, alpha)
        targets = conditioning_labels(g_labels)
        return gan_losses.generator_loss(scores, logits, targets, images, z, s.losses)

    with jax.named_scope("g_update"):
        g_grads, g_metrics = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
        g_params, g_opt = _optimizer_step(optimizer, g_grads, g_opt, state.g_params)

    decay = ema_decay(s, state.step)
    with jax.named_scope("ema"):
        g_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.g_ema, g_params)

    ada = state.ada
    metrics = {**d_metrics, **g_metrics}
    if s.ada.enabled:
        center = 0.5 * (jnp.mean(s_real) + jnp.mean(s_fake)) if s.ada.midpoint else 0.0
        *moved, rt = augment.adapt_augmentation(
            ada.p,
            ada.signs,
            ada.count,
            s_real,
            state.step,
            center,
            target=s.ada.target,
            interval=s.ada.interval,
            speed_kimg=s.ada.speed_kimg,
        )
        ada = AdaState(*moved)
        metrics.update(ada_p=state.ada.p, ada_rt=rt)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_ema=g_ema,
        opt=GanOptimizers(g=g_opt, d=d_opt),
        phase=jnp.int32(phase.index),
        alpha=alpha,
        ada=ada,
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


# --- setup from a config, and the trained generator of a run ------------------------------


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


def run_setup(run: Run) -> GanSetup:
    """`gan_setup` for a run's config and prepared training images."""
    return gan_setup(
        run.config,
        num_labels=len(prepared(run).label_names),
        image_shape=prepared(run).source("train").image_shape,
    )


def restore_generator(run: Run) -> tuple[GanModels, PyTree]:
    """The trained models and the EMA generator `synthesize` uses: the selected one
    (`gan.select`) when selection ran, else the last."""
    setup = run_setup(run)
    abstract = parallel.replicated_abstract(setup.init, run.mesh)
    state = restore_final_state(run.stage_dir("gan"), abstract)
    selected = state.best.selected_step() >= 0
    return setup.models, state.best.params if selected else state.g_ema
