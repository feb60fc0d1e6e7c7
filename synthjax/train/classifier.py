"""Classifier training (TRTR and TSTR): DenseNet, weighted BCE, early stopping on AUROC.

The study's protocol: Adam, BCE with per-class positive weights, "epochs" of ~5,000
samples, LR x0.1 after `lr_decay_patience` evaluations without a better mean validation
AUROC, early stop after `patience`. `classifier_real` trains and validates on real data
(TRTR); `classifier_synthetic` trains and validates on the synthetic dataset (TSTR). Both
are tested on the *real* test split; their test scores feed `evaluate`. The real-trained
classifier's pooled features are also the domain feature space of later metrics.

What the network sees is `classifier.protocol` (`train/classifier_inputs.py`), applied in
the train step and in `predict`, which every other use of the classifier goes through; under
the study's protocol the network may start from a weights file (`classifier.weights`,
`models/densenet_weights.py`).
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

from synthjax.core import compiler, parallel
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.loader import ImageSource
from synthjax.data.prepared import prepared
from synthjax.models import densenet, densenet_weights
from synthjax.models.layers import resolve_conv_lowering
from synthjax.train.classifier_inputs import (
    DEFAULT_INPUTS,
    InputSpec,
    classifier_inputs,
    model_input_shape,
)
from synthjax.train.loop import restore_final_state
from synthjax.train.selection import BestSoFar

PyTree = Any
ARCHS = {"densenet121": densenet.densenet121, "densenet_narrow": densenet.densenet_narrow}


@flax.struct.dataclass
class ClassifierState:
    """Training state plus the early-stopping record (all checkpointed together).

    best: the variables ({"params", "batch_stats"}) of the best mean validation AUROC so far
    (score "auroc", -1 before the first validation; step 0 until then) and the validations
    since it (early stopping). evals_since_change: validations since the last improvement
    or LR decay (`lr_decay_patience`).
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    best: BestSoFar
    evals_since_change: jax.Array

    def fingerprinted(self) -> dict[str, PyTree]:
        """What the stage's `state_sha256` covers: all but the selection's bookkeeping, named
        as in the flat layout."""
        keep = ("step", "params", "batch_stats", "opt_state", "best_params", "best_batch_stats")
        return {k: v for k, v in self.flat_layout().items() if k in keep}

    def flat_layout(self) -> dict[str, PyTree]:
        """The state as the flat layout named it (checkpoints written before the nesting
        hold this tree; `train.loop` restores them through it)."""
        return {
            **{k: getattr(self, k) for k in ("step", "params", "batch_stats", "opt_state")},
            **{f"best_{k}": v for k, v in self.best.params.items()},  # params, batch_stats
            **self.best.flat_layout(evals_since="evals_since_best"),
            "evals_since_change": self.evals_since_change,
        }

    @classmethod
    def from_flat_layout(cls, flat: dict[str, PyTree]) -> ClassifierState:
        variables = {"params": flat["best_params"], "batch_stats": flat["best_batch_stats"]}
        best = BestSoFar.from_flat_layout(flat, variables, ("auroc",), "evals_since_best")
        return cls(
            step=flat["step"],
            params=flat["params"],
            batch_stats=flat["batch_stats"],
            opt_state=flat["opt_state"],
            best=best,
            evals_since_change=flat["evals_since_change"],
        )


def build_model(cfg: ml_collections.ConfigDict, num_labels: int) -> nn.Module:
    return ARCHS[cfg.classifier.arch](
        num_labels, conv_lowering=resolve_conv_lowering(cfg.conv_lowering)
    )


