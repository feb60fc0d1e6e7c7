"""Stage `classifier_synthetic`: the DenseNet trained on the synthetic dataset (TSTR's
classifier), early-stopped on the synthetic validation AUROC, tested on the real test split
(`classifier_real.train_and_test`, the same training as TRTR's)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthjax.core.workdir import Run
from synthjax.data.loader import load_source
from synthjax.stages.classifier_real import train_and_test


def run(run: Run) -> dict[str, Any]:
    train, validation = (load_source(run.synthetic_dir, s) for s in ("train", "validation"))
    return train_and_test(
        run,
        "classifier_synthetic",
        train=(train, np.arange(len(train))),
        validation=(validation, np.arange(len(validation))),
    )
