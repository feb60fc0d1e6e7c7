"""The datasets `prepare` reads, by `dataset.name`: one line each, naming its modules.

A dataset is one module (the builder's) and one line here. The module declares:

    BUILDER      its `builder.SourceBuilder` subclass
    DOWNLOAD     where people get the data (the public source), for messages
    MANUAL_DIR   what `dataset.manual_dir` must point at
    PREPARE      (manual_dir, data_dir, *, resolution, base_resolution, drop_no_positive,
                 workers, **SETTINGS) -> (dataset_dir, report), building once and reusing
    SETTINGS     PREPARE's other keyword arguments -> their place in `config.dataset`
    ATTRIBUTION  optional: the credit its terms ask for wherever images are shown

A dataset with a built-in phantom also names the phantom's writer module, which declares
`FOLDER` (its folder name in the workdir), `SETTINGS` (the writer's arguments beyond the
common ones, as `SETTINGS` above, in `config.dataset.phantom`) and
`write_phantom(root, settings, *, workers) -> stats`.

Nothing here imports the modules it names (they load TFDS): configs and launchers read
`DATASETS` and `PHANTOM_DATASETS` without JAX or TFDS, and `Dataset.module()` imports a
dataset's code only when it runs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from types import ModuleType
from typing import Any

# Every phantom writer's settings, from `config.dataset.phantom` under the same names.
PHANTOM_SETTINGS = ("num_patients", "image_size", "noise", "subtlety", "seed")


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

    def phantom_settings(self, dataset: Any) -> dict[str, Any]:
        """The phantom writer's settings in `config.dataset.phantom`: all its files depend on."""
        extra = settings_at(dataset.phantom, self.phantom_module().SETTINGS)
        return {name: getattr(dataset.phantom, name) for name in PHANTOM_SETTINGS} | extra

    def prepare(self, manual_dir, data_dir, dataset: Any) -> tuple[Any, dict]:
        """The module's `PREPARE` with the settings of `config.dataset`: (dataset_dir, report)."""
        module = self.module()
        return module.PREPARE(
            manual_dir,
            data_dir,
            resolution=dataset.resolution,
            base_resolution=dataset.base_resolution,
            drop_no_positive=dataset.drop_no_positive,
            workers=dataset.prepare_workers,
            **settings_at(dataset, module.SETTINGS),
        )


def settings_at(config: Any, places: dict[str, str | tuple[str, ...]]) -> dict[str, Any]:
    """{name: the value at the dotted place in `config`}, e.g. {"windows": "ct.windows"}.

    A tuple of places gives the tuple of their values.
    """

    def at(place: str) -> Any:
        return functools.reduce(getattr, place.split("."), config)

    return {
        name: tuple(map(at, place)) if isinstance(place, tuple) else at(place)
        for name, place in places.items()
    }


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
