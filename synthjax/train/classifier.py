"""Classifier training (TRTR and TSTR): DenseNet, weighted BCE, early stopping on AUROC.

The study's protocol: Adam, BCE with per-class positive weights, "epochs" of ~5,000
samples, LR x0.1 after `lr_decay_patience` evaluations without a better mean validation
AUROC, early stop after `patience`. `classifier_real` trains and validates on real data
(TRTR); `classifier_synthetic` trains and validates on the synthetic dataset (TSTR). Both
are tested on the *real* test split; their test scores feed `evaluate`. The real-trained
classifier's pooled features are also the domain feature space of later metrics.
"""

from __future__ import annotations

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
from absl import logging

from synthjax.core import compiler, distributed, parallel
from synthjax.core.checkpoint import state_sha256
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.loader import ImageSource, load_source
from synthjax.data.prepared import prepared
from synthjax.eval import utility
from synthjax.models import densenet
from synthjax.models.layers import resolve_conv_lowering
from synthjax.train.loop import Hook, LoopSettings, restore_final_state, train_loop

PyTree = Any
ARCHS = {"densenet121": densenet.densenet121, "densenet_narrow": densenet.densenet_narrow}


@flax.struct.dataclass
class ClassifierState:
    """Training state plus the early-stopping record (all checkpointed together)."""

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    best_params: PyTree
    best_batch_stats: PyTree
    best_auroc: jax.Array  # float32, -1 before the first evaluation
    best_step: jax.Array
    evals_since_best: jax.Array  # evaluations without improvement (early stopping)
    evals_since_change: jax.Array  # ... since the last improvement or LR decay

    def trainable(self) -> dict[str, PyTree]:
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "best_params": self.best_params,
            "best_batch_stats": self.best_batch_stats,
        }


def build_model(cfg: ml_collections.ConfigDict, num_labels: int) -> nn.Module:
    if cfg.classifier.arch not in ARCHS:
        raise ValueError(f"classifier.arch={cfg.classifier.arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[cfg.classifier.arch](
        num_labels, conv_lowering=resolve_conv_lowering(cfg.conv_lowering)
    )


def make_optimizer(learning_rate: float) -> optax.GradientTransformation:
    # The learning rate lives in the optimizer state, so LR decay is checkpointed with it.
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def init_state(
    seed: int,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
) -> ClassifierState:
    variables = model.init(
        jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32), train=False
    )
    params, batch_stats = variables["params"], variables["batch_stats"]
    return ClassifierState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        best_params=params,
        best_batch_stats=batch_stats,
        best_auroc=jnp.full((), -1.0, jnp.float32),
        best_step=jnp.zeros((), jnp.int32),
        evals_since_best=jnp.zeros((), jnp.int32),
        evals_since_change=jnp.zeros((), jnp.int32),
    )


def positive_weights(labels: np.ndarray) -> np.ndarray:
    """float32[K]: n_negative / n_positive per label (1 where a label has no positives)."""
    pos = labels.sum(0)
    neg = len(labels) - pos
    return np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).astype(np.float32)


def train_step(
    state: ClassifierState,
    batch: dict[str, jax.Array],
    pos_weight: jax.Array,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
) -> tuple[ClassifierState, dict[str, jax.Array]]:
    """One Adam step on weighted BCE. batch: {"image": uint8[B,H,W,C], "labels": f32[B,K]}."""
    images = pipeline.images_to_float(batch["image"])
    labels = batch["labels"]

    def loss_fn(params):
        (logits, _), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        # Weighted BCE: positives of label k count pos_weight[k] times.
        log_p = jax.nn.log_sigmoid(logits)
        log_not_p = jax.nn.log_sigmoid(-logits)
        loss = -jnp.mean(pos_weight * labels * log_p + (1.0 - labels) * log_not_p)
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, {"loss": loss, "learning_rate": opt_state.hyperparams["learning_rate"]}


def predict(
    params: PyTree, batch_stats: PyTree, images: jax.Array, *, model: nn.Module
) -> tuple[jax.Array, jax.Array]:
    """uint8[B,H,W,C] -> (probabilities float32[B,K], pooled features float32[B,F])."""
    logits, features = model.apply(
        {"params": params, "batch_stats": batch_stats},
        pipeline.images_to_float(images),
        train=False,
    )
    return jax.nn.sigmoid(logits), features


