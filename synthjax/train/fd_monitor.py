"""GAN model selection in the study's way: Fréchet distance of the EMA generator, tracked
during training, the best generator kept, training stopped after `patience` evaluations
without improvement.

Sits inside the `gan` stage: a loop hook (`FrechetMonitor.hook`) that runs every
`gan.fd.every_kimg` once the GAN has grown to the target resolution. Real statistics come
once from a real split (`gan.fd.reference_split`); fakes are the EMA generator's images for
fixed latents, conditioned on the same real label vectors, so successive evaluations differ
only by the generator. The feature space is the real-trained classifier's pooled features
(`gan.fd.features = 'classifier'`, the domain features) or Inception-v3 pool3 features from
a weights file the user provides (`'inception'`: FID as published GANs report it).

Selection and patience count only from `gan.fd.start_kimg` (the study: 7,000 kimg at 32^2
and 64^2, 9,000 at 128^2, patience 2); earlier evaluations are logged, not selected.
`synthesize` uses the selected generator (`GanState.best_g_ema`), or the last EMA generator
when no evaluation was eligible.
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

from synthjax import parallel
from synthjax.data import pipeline
from synthjax.data.loader import ImageSource
from synthjax.eval.fidelity import frechet_distance, gaussian_stats
from synthjax.train.schedule import Schedule

PyTree = Any


class FeatureSpace(Protocol):
    def of_images(self, images: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, C] -> float32[N, F]."""


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
    """Evaluates FD(EMA generator, real reference) and keeps the best generator in the state."""

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
    ):
        """generate(g_params, z, labels) -> uint8 images, jitted, at the target resolution."""
        self.fd = fd
        self.space = space
        self.schedule = schedule
        self.mesh = mesh
        self._generate = generate
        source, indices = reference
        indices = reference_indices(indices, fd.num_images, seed)
        real = features_of_source(space, source, indices, batch_size=fd.batch_size)
        self.reference = gaussian_stats(real)
        self.num_reference = len(indices)
        # Fakes: the reference images' label vectors, cycled to num_images, fixed latents.
        labels = source.labels[indices]
        self.labels = np.resize(labels, (fd.num_images, labels.shape[1])).astype(np.float32)
        rng = np.random.default_rng([seed, 19])
        self.z = rng.standard_normal((fd.num_images, latent_dim)).astype(np.float32)
        logging.info(
            "gan: Fréchet distance against %d real %s images, %d generated, in %d-d features",
            self.num_reference,
            fd.reference_split,
            fd.num_images,
            real.shape[1],
        )

    def distance(self, g_params: PyTree) -> float:
        """FD of the generator `g_params` against the real reference statistics."""
        batch = self.fd.batch_size
        features = []
        for start in range(0, len(self.z), batch):
            z, y = self.z[start : start + batch], self.labels[start : start + batch]
            n = len(z)
            if n < batch:  # one program for every batch
                z = np.concatenate([z, np.repeat(z[-1:], batch - n, axis=0)])
                y = np.concatenate([y, np.repeat(y[-1:], batch - n, axis=0)])
            inputs = parallel.from_full({"z": z, "y": y}, self.mesh)
            images = self._generate(g_params, inputs["z"], inputs["y"])
            features.append(self.space.of_images(parallel.gather(images)[:n]))
        fake = np.concatenate(features)
        return frechet_distance(*gaussian_stats(fake), *self.reference)

    def hook(self, state: Any, step: int) -> tuple[Any, dict[str, float]]:
        """The loop hook: evaluate, select, count patience (host-side; a few scalars move)."""
        fd = self.distance(state.g_ema)
        kimg = self.schedule.kimg_at(step)
        metrics = {"fd": fd}
        if kimg < self.fd.start_kimg:
            logging.info(
                "gan step %d (%.1f kimg): FD %.4g (selection from %g kimg)",
                step,
                kimg,
                fd,
                self.fd.start_kimg,
            )
            return state, metrics
        best = float(jax.device_get(state.best_fd))
        if fd < best:
            # A copy: the next step donates (and overwrites) the EMA parameters.
            state = state.replace(
                best_g_ema=jax.tree.map(jnp.copy, state.g_ema),
                best_fd=jnp.float32(fd),
                best_step=jnp.int32(step),
                fd_evals_since_best=jnp.int32(0),
            )
        else:
            since = int(jax.device_get(state.fd_evals_since_best)) + 1
            state = state.replace(fd_evals_since_best=jnp.int32(since))
        state = jax.device_put(state, parallel.replicated(self.mesh))
        metrics["best_fd"] = min(fd, best)
        logging.info("gan step %d (%.1f kimg): FD %.4g (best %.4g)", step, kimg, fd, min(fd, best))
        return state, metrics

    def finished(self, state: Any) -> bool:
        """Early stop: `patience` eligible evaluations in a row without a better FD."""
        if self.fd.patience <= 0:
            return False
        return int(jax.device_get(state.fd_evals_since_best)) >= self.fd.patience
