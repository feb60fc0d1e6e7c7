"""GAN model selection: the EMA generator measured during training (Fréchet distance,
label fidelity, conditioning strength), the best one kept, training stopped after
`patience` evaluations without improvement.

Sits inside the `gan` stage: a loop hook (`FrechetMonitor.hook`) that runs every
`gan.fd.every_kimg` once the GAN has grown to the target resolution. Real statistics come
once from a real split (`gan.fd.reference_split`); fakes are the EMA generator's images for
fixed latents, conditioned on the same real label vectors, so successive evaluations differ
only by the generator. The feature space is the real-trained classifier's pooled features
(`gan.fd.features = 'classifier'`, the domain features) or Inception-v3 pool3 features from
a weights file the user provides (`'inception'`: FID as published GANs report it). The same
generated images go through the real-trained classifier for label fidelity
(`eval/label_fidelity.py`: its AUROC against the labels they were generated from), and a
small grid of fixed latents x label combinations gives the conditioning strength. KID
(`eval/fidelity.kid`, against the same real features) is logged beside FD with its 95%
bootstrap interval over images (`kid_lo`, `kid_hi`); it is not part of selection.

`gan.select` chooses what "best" means: 'fd' (the study's: lowest FD), 'label_fidelity'
(highest label fidelity) or 'combined' (highest label fidelity among the evaluations whose
FD is within `gan.select_fd_guard` times the lowest FD seen so far: labels first, with FD
guarding against a generator that draws the labels on broken images).

Selection and patience count only from `gan.fd.start_kimg` (the study: 7,000 kimg at 32^2
and 64^2, 9,000 at 128^2, patience 2); earlier evaluations are logged, not selected.
`synthesize` uses the selected generator (`GanState.best`, a `selection.BestSoFar`), or the
last EMA generator when no evaluation was eligible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from synthjax.core import parallel
from synthjax.data import input_pipeline as pipeline
from synthjax.data.loader import ImageSource
from synthjax.eval.fidelity import frechet_distance, gaussian_stats, kid
from synthjax.eval.label_fidelity import conditioning_strength, label_fidelity
from synthjax.train.schedule import Schedule

PyTree = Any


class FeatureSpace(Protocol):
    def of_images(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, C] -> float32[N, F]."""


class LabelClassifier(Protocol):
    def predict_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8[N, H, W, C] -> (probabilities float32[N, K], features float32[N, F])."""


SELECTIONS = ("fd", "label_fidelity", "combined")
FD_FEATURES = ("classifier", "inception")  # the space FD is measured in
# KID at each evaluation: the references' subsets of 1,000 images, but 10 of them, not 100:
# the number of subsets changes KID's noise, not its expectation, and in 1,024-d features
# at 10,000 images 10 subsets took 6 s on 2 CPU cores (100: a minute per evaluation).
MONITOR_KID_SUBSET_SIZE = 1000
MONITOR_KID_SUBSETS = 10
# Resamples of the logged KID interval: enough to show whether two evaluations differ by
# more than their sample, at about 3 GFLOP per evaluation with 10 subsets of 1,000.
MONITOR_KID_RESAMPLES = 100


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluation of a generator (label_fidelity None without a classifier)."""

    fd: float
    label_fidelity: float | None
    metrics: dict[str, float]


def is_better(
    select: str,
    new: Evaluation,
    best_fd: float,
    best_label_fidelity: float,
    min_fd: float,
    fd_guard: float,
) -> bool:
    """Whether `new` replaces the selected generator (scored best_fd, best_label_fidelity;
    best_fd = inf when none is selected). `min_fd` is the lowest FD seen, `new` included."""
    if select == "fd" or new.label_fidelity is None:
        return new.fd < best_fd
    lf = new.label_fidelity
    if select == "label_fidelity":
        return lf > best_label_fidelity or (lf == best_label_fidelity and new.fd < best_fd)
    bound = fd_guard * min_fd
    if new.fd > bound:
        return False
    if best_fd > bound:  # the selected one no longer passes the guard
        return True
    return lf > best_label_fidelity or (lf == best_label_fidelity and new.fd < best_fd)


