"""The `evaluate` stage: utility of the synthetic data on the real test split.

Reads the test scores both classifier stages saved (TRTR: trained on real; TSTR: trained
on synthetic; both scored on the same real test images) and computes per-label ROC-AUC,
mean AUROC, 95% bootstrap intervals and the paired TRTR - TSTR gap. AUCs below 0.5 are
reported as they are. The headline mean covers labels with at least
`evaluate.min_positives` positive and negative test images; the others are listed, not
hidden.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from synthjax.eval import utility
from synthjax.workdir import Run


def load_predictions(run: Run, stage: str) -> dict[str, np.ndarray]:
    with (run.stage_dir(stage) / "test_predictions.npz").open("rb") as f:
        z = np.load(f)
        return {k: z[k] for k in z.files}


def evaluated_labels(labels: np.ndarray, min_positives: int) -> np.ndarray:
    """bool[K]: labels with enough positive and negative test images for a stable AUROC."""
    pos = labels.sum(0)
    neg = len(labels) - pos
    return (pos >= max(1, min_positives)) & (neg >= max(1, min_positives))


def run_stage(run: Run) -> dict[str, Any]:
    ecfg = run.config.evaluate
    names = run.prepared.label_names
    real = load_predictions(run, "classifier_real")
    synth = load_predictions(run, "classifier_synthetic")
    if not np.array_equal(real["labels"], synth["labels"]):
        raise RuntimeError("TRTR and TSTR were not scored on the same real test images")
    labels = real["labels"]
    keep = evaluated_labels(labels, ecfg.min_positives)
    if not keep.any():
        raise RuntimeError(
            f"no label has {ecfg.min_positives} positive and negative test images; lower "
            "evaluate.min_positives or use a larger dataset"
        )
    opts = dict(
        num_resamples=ecfg.bootstrap_resamples, seed=run.config.seed, confidence=ecfg.confidence
    )
    trtr = utility.bootstrap_auroc(labels[:, keep], real["probs"][:, keep], **opts)
    tstr = utility.bootstrap_auroc(labels[:, keep], synth["probs"][:, keep], **opts)
    gap = utility.bootstrap_auroc_gap(
        labels[:, keep], real["probs"][:, keep], synth["probs"][:, keep], **opts
    )
    kept_names = [n for n, k in zip(names, keep, strict=True) if k]
    per_label = []
    for i, name in enumerate(kept_names):
        per_label.append(
            {
                "label": name,
                "positives": int(labels[:, names.index(name)].sum()),
                "trtr_auroc": trtr["per_label"][i],
                "trtr_ci": trtr["per_label_ci"][i],
                "tstr_auroc": tstr["per_label"][i],
                "tstr_ci": tstr["per_label_ci"][i],
                "gap": gap["per_label_gap"][i],
                "gap_ci": gap["per_label_gap_ci"][i],
            }
        )
    result = {
        "step": 0,
        "test_images": len(labels),
        "labels_evaluated": kept_names,
        "labels_excluded": {n: int(labels[:, i].sum()) for i, n in enumerate(names) if not keep[i]},
        "min_positives": ecfg.min_positives,
        "trtr_auroc_mean": trtr["mean"],
        "trtr_auroc_mean_ci": trtr["mean_ci"],
        "tstr_auroc_mean": tstr["mean"],
        "tstr_auroc_mean_ci": tstr["mean_ci"],
        "auroc_gap": gap["mean_gap"],
        "auroc_gap_ci": gap["mean_gap_ci"],
        "per_label": per_label,
        "bootstrap": {k: opts[k] for k in ("num_resamples", "seed", "confidence")},
    }
    result["state_sha256"] = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
    return result
