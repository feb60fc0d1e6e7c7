"""Stage `classifier_real`: the DenseNet trained on the real training images (TRTR's classifier),
early-stopped on the real validation AUROC."""

from __future__ import annotations

from typing import Any

from synthjax.core.workdir import Run
from synthjax.train import classifier


def run(run: Run) -> dict[str, Any]:
    return classifier.run_stage(run, "real")