@dataclasses.dataclass(frozen=True)
class CallableFeatures:
    """A feature space from a function uint8[N, H, W, C] -> float32[N, F]."""

    fn: Callable[[np.ndarray], np.ndarray]

    def of_images(self, images: np.ndarray) -> np.ndarray:
        return self.fn(images)


def features_of_source(
    space: FeatureSpace, source: ImageSource, indices: np.ndarray, *, batch_size: int
) -> np.ndarray:
    """float32[len(indices), F]: features of the kept records of a split, in order."""
    out = []
    for batch in pipeline.eval_batches(source, indices, batch_size=batch_size):
        out.append(space.of_images(batch["image"][batch["mask"]]))
    return np.concatenate(out)


def reference_indices(indices: np.ndarray, num_images: int, seed: int) -> np.ndarray:
    """At most `num_images` of a split's kept records, a seeded random choice, sorted."""
    if len(indices) <= num_images:
        return np.asarray(indices)
    rng = np.random.default_rng([seed, 17])
    return np.sort(rng.choice(np.asarray(indices), num_images, replace=False))


def fd_is_due(schedule: Schedule, every_kimg: float) -> Callable[[int], bool]:
    """Due after step `steps` when the GAN has grown and a multiple of `every_kimg` was
    crossed by it, and at the last step."""
    every = round(every_kimg * 1000)  # whole images: no float rounding at the multiples

    def due(steps: int) -> bool:
        if steps >= schedule.total_steps:
            return schedule.grown_at(steps - 1)
        if every <= 0 or not schedule.grown_at(steps - 1):
            return False
        return schedule.images_at(steps) // every > schedule.images_at(steps - 1) // every

    return due


