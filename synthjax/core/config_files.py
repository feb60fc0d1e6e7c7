"""Config files by path, as `synthjax.main --config=configs/x.py:arg` reads them, for the
scripts around the job (launchers, sweeps, benchmarks), and the argument after the colon
as the config files read it (`parse_arg`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import ml_collections

# The checkout this package runs from (an editable install or a source tree): its
# `configs/` folder is found from any working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def find(file: str | os.PathLike) -> str:
    """The config file `file` names: as given (relative to the working directory), else
    relative to the synthjax checkout, so `--config=configs/cxr_256.py` works from any
    folder. A name found in neither place is returned unchanged (its loader says so)."""
    if Path(file).exists() or Path(file).is_absolute():
        return os.fspath(file)
    candidate = PROJECT_ROOT / file
    return os.fspath(candidate) if candidate.is_file() else os.fspath(file)


def make_importable(path: str | os.PathLike) -> None:
    """Puts the folder holding the config file's top package (`configs/`, also for
    `configs/sweeps/x.py`) on the import path, so config files import each other
    (`from configs import default`) wherever the job is started from."""
    folder = Path(path).resolve().parent
    if not (folder / "__init__.py").exists():
        return
    while (folder.parent / "__init__.py").exists():
        folder = folder.parent
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))


def load_module(path: str | os.PathLike) -> ModuleType:
    """The config file as a module (its package made importable first)."""
    path = Path(find(path)).resolve()
    make_importable(path)
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


def set_field(config: ml_collections.ConfigDict, field: str, value: object) -> None:
    """config[`a.b.c`] = value, as `--config.a.b.c=value` sets it."""
    *sections, name = field.split(".")
    for section in sections:
        config = config[section]
    config[name] = value


def parse_arg(arg: str | None, **defaults: bool | int | float | str) -> ml_collections.ConfigDict:
    """A config file's argument, big_vision's way: the defaults with what `arg` sets.

    `arg` is comma-separated: a bare name sets a boolean to True (`ct,smoke`), `key=value`
    casts the value to the default's type (`res=64`; booleans take true/false/1/0). A name
    not among `defaults` is a ValueError naming the known ones, so a misspelt variant never
    runs the full config unnoticed.
    """
    parsed = dict(defaults)
    known = ", ".join(sorted(defaults)) or "none"
    for item in (arg or "").split(","):
        name, has_value, text = (part.strip() for part in item.partition("="))
        if not name:
            continue
        if name not in defaults:
            raise ValueError(f"unknown config variant {name!r}; known: {known}")
        kind = type(defaults[name])
        if not has_value:
            if kind is not bool:
                raise ValueError(f"config variant {name!r} needs a value: {name}=<{kind.__name__}>")
            parsed[name] = True
        elif kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config variant {name}={text!r}: use true or false")
            parsed[name] = text.lower() in ("true", "1")
        else:
            parsed[name] = kind(text)
    return ml_collections.ConfigDict(parsed)
