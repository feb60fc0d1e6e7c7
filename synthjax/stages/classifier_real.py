"""Stage `classifier_real`: the DenseNet trained on the real training images (TRTR's
classifier), early-stopped on the real validation AUROC, tested on the real test split.

`train_and_test` is both classifier stages' work (`classifier_synthetic` trains the same
way on the synthetic dataset): the training loop (`train.loop`) around the classifier's
step (`train.classifier`), a validation hook that keeps the best model and decays the
learning rate, then the test predictions (`test_predictions.npz`, read by `evaluate`) and
the summary.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from synthjax.core import compiler, parallel
from synthjax.core.checkpoint import state_sha256
from synthjax.core.workdir import Run
from synthjax.data import input_pipeline as pipeline
from synthjax.data.loader import ImageSource
from synthjax.data.prepared import prepared
from synthjax.eval import auc
from synthjax.train import classifier
from synthjax.train.classifier_inputs import InputSpec
from synthjax.train.loop import Hook, LoopSettings, train_loop

Split = tuple[ImageSource, np.ndarray]  # a source and the indices of its records in use


def run(run: Run) -> dict[str, Any]:
    data = prepared(run)
    train, validation = ((data.source(s), data.subset.indices[s]) for s in ("train", "validation"))
    return train_and_test(run, "classifier_real", train=train, validation=validation)


def train_and_test(run: Run, stage: str, *, train: Split, validation: Split) -> dict[str, Any]:
    """Trains the classifier on `train`, selects it on `validation`, tests the selected one
    on the real test split; returns the summary of `stage`."""
    cfg, mesh = run.config, run.mesh
    ccfg = cfg.classifier
    data = prepared(run)
    (train_source, train_idx), (val_source, val_idx) = train, validation
    test_source, test_idx = data.source("test"), data.subset.indices["test"]

    num_labels = len(data.label_names)
    model = classifier.build_model(cfg, num_labels)
    optimizer = classifier.make_optimizer(ccfg.learning_rate)
    replicated = parallel.replicated(mesh)
    inputs = InputSpec.from_config(ccfg)
    init = functools.partial(
        classifier.init_state, cfg.seed, model, optimizer, train_source.image_shape, inputs=inputs
    )
    pretrained = classifier.pretrained_variables(cfg, model)  # None: random initialisation
    create_state = compiler.jit(init, out_shardings=replicated)
    if pretrained is not None:
        # The weights go in as an argument (closed over, they would be a constant of the
        # program: 30 MB of HLO); plain jit, since the loop also traces this inside
        # eval_shape, where a nested jit may not carry compiler options.
        init_from = jax.jit(init, out_shardings=replicated)
        create_state = lambda: init_from(pretrained)
    weights = (
        classifier.positive_weights(train_source.labels[train_idx])
        if ccfg.pos_weight
        else (np.ones(num_labels, np.float32))
    )
    pos_weight = jax.device_put(weights, replicated)
    jit_step = compiler.jit_everywhere(
        functools.partial(
            classifier.train_step, model=model, optimizer=optimizer, inputs=inputs, seed=cfg.seed
        ),
        f"{stage} step",
        donate_argnums=0,
    )
    predict_fn = compiler.jit_everywhere(
        functools.partial(classifier.predict, model=model, inputs=inputs), f"{stage} predict"
    )
    score = functools.partial(
        classifier.score_split, predict_fn, batch_size=ccfg.eval_batch_size, mesh=mesh
    )
    val_labels = val_source.labels[val_idx]

    def validate(state: classifier.ClassifierState, step: int):
        probs, _, _ = score(state.params, state.batch_stats, val_source, val_idx)
        per_label = auc.per_label_auroc(val_labels, probs)
        auroc = auc.mean_auroc(per_label)
        best = max(auroc, state.best.score("auroc"))
        state = classifier.after_validation(
            state,
            auroc,
            step,
            lr_decay_patience=ccfg.lr_decay_patience,
            lr_decay_factor=ccfg.lr_decay_factor,
        )
        state = jax.device_put(state, replicated)
        metrics = {"val_auroc": auroc, "best_val_auroc": best}
        for name, value in zip(data.label_names, per_label, strict=True):
            if np.isfinite(value):
                metrics[f"val_auroc/{name}"] = float(value)
        logging.info("%s step %d: mean validation AUROC %.4f (best %.4f)", stage, step, auroc, best)
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
        finished=lambda s: s.best.patience_exhausted(ccfg.patience),
    )
    state = result.state
    best = state.best.params
    probs, feats, labels = score(best["params"], best["batch_stats"], test_source, test_idx)
    if run.is_host0:
        with (run.stage_dir(stage) / "test_predictions.npz").open("wb") as f:
            np.savez(f, probs=probs, labels=labels, features=feats)
    per_label = auc.per_label_auroc(labels, probs)
    return {
        "step": result.step,
        "state_sha256": state_sha256(state.fingerprinted()),
        "early_stopped": result.stopped_early,
        "best_step": state.best.selected_step(),
        "best_val_auroc": state.best.score("auroc"),
        "test_auroc_mean": auc.mean_auroc(per_label),
        "test_auroc": {
            n: (float(v) if np.isfinite(v) else None)
            for n, v in zip(data.label_names, per_label, strict=True)
        },
        "train_images": len(train_idx),
        "validation_images": len(val_idx),
        "test_images": len(test_idx),
        "throughput": result.throughput,
        "protocol": protocol_record(ccfg),
    }


def protocol_record(ccfg: Any) -> dict[str, Any]:
    """What the network saw and where it started (summary.json `protocol`): the input
    protocol, its resolution (None under 'synthjax': the stored one), augmentation, and
    the weights file's name and sha256 (None: random initialisation)."""
    study = ccfg.protocol == "study"
    weights = None
    if ccfg.weights:
        digest = hashlib.sha256(Path(ccfg.weights).read_bytes()).hexdigest()
        weights = {"file": Path(ccfg.weights).name, "sha256": digest}
    return {
        "name": ccfg.protocol,
        "input_resolution": ccfg.input_resolution if study else None,
        "augment": bool(ccfg.augment),
        "initial_weights": weights,
    }
