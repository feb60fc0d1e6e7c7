"""The discrimination test: how easily a classifier tells synthetic from real images, per
resolution (the `discrimination` entry of report.json; statistically, a classifier
two-sample test, C2ST, which is why its settings are `evaluate.c2st`).

Part of the `evaluate` stage, next to utility (TRTR / TSTR AUROC) and fidelity (Fréchet
distance). A small CNN is trained to tell real held-out images (never seen by the GAN) from
synthetic ones; its AUROC on a held-out half, with a bootstrap interval, says how easily
they are told apart: 0.5 = indistinguishable, 1.0 = trivially. The test is repeated with
both sets box-downsampled to several resolutions, so one sees at which scale the synthetic
images give themselves away (e.g. fine at 32 px, distinguishable at 256 px by texture).

Protocol: balance the two sides by seeded subsampling, split each 50/50 into train and test
halves (the same split at every resolution; with the real images' patients, at a patient
boundary so that no patient is in both halves, and the interval resamples patients), label
synthetic = 1 and real = 0, train with Adam on sigmoid cross-entropy for a fixed number of
steps on batches drawn with replacement (random horizontal flips), then score the test
halves. Runs on the default device, compiled
with `synthjax.core.compiler.jit`; the same inputs and seed give the same result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from synthjax.core import compiler
from synthjax.core.progress import Progress
from synthjax.data.input_pipeline import images_to_float
from synthjax.eval import auc

PyTree = Any

MIN_IMAGES = 4  # per side: at least two in each half
MAX_ROC_POINTS = 101
_WIDTHS = (16, 32, 64, 64)
# Streams of numpy.random.default_rng([seed, stream, ...]).
_SPLIT_STREAM, _BATCH_STREAM = 0, 1


def downsample(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8[N,H,W,C] -> uint8[N,r,r,C] by averaging (H/r)x(W/r) blocks. Identity if r == H.

    Block means are rounded to the nearest integer, halves up, in exact integer arithmetic.
    H and W must both be divisible by `resolution`.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"need uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    _, height, width, channels = images.shape
    if resolution < 1 or height % resolution or width % resolution:
        raise ValueError(
            f"cannot box-downsample {height}x{width} images to {resolution}x{resolution}: "
            "the resolution must divide both sides"
        )
    if resolution == height and resolution == width:
        return images
    kh, kw = height // resolution, width // resolution
    blocks = images.reshape(-1, resolution, kh, resolution, kw, channels)
    sums = blocks.sum(axis=(2, 4), dtype=np.int64)
    count = kh * kw
    return ((2 * sums + count) // (2 * count)).astype(np.uint8)


def resolutions_for(native: int, requested: Sequence[int] = ()) -> list[int]:
    """The resolutions to test, ascending.

    `requested` if given (each must divide `native` and be <= it; duplicates are dropped),
    else every power of two from 32 (or `native` if smaller) up to `native` that divides it,
    plus `native` itself: 256 -> [32, 64, 128, 256], 32 -> [32], 96 -> [32, 96].
    """
    if native < 1:
        raise ValueError(f"native resolution must be positive, got {native}")
    if requested:
        bad = [r for r in requested if int(r) != r or not 1 <= r <= native or native % r]
        if bad:
            raise ValueError(
                f"evaluate.c2st.resolutions={list(requested)}: {bad} do not divide the native "
                f"resolution {native}; use divisors of {native} no larger than it, or leave "
                "the list empty for the default powers of two"
            )
        return sorted({int(r) for r in requested})
    out, r = [], min(32, native)
    while r < native:
        if native % r == 0:
            out.append(r)
        r *= 2
    return [*out, native]


class DiscriminationCNN(nn.Module):
    """A small CNN: stride-2 3x3 conv blocks, global average pool, one logit (synthetic)."""

    widths: Sequence[int] = _WIDTHS

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """uint8[B, H, W, C] -> float32[B] logits; any H, W >= 1 and any C."""
        x = images_to_float(images)
        for width in self.widths:
            x = nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME")(x)
            x = nn.leaky_relu(x, negative_slope=0.2)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(1)(x)[:, 0]


_MODEL = DiscriminationCNN()
# optax.adam is scale_by_adam followed by scaling by -learning_rate; the rate is applied in
# the step instead, so one compiled step serves every rate.
_ADAM = optax.scale_by_adam()


@compiler.lazy_jit(static_argnums=1)
def _init(key: jax.Array, channels: int) -> tuple[PyTree, PyTree]:
    # The parameters do not depend on the image size: one program serves every resolution.
    params = _MODEL.init(key, jnp.zeros((1, 1, 1, channels), jnp.uint8))["params"]
    return params, _ADAM.init(params)


def _loss(params: PyTree, images: jax.Array, labels: jax.Array) -> jax.Array:
    logits = _MODEL.apply({"params": params}, images)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def _step(
    state: tuple[PyTree, PyTree], images: jax.Array, labels: jax.Array, learning_rate: jax.Array
) -> tuple[tuple[PyTree, PyTree], jax.Array]:
    params, opt_state = state
    loss, grads = jax.value_and_grad(_loss)(params, images, labels)
    updates, opt_state = _ADAM.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    return (params, opt_state), loss


_train_step = compiler.lazy_jit(_step, donate_argnums=0)
_logits = compiler.lazy_jit(lambda params, images: _MODEL.apply({"params": params}, images))


def _predict(params: PyTree, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits float64[N], in batches padded to `batch_size` so one program compiles."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        pad = batch_size - len(batch)
        if pad:
            batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
        out.append(np.asarray(_logits(params, batch))[: batch_size - pad])
    return np.concatenate(out).astype(np.float64)


def _split(
    real: np.ndarray, fake: np.ndarray, seed: int, real_patients: np.ndarray | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train real, train fake), (test real, test fake) index arrays, n = min(N, M) per side.

    With `real_patients` ([N] patient ids), the real images are taken patient by patient in
    a seeded order and the halves meet at a patient boundary, so no patient has images in
    both halves; otherwise a classifier that learns a patient's look from the train half
    recognises that patient's other images in the test half as real, and the test measures
    memorised patients instead of the synthetic images. The fake side is then split at the
    same sizes.
    """
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    n = min(len(real), len(fake))
    if real_patients is None:
        halves = []
        for size in (len(real), len(fake)):
            chosen = rng.choice(size, n, replace=False) if size > n else np.arange(n)
            chosen = rng.permutation(chosen)
            halves.append((np.sort(chosen[: n // 2]), np.sort(chosen[n // 2 :])))
        (train_real, test_real), (train_fake, test_fake) = halves
        return (train_real, train_fake), (test_real, test_fake)
    groups, inverse = np.unique(np.asarray(real_patients), return_inverse=True)
    if len(groups) < 2:
        raise ValueError(
            f"the {len(real)} real images all come from one patient; the discrimination test "
            "splits them by patient and needs two or more (give it more held-out images)"
        )
    rank = rng.permutation(len(groups))[inverse]  # each patient's place in a seeded order
    ordered = np.lexsort((rng.permutation(len(real)), rank))[:n]  # patient by patient
    starts = np.flatnonzero(np.r_[True, rank[ordered][1:] != rank[ordered][:-1]])
    cut = int(starts[np.argmin(np.abs(starts - n // 2) + (starts == 0) * n)])
    if cut == 0:
        raise ValueError(
            f"the {n} real images the discrimination test takes all come from one patient; "
            "it needs two or more so that the halves share no patient (give it more "
            "held-out images)"
        )
    fake_order = rng.permutation(len(fake))[:n]
    return (
        (np.sort(ordered[:cut]), np.sort(fake_order[:cut])),
        (np.sort(ordered[cut:]), np.sort(fake_order[cut:])),
    )


def _labelled(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([real, fake])
    labels = np.r_[np.zeros(len(real)), np.ones(len(fake))].astype(np.float32)
    return images, labels


def _check_inputs(real: np.ndarray, fake: np.ndarray) -> None:
    for name, images in (("real", real), ("fake", fake)):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"{name} images must be uint8 [N, H, W, C]; got {images.dtype} {images.shape}"
            )
        if len(images) < MIN_IMAGES:
            raise ValueError(
                f"the discrimination test needs at least {MIN_IMAGES} {name} images, got "
                f"{len(images)}; provide more held-out real and synthetic images"
            )
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real images are {real.shape[1:]} and synthetic ones {fake.shape[1:]} (H, W, C); "
            "synthesize at the resolution and channel count of the real data"
        )
    if real.shape[1] != real.shape[2]:
        raise ValueError(f"need square images, got {real.shape[1]}x{real.shape[2]}")


@dataclasses.dataclass(frozen=True)
class _Settings:
    """How each resolution's classifier is trained and scored (`discrimination_test`'s args)."""

    train_steps: int
    batch_size: int
    learning_rate: float
    seed: int
    num_resamples: int
    confidence: float
    progress_name: str


def _test_at(
    resolution: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    settings: _Settings,
    test_clusters: np.ndarray | None = None,
) -> dict[str, Any]:
    """Trains and scores one classifier on (real, fake) image pairs at `resolution`;
    `test_clusters` ([real + fake] ids, or None for images) are what the interval resamples."""
    train_steps, batch_size, seed = settings.train_steps, settings.batch_size, settings.seed
    confidence, progress_name = settings.confidence, settings.progress_name
    start = time.perf_counter()
    train_images, train_labels = _labelled(*(downsample(x, resolution) for x in train))
    test_images, test_labels = _labelled(*(downsample(x, resolution) for x in test))
    key = jax.random.fold_in(jax.random.key(seed), resolution)
    state = _init(key, train_images.shape[-1])
    rng = np.random.default_rng([seed, _BATCH_STREAM, resolution])
    lr = np.float32(settings.learning_rate)
    progress = Progress(f"{progress_name} {resolution}px", train_steps, items_per_step=batch_size)
    loss = float("nan")
    for step in range(1, train_steps + 1):
        idx = rng.integers(0, len(train_images), batch_size)
        images = train_images[idx]
        flip = rng.random(batch_size) < 0.5
        images[flip] = images[flip, :, ::-1]
        state, loss_array = _train_step(state, images, train_labels[idx], lr)
        loss = float(loss_array)
        progress.update(step, loss=loss)
    scores = _predict(state[0], test_images, batch_size)
    boot = auc.bootstrap_auroc(
        test_labels[:, None],
        scores[:, None],
        num_resamples=settings.num_resamples,
        seed=seed,
        confidence=confidence,
        clusters=test_clusters,
    )
    result = {
        "resolution": resolution,
        "auroc": boot["per_label"][0],
        "auroc_ci": boot["per_label_ci"][0],
        "accuracy": float(np.mean((scores > 0) == (test_labels == 1))),
        "train_real": len(train[0]),
        "train_fake": len(train[1]),
        "test_real": len(test[0]),
        "test_fake": len(test[1]),
        "train_steps": train_steps,
        "final_train_loss": loss,
        "wall_s": time.perf_counter() - start,
        "roc": auc.roc_curve(test_labels, scores, MAX_ROC_POINTS),
    }
    low, high = result["auroc_ci"]
    logging.info(
        "%s %dpx: AUROC %.3f [%.3f, %.3f] (%.0f%% CI), accuracy %.3f, final loss %.3f",
        progress_name,
        resolution,
        result["auroc"],
        low,
        high,
        100 * confidence,
        result["accuracy"],
        loss,
    )
    return result


def discrimination_test(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    resolutions: Sequence[int],
    train_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    num_resamples: int,
    confidence: float,
    progress_name: str = "evaluate[c2st]",
    real_patients: Sequence[Any] | None = None,
    interval_level: str = "patient",
) -> dict[str, Any]:
    """The discrimination test of real vs synthetic images at each resolution.

    Args:
      real: uint8[N, H, W, C] real held-out images (never seen by the GAN), H == W.
      fake: uint8[M, H, W, C] synthetic images.
      resolutions: resolutions to test (see `resolutions_for`; empty = the default ladder).
      train_steps: Adam steps per resolution.
      batch_size: images per step (drawn with replacement) and per scoring batch.
      learning_rate: Adam learning rate.
      seed: seed of the subsampling, split, batches and initialisation.
      num_resamples: bootstrap resamples of the AUROC interval.
      confidence: coverage of the interval.
      progress_name: prefix of the progress and result log lines.
      real_patients: [N] patient id of each real image, or None if unknown. When given,
        the halves share no patient (see `_split`).
      interval_level: with `real_patients`, "patient" resamples the test half's real
        patients (each synthetic image its own cluster) for the interval; "image" resamples
        images.

    Returns:
      A JSON-serialisable dict {"per_resolution": [...], "protocol": str, "seed": int};
      each per-resolution entry has "resolution", "auroc", "auroc_ci", "accuracy" (logit
      threshold 0, i.e. probability 0.5), the four half sizes, "train_steps",
      "final_train_loss", "wall_s" and "roc" {"fpr", "tpr"}. Synthetic is the positive class.
      "split" is "patient" (the halves share no patient) or "image"; "interval_level" what
      the intervals resample, "test_real_patients" the test half's real patients (None
      when unknown).
    """
    real, fake = np.asarray(real), np.asarray(fake)
    _check_inputs(real, fake)
    if train_steps < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            f"need train_steps >= 1, batch_size >= 1 and learning_rate > 0; got {train_steps}, "
            f"{batch_size}, {learning_rate}"
        )
    chosen = resolutions_for(real.shape[1], resolutions)
    patients = None if real_patients is None else np.asarray(real_patients)
    if patients is not None and len(patients) != len(real):
        raise ValueError(f"{len(patients)} patient ids for {len(real)} real images")
    if interval_level not in ("patient", "image"):
        raise ValueError(f"interval_level must be 'patient' or 'image', got {interval_level!r}")
    (train_real, train_fake), (test_real, test_fake) = _split(real, fake, seed, patients)
    train = (real[train_real], fake[train_fake])
    test = (real[test_real], fake[test_fake])
    clusters = None
    if patients is not None and interval_level == "patient":
        # Real images cluster by patient; every synthetic image is a draw of its own.
        _, real_ids = np.unique(patients[test_real], return_inverse=True)
        clusters = np.r_[real_ids, real_ids.max() + 1 + np.arange(len(test_fake))]
    settings = _Settings(
        train_steps, batch_size, learning_rate, seed, num_resamples, confidence, progress_name
    )
    per_resolution = [_test_at(r, train, test, settings, clusters) for r in chosen]
    n = len(train_real) + len(test_real)
    split = "image" if patients is None else "patient"
    halves = (
        "50/50 into train and test halves"
        if split == "image"
        else ("into train and test halves at a patient boundary (no patient in both)")
    )
    resampled = (
        "the test half's images"
        if clusters is None
        else ("the test half's real patients and synthetic images")
    )
    protocol = (
        f"{n} real and {n} synthetic images (seeded subsampling of the larger side), each split "
        f"{halves}, shared by all resolutions; at each box-downsampled "
        f"resolution a {len(_WIDTHS)}-block CNN is trained for {train_steps} Adam steps "
        f"(learning rate {learning_rate:g}, batches of {batch_size} drawn with replacement, "
        f"random horizontal flips) to tell synthetic (1) from real (0), and its test-half "
        f"AUROC gets a {confidence:.0%} percentile bootstrap interval over {num_resamples} "
        f"resamples of {resampled}."
    )
    return {
        "per_resolution": per_resolution,
        "protocol": protocol,
        "seed": seed,
        "split": split,
        "interval_level": "image" if clusters is None else "patient",
        "test_real_patients": None if patients is None else len(np.unique(patients[test_real])),
    }
