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
A stage is finished exactly when its `summary.json` exists and reads as JSON; it is written
last, atomically and (on local disks) durably: synced before and after its rename, so a
host crash cannot leave an empty one behind. One that is empty or unreadable anyway (an
older run, another filesystem) counts as not finished, with a warning, and is rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import Mesh

SPLITS = ("train", "validation", "test")


@contextlib.contextmanager
def replacing(path: epath.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write that replaces the local file `path` whole, or not at all.

    The data go to a temporary file beside `path`, which is synced and then renamed into
    place, and the directory synced after it: after a host crash `path` is either the old
    file or the new one, whole (a rename alone may reach the disk before the data, leaving
    an empty file). An exception inside the block leaves `path` as it was.
    """
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(os.fspath(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(os.fspath(tmp), os.fspath(path))
    fsync_dir(path.parent)


def write_atomic(path: epath.PathLike, data: bytes) -> None:
    """Writes a whole file that readers see whole or not at all, local or in a bucket.

    On a bucket an object appears only when its upload completes, so the data go straight
    to its name (a bucket has no rename: a temporary object would be copied and deleted).
    Locally, through `replacing`.
    """
    path = epath.Path(path)
    if not is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    with replacing(path) as f:
        f.write(data)


def write_json_atomic(path: epath.PathLike, obj: Any) -> None:
    """Writes JSON that readers never see half of (`write_atomic`)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_atomic(path, text.encode())


def is_local(path: epath.PathLike) -> bool:
    """A path on this machine's filesystem (not gs:// or another epath backend)."""
    return "://" not in os.fspath(path)


def fsync_dir(directory: epath.PathLike) -> None:
    """Syncs a directory's entries (a rename in it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory
    finally:
        os.close(fd)


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


_warned_unreadable: set[str] = set()


def read_summary(path: epath.Path) -> dict[str, Any] | None:
    """The stage summary at `path`, or None when the stage has not finished.

    An empty or unparsable file (a crash while it was written, before writes were synced)
    is not a finished stage: None, with a warning (once per file) saying the stage runs
    again and rewrites it.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        summary = json.loads(text)
    except ValueError:
        summary = None
    if isinstance(summary, dict):
        return summary
    if os.fspath(path) not in _warned_unreadable:
        _warned_unreadable.add(os.fspath(path))
        message = (
            f"{path} is {'empty' if not text.strip() else 'not a JSON object'} (a crash while "
            "it was written?): that stage counts as not finished; it runs again (resuming "
            "from its last checkpoint, if any) and rewrites the file"
        )
        logging.warning("%s", message)
        print(f"== warning: {message}", flush=True)
    return None


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
        """Whether the stage's summary.json exists and reads (see `read_summary`)."""
        return read_summary(self.summary_path(stage)) is not None

    def summary(self, stage: str) -> dict[str, Any]:
        path = self.summary_path(stage)
        summary = read_summary(path)
        if summary is None:
            state = "unreadable" if path.exists() else "missing"
            raise FileNotFoundError(
                f"stage {stage!r} has not finished in {self.workdir} ({path.name} {state}); "
                f"include it in `stages` or run it first"
            )
        return summary

    @property
    def synthetic_dir(self) -> epath.Path:
        return self.workdir / "synthetic"