def make_optimizer(learning_rate: float) -> optax.GradientTransformation:
    # The learning rate lives in the optimizer state, so LR decay is checkpointed with it.
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def pretrained_variables(
    cfg: ml_collections.ConfigDict, model: nn.Module
) -> dict[str, PyTree] | None:
    """The variables `classifier.weights` gives (all but the head), or None without a file
    (the network then starts from its random initialisation; logged as such)."""
    ccfg = cfg.classifier
    if not ccfg.weights:
        if ccfg.protocol == "study":
            logging.warning(
                "classifier.protocol=study without classifier.weights: the DenseNet starts "
                "from RANDOM weights, not ImageNet's as in the study; its TRTR/TSTR numbers "
                "are not the study's protocol. Convert torchvision's densenet121 with "
                "%s and pass it as classifier.weights.",
                densenet_weights.CONVERT_SCRIPT,
            )
        return None
    variables = densenet_weights.load_pretrained(ccfg.weights, model)
    logging.info("classifier: stem and blocks from %s; the head is new", ccfg.weights)
    return variables


def init_state(
    seed: int,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    pretrained: dict[str, PyTree] | None = None,
    *,
    inputs: InputSpec = DEFAULT_INPUTS,
) -> ClassifierState:
    """The state at step 0. image_shape: the stored images' (H, W, C); the network is built
    for `model_input_shape(inputs, image_shape)`. pretrained: variables that replace the
    initialisation of the modules they hold (`pretrained_variables`)."""
    input_shape = model_input_shape(inputs, image_shape)
    variables = model.init(
        jax.random.key(seed), jnp.zeros((1, *input_shape), jnp.float32), train=False
    )
    variables = densenet_weights.with_pretrained(variables, pretrained)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return ClassifierState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        best=BestSoFar.start(variables, {"auroc": -1.0}, step=0),
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
    inputs: InputSpec = DEFAULT_INPUTS,
    seed: int = 0,
) -> tuple[ClassifierState, dict[str, jax.Array]]:
    """One Adam step on weighted BCE. batch: {"image": uint8[B,H,W,C], "labels": f32[B,K]}.

    The images go through `classifier_inputs`; with `inputs.augment` the step's augmentation
    draws from fold_in(key(seed), step), so a resumed run draws the same."""
    key = jax.random.fold_in(jax.random.key(seed), state.step) if inputs.augment else None
    images = classifier_inputs(batch["image"], inputs, key)
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


def after_validation(
    state: ClassifierState,
    auroc: float,
    step: int,
    *,
    lr_decay_patience: int,
    lr_decay_factor: float,
) -> ClassifierState:
    """The state after a validation at `step` scored mean AUROC `auroc`: the best model so
    far kept, or one more validation without a better one counted, and the learning rate
    times `lr_decay_factor` after `lr_decay_patience` of them (host-side; scalars move)."""
    improved = auroc > state.best.score("auroc")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    best = state.best.after_evaluation(improved, variables, {"auroc": auroc}, step)
    opt_state, since_change = state.opt_state, 0
    if not improved:
        since_change = int(jax.device_get(state.evals_since_change)) + 1
        if since_change >= lr_decay_patience:
            hyper = dict(opt_state.hyperparams)
            hyper["learning_rate"] = hyper["learning_rate"] * lr_decay_factor
            opt_state = opt_state._replace(hyperparams=hyper)
            since_change = 0
    return state.replace(best=best, opt_state=opt_state, evals_since_change=jnp.int32(since_change))


def predict(
    params: PyTree,
    batch_stats: PyTree,
    images: jax.Array,
    *,
    model: nn.Module,
    inputs: InputSpec = DEFAULT_INPUTS,
) -> tuple[jax.Array, jax.Array]:
    """uint8[B,H,W,C] -> (probabilities float32[B,K], pooled features float32[B,F]), the
    images through `classifier_inputs` (never augmented)."""
    logits, features = model.apply(
        {"params": params, "batch_stats": batch_stats},
        classifier_inputs(images, inputs),
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
        inputs = InputSpec.from_config(cfg.classifier)
        init = functools.partial(
            init_state,
            cfg.seed,
            model,
            make_optimizer(cfg.classifier.learning_rate),
            image_shape,
            inputs=inputs,
        )
        state = restore_final_state(
            run.stage_dir("classifier_real"), parallel.replicated_abstract(init, run.mesh)
        )
        self._variables = (state.best.params["params"], state.best.params["batch_stats"])
        self._predict = compiler.jit_everywhere(
            functools.partial(predict, model=model, inputs=inputs), "domain features"
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
