"""What the `prepare` stage left for the others: the prepared dataset and the subset.

`prepared(run)` opens it once per run (from `DIR/prepare/summary.json` and `subset.npz`)
and keeps it on the run, so every stage shares one source per split and its label cache.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath

from synthjax.core.workdir import SPLITS, Run
from synthjax.data.loader import ImageSource, load_source
from synthjax.data.subsets import Subset

_ATTRIBUTE = "_prepared_data"


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


def prepared(run: Run) -> PreparedData:
    """The `prepare` stage's outputs of this run (dataset directory, subset indices)."""
    data = run.__dict__.get(_ATTRIBUTE)
    if data is None:
        data = run.__dict__[_ATTRIBUTE] = _open(run)
    return data


def _open(run: Run) -> PreparedData:
    summary = run.summary("prepare")
    with (run.stage_dir("prepare") / "subset.npz").open("rb") as f:
        z = np.load(f)
        subset = Subset(
            combos=z["combos"],
            indices={s: z[f"indices_{s}"] for s in SPLITS if f"indices_{s}" in z},
        )
    return PreparedData(epath.Path(summary["dataset_dir"]), subset, tuple(summary["label_names"]))
