"""The datasets `prepare` reads, by `dataset.name`: one line each, naming its modules.

A dataset is one module (the builder's) and one line here. The module declares:

    BUILDER              its `builder.SourceBuilder` subclass
    DOWNLOAD             where people get the data (the public source), for messages
    MANUAL_DIR           what `dataset.manual_dir` must point at
    prepare_from_config  (manual_dir, data_dir, config.dataset) -> (dataset_dir, report)
    ATTRIBUTION          optional: the credit its terms ask for wherever images are shown

A dataset with a built-in phantom also names the phantom's writer module, which declares
`FOLDER` (its folder name in the workdir), `settings_from_config(config.dataset)` and
`write_phantom(root, **settings) -> stats`.

Nothing here imports the modules it names (they load TFDS): configs and launchers read
`DATASETS` and `PHANTOM_DATASETS` without JAX or TFDS, and `Dataset.module()` imports a
dataset's code only when it runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset: its name (`dataset.name`) and its modules, by import path."""

    name: str
    builder: str  # the dataset's module (see the module docstring)
    phantom: str | None = None  # its built-in phantom's writer module, if it has one

    def module(self) -> ModuleType:
        return importlib.import_module(self.builder)

    def phantom_module(self) -> ModuleType:
        if self.phantom is None:
            raise KeyError(f"{self.name!r} has no built-in phantom")
        return importlib.import_module(self.phantom)


REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("chexpert", "synthjax.data.chexpert", "synthjax.data.phantoms.cxr.writer"),
        Dataset("nih_cxr14", "synthjax.data.nih_cxr14"),
        Dataset("rsna_ich", "synthjax.data.rsna_ich", "synthjax.data.phantoms.ct.writer"),
        Dataset("folder", "synthjax.data.folder"),
    )
}
DATASETS = tuple(REGISTRY)
PHANTOM_DATASETS = tuple(name for name, d in REGISTRY.items() if d.phantom)
