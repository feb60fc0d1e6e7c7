"""The pipeline's stages, in the order a run takes them.

Each stage is a module here with one function, `run(run: Run) -> dict`, which does the
stage's work in the workdir and returns its summary (`DIR/<stage>/summary.json`). A stage
module reads the workdir and orchestrates (checkpoints, the loop, grids, the summary); the
science it runs lives in the library packages:

| stage | library |
|---|---|
| `prepare` | `synthjax.data` (builders, shards, subsets, phantoms) |
| `classifier_real`, `classifier_synthetic` | `synthjax.train.classifier`, `synthjax.train.loop` |
| `gan` | `synthjax.train` (`gan`, `gan_losses`, `gan_models`, `selection`), `synthjax.models` |
| `synthesize` | `synthjax.synthesize`, `synthjax.eval.privacy` |
| `evaluate` | `synthjax.eval` (`auc`, `utility`, `fidelity`, `discrimination`, ...) |
| `report` | `synthjax.report`, `synthjax.report_figures` |

This module imports nothing heavy, so configs and launchers can read `ORDER` without
loading JAX; `stage_fn` imports a stage's module (and its library) only when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ORDER = (
    "prepare",
    "classifier_real",
    "gan",
    "synthesize",
    "classifier_synthetic",
    "evaluate",
    "report",
)


def stage_fn(name: str) -> Callable[[Any], dict[str, Any]]:
    """The `run` function of stage `name` (one of `ORDER`)."""
    if name not in ORDER:
        raise KeyError(f"unknown stage {name!r}; the stages are {ORDER}")
    return importlib.import_module(f"{__name__}.{name}").run
