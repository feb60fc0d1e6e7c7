"""Datasets in a bucket (gs://): array_record reads and writes local files only.

The array_record reader and writer open paths with the operating system, so a dataset
directory in a bucket is read through a local mirror and written through a local file:

- `local_mirror(dataset_dir)` copies a remote dataset directory's files to
  `$SYNTHJAX_CACHE/datasets/` (default `~/.cache/synthjax`) and returns the local copy.
  Files already there at the same size and version are not fetched again, so
  a resumed job (or a second stage) reads from its own disk. Each host keeps its own mirror.
- `upload(local, remote)` streams a finished local file to its place in the bucket. An
  object store makes an object visible only when its upload completes, so readers never
  see half a shard. `publish` uploads a whole dataset built locally (`dataset_info.json`
  last); `synthjax.core.workdir.write_atomic` writes any other file whole, locally or in a
  bucket.

Local paths pass through both unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
from pathlib import Path

import fsspec
from absl import logging
from etils import epath
from etils.epath import backend as epath_backend

from synthjax.core.workdir import is_local, replacing, write_json_atomic

CACHE_ENV = "SYNTHJAX_CACHE"
_MANIFEST = ".mirror.json"
_CHUNK = 8 << 20


# gcsfs keeps every directory listing for the life of the process. Other processes write
# the same bucket (the other hosts of a pod slice, a resumed job, a notebook reading a
# running sweep), so a kept listing goes stale: `exists()` would miss a file another host
# just wrote. Listings are asked afresh instead.
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)


def _forget_bucket_clients() -> None:
    """Runs in every forked child: the parent's bucket client is bound to the parent's event
    loop and threads (gcsfs refuses it: "This class is not fork-safe"); etils keeps it in a
    cache of its own, which fsspec's fork check does not reach. The child makes a new one."""
    backend = getattr(epath_backend, "fsspec_backend", None)
    get_filesystem = getattr(backend, "_get_filesystem", None)
    if hasattr(get_filesystem, "cache_clear"):
        get_filesystem.cache_clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_bucket_clients)


def is_remote(path: epath.PathLike) -> bool:
    """A bucket (gs://) or another fsspec store, not this machine's filesystem."""
    return not is_local(path)


def cache_root() -> Path:
    """`$SYNTHJAX_CACHE`, else `~/.cache/synthjax`: where remote datasets are mirrored."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "synthjax"


def mirror_path(dataset_dir: epath.PathLike) -> Path:
    """The local folder that mirrors `dataset_dir`: its last two names and a hash of the URL."""
    url = os.fspath(dataset_dir).rstrip("/")
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    tail = "-".join(url.split("/")[-2:])
    return cache_root() / "datasets" / f"{tail}-{digest}"


def local_mirror(dataset_dir: epath.PathLike) -> Path:
    """A local directory with the files of `dataset_dir` (itself, when already local).

    Only the directory's own files are copied (a prepared dataset is flat); hidden files
    (temporary ones of a writer) are skipped. A local file is fetched again when the remote
    one's size or version differs from what was fetched, so a dataset rewritten in place (a
    synthetic set redrawn after `rerun_from`) is not read stale.
    """
    if not is_remote(dataset_dir):
        return Path(os.fspath(dataset_dir))
    local = mirror_path(dataset_dir)
    local.mkdir(parents=True, exist_ok=True)
    manifest_path = local / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    remote = epath.Path(dataset_dir)
    fetched = 0
    for name, stamp in _listing(dataset_dir).items():
        dst = local / name
        if manifest.get(name) == stamp and dst.exists() and dst.stat().st_size == stamp[0]:
            continue
        _download(remote / name, dst)
        manifest[name] = stamp
        fetched += stamp[0]
        write_json_atomic(manifest_path, manifest)
    if fetched:
        logging.info("mirrored %s to %s (%.1f MB fetched)", remote, local, fetched / 1e6)
    return local


def _listing(directory: epath.PathLike) -> dict[str, list]:
    """{name: [size, version]} of the files directly in a remote directory, in one listing.

    The version is the object's generation on Cloud Storage (a new one on every write; other
    stores: their ETag), so a file rewritten with the same size is told apart."""
    fs, root = fsspec.core.url_to_fs(os.fspath(directory))
    fs.invalidate_cache(root)  # another process (or host) may have written since
    out = {}
    for info in fs.ls(root, detail=True):
        name = posixpath.basename(info["name"].rstrip("/"))
        if info.get("type") != "file" or name.startswith("."):
            continue
        version = info.get("generation") or info.get("etag") or info.get("ETag")
        out[name] = [int(info["size"]), str(version or info.get("mtime") or "")]
    return dict(sorted(out.items()))


def _download(src: epath.Path, dst: Path) -> None:
    with replacing(dst) as out, src.open("rb") as f:
        shutil.copyfileobj(f, out, _CHUNK)


def publish(local_dir: Path, dataset_dir: epath.PathLike, last: str = "dataset_info.json") -> None:
    """Uploads the finished local dataset `local_dir` to `dataset_dir` in a bucket.

    `last` (the file that marks a dataset complete) goes up after every other file, so a
    killed upload is never read as complete; what such an upload left is deleted first.
    `local_dir` then becomes the dataset's local mirror, so no one downloads it again here.
    """
    remote = epath.Path(dataset_dir)
    if remote.exists():
        remote.rmtree()
    files = sorted(p for p in local_dir.iterdir() if p.is_file())
    files.sort(key=lambda p: p.name == last)
    for path in files:
        upload(path, remote / path.name)
    manifest = _listing(remote)
    mirror = mirror_path(dataset_dir)
    if mirror.exists():
        shutil.rmtree(mirror)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(os.fspath(local_dir), os.fspath(mirror))
    write_json_atomic(mirror / _MANIFEST, manifest)
    logging.info("uploaded %d files to %s", len(files), remote)


def upload(local: epath.PathLike, remote: epath.PathLike) -> None:
    """Copies the local file `local` to `remote` (any epath), streaming."""
    with open(os.fspath(local), "rb") as f, epath.Path(remote).open("wb") as out:
        shutil.copyfileobj(f, out, _CHUNK)


def scratch_dir() -> Path:
    """A local folder for files on their way to a bucket."""
    path = cache_root() / "upload"
    path.mkdir(parents=True, exist_ok=True)
    return path