class FrechetMonitor:
    """Evaluates the EMA generator (FD against the real reference, label fidelity,
    conditioning strength) and keeps the best generator in the state."""

    def __init__(
        self,
        fd: ml_collections.ConfigDict,
        *,
        space: FeatureSpace,
        generate: Callable[[PyTree, jax.Array, jax.Array], jax.Array],
        reference: tuple[ImageSource, np.ndarray],
        latent_dim: int,
        schedule: Schedule,
        mesh: jax.sharding.Mesh,
        seed: int,
        classifier: LabelClassifier | None = None,
        label_names: tuple[str, ...] = (),
        combos: np.ndarray | None = None,
        select: str = "fd",
        fd_guard: float = 1.5,
    ):
        """generate(g_params, z, labels) -> uint8 images, jitted, at the target resolution.

        classifier: the real-trained classifier (label fidelity; required unless select is
        'fd'). combos: label combinations for the conditioning strength (>= 2 rows).
        """
        self.fd = fd
        self.space = space
        self.schedule = schedule
        self.mesh = mesh
        self.classifier = classifier
        self.label_names = tuple(label_names)
        self.select = select
        self.fd_guard = fd_guard
        self._generate = generate
        source, indices = reference
        indices = reference_indices(indices, fd.num_images, seed)
        real = features_of_source(space, source, indices, batch_size=fd.batch_size)
        self.reference = gaussian_stats(real)
        self.reference_features = real
        self.seed = seed
        self.num_reference = len(indices)
        # Fakes: the reference images' label vectors, cycled to num_images, fixed latents.
        labels = source.labels[indices]
        self.labels = np.resize(labels, (fd.num_images, labels.shape[1])).astype(np.float32)
        rng = np.random.default_rng([seed, 19])
        self.z = rng.standard_normal((fd.num_images, latent_dim)).astype(np.float32)
        self.combos = None
        if combos is not None and len(combos) >= 2:
            self.combos = np.asarray(combos[:8], np.float32)
            self.strength_z = rng.standard_normal((8, latent_dim)).astype(np.float32)
        logging.info(
            "gan: Fréchet distance against %d real %s images, %d generated, in %d-d features",
            self.num_reference,
            fd.reference_split,
            fd.num_images,
            real.shape[1],
        )

    def _images(self, g_params: PyTree, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, C] from the generator, in padded batches (one program)."""
        batch = self.fd.batch_size
        out = []
        for start in range(0, len(z), batch):
            zb, yb = z[start : start + batch], y[start : start + batch]
            n = len(zb)
            if n < batch:
                zb = np.concatenate([zb, np.repeat(zb[-1:], batch - n, axis=0)])
                yb = np.concatenate([yb, np.repeat(yb[-1:], batch - n, axis=0)])
            inputs = parallel.from_full({"z": zb, "y": yb}, self.mesh)
            out.append(parallel.gather(self._generate(g_params, inputs["z"], inputs["y"]))[:n])
        return np.concatenate(out)

    def evaluate(self, g_params: PyTree) -> Evaluation:
        """FD, label fidelity and conditioning strength of the generator `g_params`."""
        batch = self.fd.batch_size
        features, probs = [], []
        for start in range(0, len(self.z), batch):
            images = self._images(
                g_params, self.z[start : start + batch], self.labels[start : start + batch]
            )
            if self.classifier is None:
                features.append(self.space.of_images(images))
            elif self.classifier is self.space:  # one pass gives both (the default)
                p, f = self.classifier.predict_images(images)
                probs.append(p)
                features.append(f)
            else:
                features.append(self.space.of_images(images))
                probs.append(self.classifier.predict_images(images)[0])
        fake = np.concatenate(features)
        fd = frechet_distance(*gaussian_stats(fake), *self.reference)
        kid_result = kid(
            self.reference_features,
            fake,
            subset_size=MONITOR_KID_SUBSET_SIZE,
            num_subsets=MONITOR_KID_SUBSETS,
            num_resamples=MONITOR_KID_RESAMPLES,
            seed=self.seed,
        )
        metrics = {"fd": fd, "kid": kid_result["kid"]}
        if kid_result["kid_ci"] is not None:
            metrics["kid_lo"], metrics["kid_hi"] = kid_result["kid_ci"]
        lf = None
        if self.classifier is not None:
            result = label_fidelity(np.concatenate(probs), self.labels, self.label_names)
            lf = result["auroc_mean"]
            if lf is not None:
                metrics["label_fidelity"] = lf
                for name, row in result["per_label"].items():
                    if row["auroc"] is not None:
                        metrics[f"label_fidelity/{name}"] = row["auroc"]
        if self.combos is not None:
            metrics["conditioning_strength"] = conditioning_strength(
                lambda z, y: self._images(g_params, z, y), self.strength_z, self.combos
            )
        return Evaluation(fd=fd, label_fidelity=lf, metrics=metrics)

    def hook(self, state: Any, step: int) -> tuple[Any, dict[str, float]]:
        """The loop hook: evaluate, select, count patience (host-side; a few scalars move)."""
        ev = self.evaluate(state.g_ema)
        kimg = self.schedule.kimg_at(step)
        metrics = dict(ev.metrics)
        lf_text = "" if ev.label_fidelity is None else f", label fidelity {ev.label_fidelity:.3f}"
        if kimg < self.fd.start_kimg:
            logging.info(
                "gan step %d (%.1f kimg): FD %.4g%s (selection from %g kimg)",
                step,
                kimg,
                ev.fd,
                lf_text,
                self.fd.start_kimg,
            )
            return state, metrics
        best = state.best
        best_fd, best_lf = best.score("fd"), best.score("label_fidelity")
        min_fd = min(float(jax.device_get(state.min_fd)), ev.fd)
        improved = is_better(self.select, ev, best_fd, best_lf, min_fd, self.fd_guard)
        lf = -np.inf if ev.label_fidelity is None else ev.label_fidelity
        scores = {"fd": ev.fd, "label_fidelity": lf}
        best = best.after_evaluation(improved, state.g_ema, scores, step)
        if improved:
            best_fd, best_lf = ev.fd, ev.label_fidelity
        state = state.replace(best=best, min_fd=jnp.float32(min_fd))
        state = jax.device_put(state, parallel.replicated(self.mesh))
        metrics["best_fd"] = best_fd
        if best_lf is not None and np.isfinite(best_lf):
            metrics["best_label_fidelity"] = best_lf
        logging.info(
            "gan step %d (%.1f kimg): FD %.4g%s (selected: step %d, FD %.4g)",
            step,
            kimg,
            ev.fd,
            lf_text,
            best.selected_step(),
            best_fd,
        )
        return state, metrics

    def finished(self, state: Any) -> bool:
        """Early stop: `patience` eligible evaluations in a row without a better generator."""
        return self.fd.patience > 0 and state.best.patience_exhausted(self.fd.patience)