def score_split(
    predict_fn: Callable,
    params: PyTree,
    batch_stats: PyTree,
    source: ImageSource,
    indices: np.ndarray,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores every kept record: (probs float32[N,K], features float32[N,F], labels f32[N,K])."""
    probs, feats, labels = [], [], []
    rows = parallel.process_rows(batch_size)  # each process reads only its rows' images
    for batch in pipeline.eval_batches(source, indices, batch_size=batch_size, rows=rows):
        mask = batch.pop("mask")
        inputs = parallel.to_global(batch, mesh)
        p, f = predict_fn(params, batch_stats, inputs["image"])
        probs.append(parallel.gather(p)[mask])
        feats.append(parallel.gather(f)[mask])
        labels.append(parallel.gather(inputs["labels"])[mask])
    return np.concatenate(probs), np.concatenate(feats), np.concatenate(labels)


class DomainFeatures:
    """The real-trained classifier's pooled features: the domain feature space in which
    generated images are compared with real ones (GAN monitoring, fidelity, memorization).

    `of_images(uint8[N, H, W, C]) -> float32[N, F]` (and `predict_images`, the
    probabilities with them: label fidelity), batched at `classifier.eval_batch_size` with
    the last batch padded so one program serves every call.
    """

    def __init__(self, run: Run):
        cfg = run.config
        run.summary("classifier_real")  # a clear error if it has not finished
        image_shape = prepared(run).source("train").image_shape
        model = build_model(cfg, len(prepared(run).label_names))
        init = functools.partial(
            init_state, cfg.seed, model, make_optimizer(cfg.classifier.learning_rate), image_shape
        )
        state = restore_final_state(
            run.stage_dir("classifier_real"), parallel.replicated_abstract(init, run.mesh)
        )
        self._variables = (state.best_params, state.best_batch_stats)
        self._predict = distributed.CompiledEverywhere(
            compiler.jit(functools.partial(predict, model=model)), "domain features"
        )
        self._batch = cfg.classifier.eval_batch_size
        self._mesh = run.mesh

    def of_images(self, images: np.ndarray) -> np.ndarray:
        return self.predict_images(images)[1]

    def predict_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8[N, H, W, C] -> (probabilities float32[N, K], features float32[N, F])."""
        probs, feats = [], []
        for start in range(0, len(images), self._batch):
            chunk = np.asarray(images[start : start + self._batch])
            n = len(chunk)
            if n < self._batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self._batch - n, axis=0)])
            x = parallel.from_full({"x": chunk}, self._mesh)["x"]
            p, features = self._predict(*self._variables, x)
            probs.append(parallel.gather(p)[:n])
            feats.append(parallel.gather(features)[:n])
        return np.concatenate(probs), np.concatenate(feats)


# --- the classifier stages ---------------------------------------------------------------


