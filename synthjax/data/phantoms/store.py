"""Where a phantom is written, and writing it once: the folder, its marker and its lock.

The `prepare` stage writes a dataset's built-in phantom into the workdir, or, with
`dataset.phantom.dir`, into a folder named after the phantom's settings, so runs that share
the directory (a sweep) share the phantoms they agree on and never overwrite another's.
A `COMPLETE.json` marker, written last, says a folder is whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from etils import epath

from synthjax.core.workdir import read_json, write_json_atomic
from synthjax.data.builds import build_lock

MARKER = "COMPLETE.json"


def settings_key(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as JSON values (tuples as lists), as the marker records them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def phantom_root(folder: str, key: dict[str, Any], *, shared_dir: str, workdir) -> epath.Path:
    """`workdir/<folder>`, or `<shared_dir>/<folder>_<digest of key>` when shared."""
    if shared_dir:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        return epath.Path(shared_dir) / f"{folder}_{digest}"
    return epath.Path(workdir) / folder


def write_once(
    root: epath.Path, key: dict[str, Any], write: Callable[[epath.Path], dict]
) -> epath.Path:
    """Runs `write(root)` unless `root` holds a complete phantom with settings `key`.

    A phantom killed halfway has no marker, so it is deleted and rewritten; so is one written
    with other settings. Writers of the same folder take turns through a lock.
    """
    marker = root / MARKER
    with build_lock(root):
        if marker.exists() and read_json(marker)["settings"] == key:
            return root
        if root.exists():
            root.rmtree()  # half-written, or written with other settings
        stats = write(root)
        write_json_atomic(marker, {"settings": key, "stats": stats})
    return root
