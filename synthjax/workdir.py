"""The workdir contract: where each stage keeps its outputs, and how stages find them.

```
DIR/config.json                 resolved config
DIR/<stage>/checkpoints/        orbax (state + data iterator), async, atomic
DIR/<stage>/metrics.jsonl       one JSON object per line: {"step", "stage", <metrics>}
DIR/<stage>/summary.json        {"stage", "step", "wall_s", "state_sha256", ...} when finished
DIR/gan/samples/step_<N>.png    conditional sample grids (rows = label combinations)
DIR/synthetic/                  the shareable dataset (same shard format) + DATASET_CARD.json
DIR/report.json, DIR/report.md  headline numbers
```
A stage is finished exactly when its `summary.json` exists; it is written last, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cached_property
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from synthjax.data.loader import ImageSource, load_source
from synthjax.data.subsets import Subset

SPLITS = ("train", "validation", "test")


def write_json_atomic(path: epath.Path, obj: Any) -> None:
    """Writes JSON through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, epath.PathLike | os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON-serialisable: {type(x)}")


def read_json(path: epath.Path) -> Any:
    return json.loads(path.read_text())


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The prepared real dataset and the benchmark subset every stage trains and tests on."""

    dataset_dir: epath.Path
    subset: Subset
    label_names: tuple[str, ...]

    _sources: dict[str, ImageSource] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def source(self, split: str) -> ImageSource:
        """The split's source, opened once (its label cache is then shared)."""
        if split not in self._sources:
            self._sources[split] = load_source(self.dataset_dir, split)
        return self._sources[split]


@dataclasses.dataclass
class Run:
    """One pipeline run: its config, workdir and device mesh."""

    config: ml_collections.ConfigDict
    workdir: epath.Path
    mesh: Mesh

    @property
    def is_host0(self) -> bool:
        return jax.process_index() == 0

    def stage_dir(self, stage: str) -> epath.Path:
        return self.workdir / stage

    def summary_path(self, stage: str) -> epath.Path:
        return self.stage_dir(stage) / "summary.json"

    def finished(self, stage: str) -> bool:
        return self.summary_path(stage).exists()

    def summary(self, stage: str) -> dict[str, Any]:
        path = self.summary_path(stage)
        if not path.exists():
            raise FileNotFoundError(
                f"stage {stage!r} has not finished in {self.workdir} (no {path.name}); "
                f"include it in `stages` or run it first"
            )
        return read_json(path)

    @property
    def synthetic_dir(self) -> epath.Path:
        return self.workdir / "synthetic"

    @cached_property
    def prepared(self) -> PreparedData:
        """The `prepare` stage's outputs (dataset directory, subset indices)."""
        summary = self.summary("prepare")
        with (self.stage_dir("prepare") / "subset.npz").open("rb") as f:
            z = np.load(f)
            subset = Subset(
                combos=z["combos"],
                indices={s: z[f"indices_{s}"] for s in SPLITS if f"indices_{s}" in z},
            )
        return PreparedData(
            epath.Path(summary["dataset_dir"]), subset, tuple(summary["label_names"])
        )