def run_stage(run: Run, kind: str) -> dict[str, Any]:
    """`kind='real'` (TRTR) or `'synthetic'` (TSTR): train, select, test on real test."""
    cfg, mesh = run.config, run.mesh
    ccfg = cfg.classifier
    stage = f"classifier_{kind}"
    data = prepared(run)
    if kind == "real":
        train_source, val_source = data.source("train"), data.source("validation")
        train_idx = data.subset.indices["train"]
        val_idx = data.subset.indices["validation"]
    else:
        train_source = load_source(run.synthetic_dir, "train")
        val_source = load_source(run.synthetic_dir, "validation")
        train_idx, val_idx = np.arange(len(train_source)), np.arange(len(val_source))
    test_source, test_idx = data.source("test"), data.subset.indices["test"]
    parallel.check_batch_size("classifier.batch_size", ccfg.batch_size, mesh)
    parallel.check_batch_size("classifier.eval_batch_size", ccfg.eval_batch_size, mesh)

    num_labels = len(data.label_names)
    image_shape = train_source.image_shape
    model = build_model(cfg, num_labels)
    optimizer = make_optimizer(ccfg.learning_rate)
    replicated = parallel.replicated(mesh)
    init = functools.partial(init_state, cfg.seed, model, optimizer, image_shape)
    create_state = compiler.jit(init, out_shardings=replicated)
    weights = (
        positive_weights(train_source.labels[train_idx])
        if ccfg.pos_weight
        else (np.ones(num_labels, np.float32))
    )
    pos_weight = jax.device_put(weights, replicated)
    jit_step = distributed.CompiledEverywhere(
        compiler.jit(
            functools.partial(train_step, model=model, optimizer=optimizer), donate_argnums=0
        ),
        f"{stage} step",
    )
    predict_fn = distributed.CompiledEverywhere(
        compiler.jit(functools.partial(predict, model=model)), f"{stage} predict"
    )
    val_labels = val_source.labels[val_idx]

    def validate(state: ClassifierState, step: int):
        probs, _, _ = score_split(
            predict_fn,
            state.params,
            state.batch_stats,
            val_source,
            val_idx,
            batch_size=ccfg.eval_batch_size,
            mesh=mesh,
        )
        per_label = utility.per_label_auroc(val_labels, probs)
        auroc = utility.mean_auroc(per_label)
        best = float(jax.device_get(state.best_auroc))
        since_best = int(jax.device_get(state.evals_since_best))
        since_change = int(jax.device_get(state.evals_since_change))
        if auroc > best:
            # Copies: the next step donates (and overwrites) params and batch_stats.
            state = state.replace(
                best_params=jax.tree.map(jnp.copy, state.params),
                best_batch_stats=jax.tree.map(jnp.copy, state.batch_stats),
                best_auroc=jnp.float32(auroc),
                best_step=jnp.int32(step),
                evals_since_best=jnp.int32(0),
                evals_since_change=jnp.int32(0),
            )
        else:
            since_best, since_change = since_best + 1, since_change + 1
            if since_change >= ccfg.lr_decay_patience:
                hyper = dict(state.opt_state.hyperparams)
                hyper["learning_rate"] = hyper["learning_rate"] * ccfg.lr_decay_factor
                state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
                since_change = 0
            state = state.replace(
                evals_since_best=jnp.int32(since_best), evals_since_change=jnp.int32(since_change)
            )
        state = jax.device_put(state, replicated)
        metrics = {"val_auroc": auroc, "best_val_auroc": max(auroc, best)}
        for name, value in zip(data.label_names, per_label, strict=True):
            if np.isfinite(value):
                metrics[f"val_auroc/{name}"] = float(value)
        logging.info(
            "%s step %d: mean validation AUROC %.4f (best %.4f)",
            stage,
            step,
            auroc,
            max(auroc, best),
        )
        return state, metrics

    result = train_loop(
        LoopSettings(
            name=stage,
            stage_dir=run.stage_dir(stage),
            total_steps=ccfg.train_steps,
            global_batch=ccfg.batch_size,
            checkpoint_every=ccfg.checkpoint_every,
            log_every=ccfg.log_every,
        ),
        mesh=mesh,
        create_state=create_state,
        step_fn=lambda state, batch, _: jit_step(state, batch, pos_weight),
        dataset=pipeline.train_dataset(
            train_source,
            train_idx,
            global_batch=ccfg.batch_size,
            seed=cfg.seed,
            hflip=cfg.dataset.hflip,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ),
        hooks=[Hook("validate", ccfg.eval_every, validate)],
        finished=lambda s: int(jax.device_get(s.evals_since_best)) >= ccfg.patience,
    )
    state = result.state
    probs, feats, labels = score_split(
        predict_fn,
        state.best_params,
        state.best_batch_stats,
        test_source,
        test_idx,
        batch_size=ccfg.eval_batch_size,
        mesh=mesh,
    )
    if run.is_host0:
        with (run.stage_dir(stage) / "test_predictions.npz").open("wb") as f:
            np.savez(f, probs=probs, labels=labels, features=feats)
    per_label = utility.per_label_auroc(labels, probs)
    return {
        "step": result.step,
        "state_sha256": state_sha256(state.trainable()),
        "early_stopped": result.stopped_early,
        "best_step": int(jax.device_get(state.best_step)),
        "best_val_auroc": float(jax.device_get(state.best_auroc)),
        "test_auroc_mean": utility.mean_auroc(per_label),
        "test_auroc": {
            n: (float(v) if np.isfinite(v) else None)
            for n, v in zip(data.label_names, per_label, strict=True)
        },
        "train_images": len(train_idx),
        "validation_images": len(val_idx),
        "test_images": len(test_idx),
        "throughput": result.throughput,
    }
