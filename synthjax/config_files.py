"""Config files by path, as `synthjax.main --config=configs/x.py:arg` reads them, for the
scripts around the job (launchers, sweeps, benchmarks)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import ml_collections


def load_module(path: str | os.PathLike) -> ModuleType:
    """The config file as a module. When it sits in a `configs/` package, the package's
    parent goes on the import path first (config files import each other)."""
    path = Path(path).resolve()
    if (path.parent / "__init__.py").exists() and str(path.parents[1]) not in sys.path:
        sys.path.insert(0, str(path.parents[1]))
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split(config: str) -> tuple[str, str | None]:
    """'configs/x.py:smoke' -> ('configs/x.py', 'smoke'); no argument gives None."""
    file, _, arg = config.partition(":")
    return file, (arg or None)


def load(config: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of 'path/to/config.py[:arg]'."""
    file, arg = split(config)
    return load_module(file).get_config(arg)
