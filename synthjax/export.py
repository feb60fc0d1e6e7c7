r"""The release: what may leave the hospital, copied out of a workdir by an allowlist.

  python -m synthjax.export --workdir runs/quickstart --out release/quickstart

A workdir holds real patient images (the prepared splits, `gan/samples/real.png`, the
memorization audit's closest pairs in `synthesize/`, a reader-study kit), things derived
from them (checkpoints, test predictions, prepare reports) and this machine's folder names.
Only these files leave, under the same relative paths:

  synthetic/<name>-<split>.array_record-*   the synthetic shards listed in dataset_info.json
  synthetic/dataset_info.json, features.json, metadata.json   what `shards.write_metadata`
                                  writes (the loader reads the shards back with them)
  synthetic/DATASET_CARD.json     what the dataset is and how it was audited
  report.json, report.md          the numbers and the verdict
  report_{auroc,roc,fidelity,c2st}.png   the report's plots (`REPORT_FIGURES`)
  synthetic/samples.png           released images, a row per label combination (the GAN's
                                  own grids in gan/samples/ show unaudited draws: they stay)
  MANIFEST.json                   every file above with its size and sha256

Everything else stays. The export refuses a dataset whose card says `"releasable": false`
unless the card records an override with its reason (`privacy.release_override`), and an
`--out` that exists and is not empty. In the JSON and Markdown it writes, values that are
paths of this machine become "<withheld>" and the host name "<host>". It then checks every
byte it wrote for this machine's paths and name, and writes the release into a temporary
sibling renamed into place at the end: a refusal or a crash leaves no half release.

This module needs no JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from synthjax.core.errors import SynthjaxError

WITHHELD = "<withheld>"
HOST = "<host>"
NOT_RELEASED = "<not released: shows real images>"
MANIFEST = "MANIFEST.json"
SYNTHETIC_DIR = "synthetic"
CARD = "DATASET_CARD.json"
# Audited images of the release (`synthjax.stages.synthesize`), the one picture of them.
RELEASE_GRID = "samples.png"
# What `shards.write_metadata` (tfds.folder_dataset.write_metadata) writes beside the shards.
# Not the loader's `labels-<split>.npy` caches: the loader rebuilds them from the shards.
DATASET_METADATA = ("dataset_info.json", "features.json", "metadata.json")
REPORT_FILES = ("report.json", "report.md")
# The figures `report_figures.draw_all` draws: bar charts, ROC curves and error bars of
# numbers from report.json and the saved test predictions; none of them draws an image.
# The one report figure that shows images, the closest pairs of the memorization audit,
# lives in synthesize/ and is only linked. Any other report_*.png stays: nobody checked it.
REPORT_FIGURES = ("report_auroc.png", "report_roc.png", "report_fidelity.png", "report_c2st.png")
# train/gan.py `save_samples`: the EMA generator's images for fixed latents and labels, and
# nothing else. `real.png` beside them holds real training images and never matches this.
TEXT_SUFFIXES = (".json", ".md")
# A path or name shorter than this is looked for only where text is (JSON, Markdown, PNG
# text chunks, shard ids): in compressed or pixel bytes a few bytes match by chance (a
# 2-letter host name occurs in most PNGs), and nothing there can be read as text anyway.
MIN_RAW_NEEDLE = 5

_SCHEME_PATH = re.compile(r"\b(?:file|gs|gcs|s3|hdfs|az|abfss?)://[^\s\"'<>|)\]]+")
# An absolute path inside text: "/" or "~/" not after a word character, ".", ":" or "/"
# (so "50/50", "img/s" and URLs stay), then path characters; a "." or "," at its end is
# the sentence's.
_EMBEDDED_PATH = re.compile(r"(?<![\w./:<~-])~?/[\w.@%+=,~-](?:[\w.@%+=,~/-]*[\w@%+=~/-])?")
_WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s\"'<>|]*")
_MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


class ExportError(SynthjaxError):
    """The workdir cannot be released as it is; the message says why and what to do."""


# ------------------------------------------------------------------------------------------
# What leaves: the allowlist


@dataclasses.dataclass(frozen=True)
class Item:
    """One file of the release: its source in the workdir and its path in the release."""

    source: Path
    rel: str


def _synthetic_files(workdir: Path) -> list[Item]:
    """The shards dataset_info.json lists, its metadata files and the card; all must exist."""
    directory = workdir / SYNTHETIC_DIR
    info_path = directory / "dataset_info.json"
    if not (directory / CARD).is_file() or not info_path.is_file():
        raise ExportError(
            f"{directory} holds no finished synthetic dataset ({CARD} or dataset_info.json "
            "missing): run the pipeline through the `synthesize` stage first"
        )
    info = json.loads(info_path.read_text())
    items = []
    for split in info.get("splits", []):
        lengths = split.get("shardLengths", [])
        for index in range(len(lengths)):
            name = (
                f"{info['name']}-{split['name']}.{info.get('fileFormat', 'array_record')}"
                f"-{index:05d}-of-{len(lengths):05d}"
            )
            if "/" in name or "\\" in name or name.startswith("."):
                raise ExportError(f"{info_path} names a shard {name!r} outside {directory}")
            if not (directory / name).is_file():
                raise ExportError(
                    f"{directory / name} is missing (dataset_info.json lists it): the synthetic "
                    "dataset is incomplete; rerun the same command to finish `synthesize`"
                )
            items.append(Item(directory / name, f"{SYNTHETIC_DIR}/{name}"))
    if not sum(int(n) for split in info.get("splits", []) for n in split["shardLengths"]):
        raise ExportError(
            f"the synthetic dataset in {directory} holds no image (dataset_info.json): there is "
            "nothing to release; see the `synthesize` output and rerun it"
        )
    for name in (*DATASET_METADATA, CARD):
        if (directory / name).is_file():
            items.append(Item(directory / name, f"{SYNTHETIC_DIR}/{name}"))
    return items


def allowlisted(workdir: Path) -> list[Item]:
    """Every file of `workdir` that may leave, with its path in the release."""
    items = _synthetic_files(workdir)
    for name in (*REPORT_FILES, *REPORT_FIGURES):
        if (workdir / name).is_file():
            items.append(Item(workdir / name, name))
    grid = workdir / SYNTHETIC_DIR / RELEASE_GRID
    if grid.is_file():
        items.append(Item(grid, f"{SYNTHETIC_DIR}/{RELEASE_GRID}"))
    return items


# ------------------------------------------------------------------------------------------
# What must not leave: this machine's paths and name


@dataclasses.dataclass(frozen=True)
class Private:
    """This machine's folder names and host names, each with what it is (for messages)."""

    paths: dict[str, str]  # path -> "the workdir", "the home directory", ...
    hosts: tuple[str, ...]


def _path_forms(path: str | os.PathLike) -> set[str]:
    """A path as given, made absolute and with symlinks resolved; no trailing slash."""
    text = os.fspath(path)
    forms = {text, os.path.abspath(os.path.expanduser(text))}
    forms.add(os.path.realpath(os.path.expanduser(text)))
    return {f.rstrip("/") for f in forms if os.path.isabs(f) and f.rstrip("/")}


def host_names() -> tuple[str, ...]:
    """socket.gethostname(), and its first label when it is a dotted name."""
    host = socket.gethostname()
    names = {host, host.split(".")[0]} if host else set()
    return tuple(sorted((n for n in names if n), key=len, reverse=True))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _local_paths(obj: Any) -> Iterable[str]:
    """Every string in a JSON value that is a local path."""
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _local_paths(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _local_paths(value)
    elif isinstance(obj, str) and is_local_path(obj):
        yield obj


def private_strings(workdir: Path) -> Private:
    """What no released byte may contain: the workdir, the data folders named in its
    config.json and prepare/summary.json, the home and current directories, the absolute
    paths in the card and the report, and the host name."""
    named: dict[str, str] = {}

    def add(path: Any, what: str) -> None:
        if isinstance(path, str | os.PathLike) and os.fspath(path):
            for form in _path_forms(path):
                if len(form) > 1:  # "/" alone is a separator, not a folder name
                    named.setdefault(form, what)

    add(workdir, "the workdir path")
    config = _read_json(workdir / "config.json") or {}
    dataset = config.get("dataset") or {}
    for field in ("manual_dir", "data_dir"):
        if isinstance(dataset.get(field), str) and os.path.isabs(dataset[field]):
            add(dataset[field], f"dataset.{field} from config.json")
    prepared = _read_json(workdir / "prepare" / "summary.json") or {}
    add(prepared.get("dataset_dir"), "the prepared dataset_dir")
    for name in (f"{SYNTHETIC_DIR}/{CARD}", "report.json"):
        for path in _local_paths(_read_json(workdir / name)):
            if os.path.isabs(path):
                add(path, f"a path in {name}")
    add(Path.home(), "the home directory")
    add(os.getcwd(), "the current directory")
    ordered = dict(sorted(named.items(), key=lambda kv: len(kv[0]), reverse=True))
    return Private(ordered, host_names())


# ------------------------------------------------------------------------------------------
# Scrubbing the text files


def is_local_path(text: str) -> bool:
    """Whether a whole JSON string value names a file or folder of some machine."""
    text = text.strip()
    return bool(
        text.startswith(("/", "~/"))
        or text == "~"
        or re.fullmatch(r"[A-Za-z]:\\.*", text, flags=re.DOTALL)
        or _SCHEME_PATH.fullmatch(text)
    )


def _host_pattern(host: str) -> re.Pattern:
    # Host names are letters, digits and hyphens: a short one inside a word is not it.
    return re.compile(rf"(?<![A-Za-z0-9-]){re.escape(host)}(?![A-Za-z0-9-])", re.IGNORECASE)


def scrub_text(text: str, private: Private) -> str:
    """Paths (known ones, then any absolute path or bucket URL) -> "<withheld>"; the host
    name -> "<host>"."""
    for pattern in (_SCHEME_PATH, _WINDOWS_PATH, _EMBEDDED_PATH):
        text = pattern.sub(WITHHELD, text)
    for path in private.paths:  # the known ones also where no pattern sees a path start
        text = text.replace(path, WITHHELD)
    for host in private.hosts:
        text = _host_pattern(host).sub(HOST, text)
    return text


def scrub_json(obj: Any, private: Private) -> Any:
    """A copy of a JSON value: strings that are paths -> "<withheld>"; paths and the host
    name inside other strings (and keys) scrubbed by `scrub_text`."""
    if isinstance(obj, dict):
        return {scrub_text(k, private): scrub_json(v, private) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_json(v, private) for v in obj]
    if isinstance(obj, str):
        return WITHHELD if is_local_path(obj) else scrub_text(obj, private)
    return obj


def _unreleased_figures(report: dict[str, Any], released: set[str]) -> dict[str, Any]:
    """report.json's figure links to files that stay inside (the closest-pairs grids)."""
    figures = report.get("figures")
    if isinstance(figures, dict):
        report["figures"] = {
            name: path if path in released else NOT_RELEASED for name, path in figures.items()
        }
    return report


def _unreleased_images_md(text: str, released: set[str]) -> str:
    """report.md's image links to files that stay inside become a line saying so."""

    def replace(match: re.Match) -> str:
        name, target = match.group(1), match.group(2)
        if target in released:
            return match.group(0)
        return f"*{name}: not in the release*"

    return _MARKDOWN_IMAGE.sub(replace, text)


def _write_text_file(item: Item, dest: Path, private: Private, released: set[str]) -> None:
    if item.rel.endswith(".json"):
        obj = json.loads(item.source.read_text())
        if item.rel == "report.json" and isinstance(obj, dict):
            obj = _unreleased_figures(obj, released)
        dest.write_text(json.dumps(scrub_json(obj, private), indent=2) + "\n")
    else:
        text = _unreleased_images_md(item.source.read_text(), released)
        dest.write_text(scrub_text(text, private))


# ------------------------------------------------------------------------------------------
# Checking every written byte


def _needles(private: Private) -> list[tuple[str, str, bool]]:
    """(string, what it is, whether it is a host name) for everything that must not leave."""
    return [(p, what, False) for p, what in private.paths.items()] + [
        (h, "the host name", True) for h in private.hosts
    ]


def _text_findings(text: str, private: Private, *, any_path: bool) -> list[str]:
    """Private strings in text; with `any_path`, also any absolute path left in it."""
    found = []
    for needle, what, host in _needles(private):
        if _host_pattern(needle).search(text) if host else needle in text:
            found.append(f"{what} ({needle!r})")
    leftover = _EMBEDDED_PATH.search(text) if any_path else None
    if leftover:
        found.append(f"an absolute path ({leftover.group(0)!r})")
    return found


def _png_text(data: bytes) -> bytes:
    """The bytes of a PNG outside its pixel data (IDAT): where text chunks would be."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind != b"IDAT":
            out.append(kind + data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"\n".join(out)


def _binary_findings(path: Path, private: Private) -> list[str]:
    """Private strings of MIN_RAW_NEEDLE bytes or more anywhere in the file (read in blocks,
    so a shard of any size fits in memory); all of them in a PNG's text chunks."""
    raw = [(n.encode(), what) for n, what, _ in _needles(private) if len(n) >= MIN_RAW_NEEDLE]
    overlap = max((len(n) for n, _ in raw), default=1) - 1
    found: dict[str, None] = {}
    tail = b""
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            data = tail + block
            for needle, what in raw:
                if needle in data:
                    found[f"{what} ({needle.decode()!r})"] = None
            tail = data[-overlap:] if overlap else b""
    if path.suffix == ".png":
        text = _png_text(path.read_bytes()).decode("latin-1")
        found.update(dict.fromkeys(_text_findings(text, private, any_path=False)))
    return list(found)


def _shard_ids(synthetic_dir: Path, splits: Sequence[str]) -> Iterable[str]:
    """Every record id of a synthetic dataset: the only text a shard holds. Raises
    ExportError for shards that keep a patient id per record, as only real ones do."""
    from synthjax.data.loader import load_source  # tfds: imported only when checking

    for split in splits:
        source = load_source(synthetic_dir, split)
        if source.has_patients:
            raise ExportError(
                f"the synthetic {split} shards keep a patient id per record (a real dataset's "
                "feature); nothing was released. Rerun `synthesize`"
            )
        for i in range(len(source)):
            yield str(source[i]["id"])


SYNTHETIC_ID = re.compile(r"synthetic-(train|validation|test)-\d+")


def verify(out: Path, private: Private) -> None:
    """Raises ExportError naming the first file of `out` that holds a private string, or a
    shard record whose id is not a synthetic one."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(out).as_posix()
        if rel.endswith(TEXT_SUFFIXES):
            found = _text_findings(path.read_text(errors="replace"), private, any_path=True)
        else:
            found = _binary_findings(path, private)
        if found:
            raise ExportError(
                f"{rel} would leave with {', '.join(found)}; nothing was released. Remove it "
                "from that file in the workdir (or report which field holds it) and export again"
            )
    info_path = out / SYNTHETIC_DIR / "dataset_info.json"
    splits = [  # a split without records has no shard to read
        s["name"]
        for s in json.loads(info_path.read_text())["splits"]
        if sum(int(n) for n in s.get("shardLengths", [])) > 0
    ]
    for record_id in _shard_ids(out / SYNTHETIC_DIR, splits):
        if not SYNTHETIC_ID.fullmatch(record_id):
            raise ExportError(
                f"a synthetic shard holds the record id {record_id!r}, not synthetic-<split>-"
                "<n>: it may name a source image; nothing was released. Rerun `synthesize`"
            )
    extra = sorted(p for p in out.rglob("*") if p.is_file() and p not in files)
    if extra:  # reading the shards back must not have added anything (e.g. label caches)
        raise ExportError(f"checking the release wrote {extra[0].name} into it: report this")


# ------------------------------------------------------------------------------------------
# The release


def release_decision(card: dict[str, Any]) -> str | None:
    """None for a releasable card; the override's reason for one released by override.

    Raises ExportError when the card says not releasable and records no override."""
    override = (card.get("privacy") or {}).get("override")
    if isinstance(override, dict) and override.get("reason"):
        return str(override["reason"])
    if card.get("releasable") is not True:
        raise ExportError(
            f'{CARD} says "releasable": {json.dumps(card.get("releasable"))}: the '
            "memorization audit found synthetic images too close to training images "
            f"({'; '.join((card.get('privacy') or {}).get('reasons') or []) or 'no audit'}). "
            "Look at DIR/synthesize/closest_pairs_*.png, then train longer or with more data "
            "and rerun `synthesize`; or, if the people responsible for the data decide to "
            "release anyway, rerun `synthesize` with --config.privacy.release_override="
            "'<who decided and why>' so the card records it"
        )
    return None


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(
            f"{out} exists and is not empty: give --out a new or empty directory (a release "
            "is written whole, never merged into another)"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(staging: Path, card: dict[str, Any], override: str | None) -> dict[str, Any]:
    files = [
        {"path": p.relative_to(staging).as_posix(), "bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(staging.rglob("*"))
        if p.is_file()
    ]
    return {
        "name": card.get("name"),
        "counts": card.get("counts"),
        "released_by_override": override,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }


def _write(items: Sequence[Item], staging: Path, private: Private) -> None:
    released = {item.rel for item in items}
    for item in items:
        dest = staging / item.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if item.rel.endswith(TEXT_SUFFIXES):
            _write_text_file(item, dest, private, released)
        else:
            shutil.copyfile(item.source, dest)  # bytes only: no owner, mode or times


def export(
    workdir: str | os.PathLike, out: str | os.PathLike, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Writes the release of `workdir` to `out`; returns its manifest."""
    if "://" in os.fspath(workdir) or "://" in os.fspath(out):
        raise ExportError(
            "export reads and writes local folders: copy the workdir to this machine first "
            "(e.g. gcloud storage cp -r) and upload the release afterwards"
        )
    workdir, out = Path(workdir).absolute(), Path(out).absolute()
    if not (workdir / "config.json").is_file():
        raise ExportError(f"{workdir} is not a synthjax workdir (no config.json)")
    _check_out(out)
    items = allowlisted(workdir)  # checks the synthetic dataset and its card are there
    card = json.loads((workdir / SYNTHETIC_DIR / CARD).read_text())
    override = release_decision(card)
    private = private_strings(workdir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write(items, staging, private)
        manifest = _manifest(staging, scrub_json(card, private), override)
        manifest = scrub_json(manifest, private)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        verify(staging, private)
        _check_out(out)  # nobody wrote there meanwhile
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _log_summary(out, manifest, card, override, workdir, log)
    return manifest


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _log_summary(
    out: Path, manifest: dict, card: dict, override: str | None, workdir: Path, log
) -> None:
    files = manifest["files"]
    for f in files:
        log(f"  {_size(f['bytes']):>10}  {f['path']}")
    total = sum(f["bytes"] for f in files)
    counts = ", ".join(f"{split} {n}" for split, n in (card.get("counts") or {}).items())
    log(f"released {len(files) + 1} files ({_size(total)} + {MANIFEST}) to {out}")
    log(f"synthetic images per split: {counts}")
    report = _read_json(workdir / "report.json")
    if isinstance(report, dict) and report.get("verdict"):
        log(f"report verdict: {report['verdict'].get('decision')}")
    elif not (workdir / "report.json").is_file():
        log("no report.json in the workdir: the release has no evaluation (run `report`)")
    if override is not None:
        log(f"RELEASED BY OVERRIDE (the memorization audit did not pass): {override}")
    log(
        "left inside: checkpoints, real images (gan/samples/real.png, synthesize/closest_pairs_*"
        ".png, the prepared data, any reader-study kit), the GAN's unaudited sample grids, "
        "prepare reports, predictions, metrics, config.json"
    )


# ------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m synthjax.export",
        description="Write what may leave the hospital from a finished workdir: the synthetic "
        "dataset, its card, the report and the synthetic sample grids, with this machine's "
        "paths and host name withheld, and a MANIFEST.json of sha256 sums.",
    )
    p.add_argument("--workdir", required=True, metavar="DIR", help="a run through `synthesize`")
    p.add_argument(
        "--out", required=True, metavar="RELEASE", help="a new (or empty) directory to write"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.monotonic()
    try:
        export(args.workdir, args.out, log=lambda m: print(m, flush=True))
    except SynthjaxError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"export took {time.monotonic() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
