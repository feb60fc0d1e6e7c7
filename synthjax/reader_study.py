r"""The reader-study kit: radiologists are shown real and synthetic images and say which is which.

  python -m synthjax.reader_study export --workdir runs/cxr64 --workdir runs/cxr256 --n 100
  python -m synthjax.reader_study score --workdir runs/cxr64 --answers alice.csv --answers bob.csv

`export` draws, from each workdir, n/2 real held-out images (the kept real test split) and
n/2 synthetic ones (the synthetic test split), shuffles them all in a seeded order and writes
a kit directory (default `<first workdir>/reader_study_PRIVATE/`: it holds real images,
which a blinded study cannot mark on the image, so its name says so):

  index.html   one self-contained page (images inline, no network, works from file://); it
               asks for the reader's name, shows one image at a time, records real/synthetic,
               a confidence 1-5 and the time spent, keeps progress in the browser's
               localStorage and saves the answers as a CSV:
               `reader,item,answer,confidence,time_ms,timestamp,kit`
  key.json     the answer key: per item its truth, resolution and workdir name
  README.txt   how to run the study

The page carries no hint of the truth: items are numbers in a random order, images are PNGs
written afresh from their pixels (no metadata), and nothing in it names a patient or a file.
The key stays with the study lead; the kit holds real patient images, so it stays wherever
the data may be.

`score` joins the readers' CSVs to the key and reports accuracy, sensitivity (synthetic
called synthetic), specificity (real called real), an exact two-sided binomial test of the
accuracy against chance (0.5) with its 95% Clopper-Pearson interval, and the mean confidence
of right and wrong answers: overall, per resolution, per reader and per reader x resolution.
It prints a table and writes `scores.json` and `scores.md` into the kit directory.

This module needs no JAX: it reads the shards with the dataset loader only.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import datetime
import hashlib
import importlib.resources
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from etils import epath
from PIL import Image

from synthjax.core.errors import DataNotFoundError, SynthjaxError

if TYPE_CHECKING:
    from synthjax.data.loader import ImageSource

Log = Callable[[str], None]

KIT_DIRNAME = "reader_study_PRIVATE"
PAGE_FILE = "index.html"
KEY_FILE = "key.json"
README_FILE = "README.txt"
SCORES_JSON = "scores.json"
SCORES_MD = "scores.md"
PAGE_TEMPLATE = "reader_study_page.html"

# The CSV the page writes: these columns in this order, then `kit` (the kit id).
CSV_COLUMNS = ("reader", "item", "answer", "confidence", "time_ms", "timestamp")
KIT_COLUMN = "kit"
ANSWERS = ("real", "synthetic")  # the positive class is "synthetic"
CONFIDENCES = range(1, 6)

DISPLAY_TARGET_PX = 512  # images are shown at an integer multiple of their size near this
DISPLAY_MIN_PX = 256


class ReaderStudyError(SynthjaxError):
    """A kit or an answers file that cannot be used; the message says what to do."""


# ------------------------------------------------------------------------------------------
# Export


@dataclasses.dataclass(frozen=True)
class _Image:
    """One image drawn for the kit, before shuffling."""

    pixels: np.ndarray  # uint8[H, W, C]
    truth: str  # "real" | "synthetic"
    resolution: int
    workdir: str  # basename only


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """What one workdir contributed."""

    name: str
    resolution: int
    real: int
    synthetic: int
    real_available: int
    synthetic_available: int


def _read_json(path: epath.Path) -> Any:
    return json.loads(path.read_text())


def _workdir_name(workdir: epath.Path) -> str:
    return os.path.basename(os.fspath(workdir).rstrip("/")) or os.fspath(workdir)


def _resolution(workdir: epath.Path, image_shape: Sequence[int]) -> int:
    """config.json's dataset.resolution, or else the image height."""
    config_path = workdir / "config.json"
    if config_path.exists():
        resolution = (_read_json(config_path).get("dataset") or {}).get("resolution")
        if resolution:
            return int(resolution)
    return int(image_shape[0])


def _open_sources(workdir: epath.Path) -> tuple[ImageSource, np.ndarray, ImageSource]:
    """(real test source, kept real test indices, synthetic test source) of a workdir."""
    from synthjax.data.loader import load_source  # imports TFDS: only when exporting

    if not workdir.exists():
        raise ReaderStudyError(f"no workdir at {workdir}: check the --workdir path")
    summary_path = workdir / "prepare" / "summary.json"
    subset_path = workdir / "prepare" / "subset.npz"
    if not summary_path.exists() or not subset_path.exists():
        raise ReaderStudyError(
            f"no finished prepare stage in {workdir} (prepare/summary.json or "
            "prepare/subset.npz missing): run the prepare stage first"
        )
    with subset_path.open("rb") as f:
        z = np.load(f)
        if "indices_test" not in z:
            raise ReaderStudyError(
                f"{subset_path} has no test indices (indices_test): rerun the prepare stage"
            )
        indices = np.asarray(z["indices_test"], np.int64)
    dataset_dir = _read_json(summary_path)["dataset_dir"]
    try:
        real = load_source(dataset_dir, "test")
    except DataNotFoundError as e:
        raise ReaderStudyError(
            f"the real test split of {workdir} cannot be read ({e}); export the kit on the "
            "machine that holds the prepared real data (prepare/summary.json: dataset_dir)"
        ) from e
    synthetic_dir = workdir / "synthetic"
    try:
        synthetic = load_source(synthetic_dir, "test")
    except DataNotFoundError as e:
        raise ReaderStudyError(
            f"no synthetic test split in {workdir}: run the synthesize stage first ({e})"
        ) from e
    if tuple(real.image_shape) != tuple(synthetic.image_shape):
        raise ReaderStudyError(
            f"{workdir}: real test images are {list(real.image_shape)} but synthetic ones are "
            f"{list(synthetic.image_shape)}; the synthetic dataset is not from this workdir's "
            "data: rerun the synthesize stage"
        )
    return real, indices, synthetic


def _draw_workdir(
    workdir: epath.Path, per_class: int, rng: np.random.Generator, log: Log
) -> tuple[list[_Image], _Drawn]:
    real, indices, synthetic = _open_sources(workdir)
    name = _workdir_name(workdir)
    resolution = _resolution(workdir, real.image_shape)
    n_real = min(per_class, len(indices))
    n_synthetic = min(per_class, len(synthetic))
    for kind, got, available in (
        ("real (kept test)", n_real, len(indices)),
        ("synthetic (test)", n_synthetic, len(synthetic)),
    ):
        if got < per_class:
            log(f"{name}: only {available} {kind} images, fewer than {per_class}: taking all")
    real_pick = np.sort(rng.choice(len(indices), size=n_real, replace=False))
    synthetic_pick = np.sort(rng.choice(len(synthetic), size=n_synthetic, replace=False))
    images = [
        _Image(real[int(indices[i])]["image"], "real", resolution, name) for i in real_pick
    ] + [_Image(synthetic[int(i)]["image"], "synthetic", resolution, name) for i in synthetic_pick]
    drawn = _Drawn(name, resolution, n_real, n_synthetic, len(indices), len(synthetic))
    return images, drawn


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of the image's pixels only (Pillow writes no text chunks unless told to).

    1 channel is grayscale, 3 RGB; other channel counts are reduced by
    `synthjax.eval.grids.display_channels` (CT: the middle slice's windows).
    """
    from synthjax.eval.grids import display_channels

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, C]; got {image.dtype}{list(image.shape)}")
    image = display_channels(image)
    picture = Image.fromarray(
        np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def display_size(height: int, width: int) -> int:
    """CSS pixels of the longer side: an integer upscale near DISPLAY_TARGET_PX, >= 256."""
    side = max(height, width)
    scale = max(1, round(DISPLAY_TARGET_PX / side))
    while side * scale < DISPLAY_MIN_PX:
        scale += 1
    return side * scale


def _page_template() -> str:
    return (importlib.resources.files("synthjax") / PAGE_TEMPLATE).read_text(encoding="utf-8")


def render_page(kit_id: str, items: Sequence[dict[str, Any]]) -> str:
    """index.html: the template with the kit's items (id, resolution, size, image) inlined."""
    data = json.dumps({"kit": kit_id, "items": list(items)}, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # nothing in it can close the <script> element
    return _page_template().replace("__KIT_ID__", kit_id).replace("__KIT_DATA__", data)


def _readme(kit_id: str, n_items: int, drawn: Sequence[_Drawn]) -> str:
    lines = [
        f"Reader-study kit {kit_id}: {n_items} images, half real and half synthetic per run.",
        "",
        "  index.html  the study page: give readers ONLY this file",
        "  key.json    the answer key: it stays with the study lead, never with a reader",
        "",
        "Readers open index.html in a browser (double-click; no server or network needed),",
        "enter their name or reader id, and answer each image: Real or Synthetic, with a",
        "confidence from 1 (guess) to 5 (certain). Keys: r / s, 1-5, Enter = next,",
        "Left arrow = back. Progress is kept in that browser, so a reload or a break loses",
        "nothing. At the end (or any time) 'Download answers (CSV)' saves the answers; the",
        "reader sends that CSV to the study lead. One browser profile holds one reader's",
        "progress at a time: after downloading, 'Start a new reader' clears it.",
        "",
        "Scoring (study lead):",
        "  python -m synthjax.reader_study score --kit <this directory> \\",
        "      --answers reader1.csv --answers reader2.csv",
        "",
        "The kit contains real patient images: it stays inside the hospital, under the same",
        "rules as the data it was drawn from. Do not e-mail it or put it on a public share.",
        "",
        "Drawn from:",
    ]
    for d in drawn:
        lines.append(
            f"  {d.name} ({d.resolution}x{d.resolution}): {d.real} real of "
            f"{d.real_available} kept test images, {d.synthetic} synthetic of "
            f"{d.synthetic_available}"
        )
    return "\n".join(lines) + "\n"


def export(
    workdirs: Sequence[str | os.PathLike],
    n: int,
    *,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    force: bool = False,
    log: Log = print,
) -> epath.Path:
    """Writes the kit (index.html, key.json, README.txt); returns its directory.

    Args:
      workdirs: runs to draw from (e.g. one per resolution); each gives n images.
      n: images per workdir, half real (kept test split) and half synthetic (test split).
      seed: the draw and the order depend on it alone (with the workdirs' contents).
      out: the kit directory; default `<first workdir>/reader_study_PRIVATE`.
      force: replace a kit already in `out`.
      log: where notes go (e.g. a split with fewer images than asked).
    """
    if not workdirs:
        raise ReaderStudyError("no --workdir given: name at least one run")
    if n < 2 or n % 2:
        raise ReaderStudyError(
            f"--n must be an even number >= 2 (half real, half synthetic); got {n}"
        )
    paths = [epath.Path(w) for w in workdirs]
    if len({os.fspath(p) for p in paths}) != len(paths):
        raise ReaderStudyError("the same --workdir is given twice: name each run once")
    kit_dir = epath.Path(out) if out is not None else paths[0] / KIT_DIRNAME
    if (kit_dir / KEY_FILE).exists() and not force:
        old = _read_json(kit_dir / KEY_FILE).get("kit_id", "?")
        raise ReaderStudyError(
            f"a kit ({old}) is already in {kit_dir}: choose another --out, or pass --force to "
            "replace it (answers collected with the old kit can then no longer be scored)"
        )

    rng = np.random.default_rng(seed)
    images: list[_Image] = []
    drawn: list[_Drawn] = []
    for path in paths:
        got, summary = _draw_workdir(path, n // 2, rng, log)
        images += got
        drawn.append(summary)
    if not images:
        raise ReaderStudyError("the workdirs hold no test images at all: nothing to show")
    order = rng.permutation(len(images))

    page_items, key_items = [], []
    digest = hashlib.sha256()
    for item_id, index in enumerate(order, start=1):
        image = images[int(index)]
        png = png_bytes(image.pixels)
        digest.update(png)
        height, width = image.pixels.shape[:2]
        page_items.append(
            {
                "id": item_id,
                "res": image.resolution,
                "px": display_size(height, width),
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            }
        )
        key_items.append(
            {
                "item": item_id,
                "truth": image.truth,
                "resolution": image.resolution,
                "workdir": image.workdir,
            }
        )
    # The id depends on the pictures and their order only: the same draw gives the same kit.
    kit_id = digest.hexdigest()[:12]
    key = {
        "kit_id": kit_id,
        "seed": int(seed),
        "n_per_workdir": int(n),
        "positive_class": "synthetic",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "workdirs": [dataclasses.asdict(d) for d in drawn],
        "items": key_items,
    }
    kit_dir.mkdir(parents=True, exist_ok=True)
    for stale in (SCORES_JSON, SCORES_MD):  # a replaced kit's scores
        if (kit_dir / stale).exists():
            (kit_dir / stale).unlink()
    (kit_dir / PAGE_FILE).write_text(render_page(kit_id, page_items), encoding="utf-8")
    (kit_dir / KEY_FILE).write_text(json.dumps(key, indent=2) + "\n")
    (kit_dir / README_FILE).write_text(_readme(kit_id, len(key_items), drawn))
    return kit_dir


# ------------------------------------------------------------------------------------------
# Scoring


@dataclasses.dataclass(frozen=True)
class Answer:
    reader: str
    item: int
    answer: str
    confidence: int | None
    time_ms: int | None
    timestamp: str


def load_key(kit_dir: str | os.PathLike) -> dict[str, Any]:
    path = epath.Path(kit_dir) / KEY_FILE
    if not path.exists():
        raise ReaderStudyError(
            f"no answer key at {path}: pass --kit with the directory `export` wrote (it holds "
            "key.json beside index.html)"
        )
    return _read_json(path)


def _optional_int(text: str | None, what: str, where: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ReaderStudyError(f"{where}: {what} {text!r} is not a number") from None


def read_answers(path: str | os.PathLike, key: dict[str, Any]) -> list[Answer]:
    """The rows of one answers CSV, checked against the key."""
    path = epath.Path(path)
    if not path.exists():
        raise ReaderStudyError(f"no answers file at {path}")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ReaderStudyError(
            f"{path}: not a reader-study answers CSV (missing columns {missing}; expected "
            f"{','.join(CSV_COLUMNS)})"
        )
    known = {int(item["item"]) for item in key["items"]}
    answers = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        kit = (row.get(KIT_COLUMN) or "").strip()
        if kit and kit != key["kit_id"]:
            raise ReaderStudyError(
                f"{where}: these answers are for kit {kit}, but the key in --kit is for kit "
                f"{key['kit_id']}: pass the kit directory the reader's page came from"
            )
        item = _optional_int(row["item"], "item", where)
        if item is None or item not in known:
            raise ReaderStudyError(
                f"{where}: item {row['item']!r} is not in kit {key['kit_id']} (items 1-"
                f"{len(known)}): these answers come from another kit or were edited"
            )
        answer = (row["answer"] or "").strip().lower()
        if answer not in ANSWERS:
            raise ReaderStudyError(f"{where}: answer {row['answer']!r} is not real or synthetic")
        confidence = _optional_int(row["confidence"], "confidence", where)
        if confidence is not None and confidence not in CONFIDENCES:
            raise ReaderStudyError(f"{where}: confidence {confidence} is not between 1 and 5")
        reader_name = (row["reader"] or "").strip()
        if not reader_name:
            raise ReaderStudyError(f"{where}: no reader name")
        answers.append(
            Answer(
                reader=reader_name,
                item=item,
                answer=answer,
                confidence=confidence,
                time_ms=_optional_int(row["time_ms"], "time_ms", where),
                timestamp=(row["timestamp"] or "").strip(),
            )
        )
    return answers


def _deduplicate(answers: Iterable[Answer]) -> tuple[list[Answer], int]:
    """One answer per (reader, item): the latest by timestamp. Returns it and the drop count."""
    latest: dict[tuple[str, int], Answer] = {}
    dropped = 0
    for a in answers:
        k = (a.reader, a.item)
        if k in latest:
            dropped += 1
            if a.timestamp < latest[k].timestamp:
                continue
        latest[k] = a
    return sorted(latest.values(), key=lambda a: (a.reader, a.item)), dropped


def binomial_summary(correct: int, n: int) -> dict[str, float]:
    """Exact two-sided binomial test of correct/n against 0.5, with a 95% Clopper-Pearson CI."""
    from scipy.stats import binomtest

    result = binomtest(correct, n, p=0.5, alternative="two-sided")
    ci = result.proportion_ci(confidence_level=0.95, method="exact")
    return {"p_value": float(result.pvalue), "ci_low": float(ci.low), "ci_high": float(ci.high)}


def _mean(values: Sequence[int]) -> float | None:
    return float(np.mean(values)) if values else None


def group_scores(rows: Sequence[tuple[Answer, str]]) -> dict[str, Any]:
    """Scores of (answer, truth) pairs: positive class = synthetic."""
    n = len(rows)
    correct = sum(a.answer == truth for a, truth in rows)
    tp = sum(a.answer == truth == "synthetic" for a, truth in rows)
    tn = sum(a.answer == truth == "real" for a, truth in rows)
    n_synthetic = sum(truth == "synthetic" for _, truth in rows)
    n_real = n - n_synthetic
    out: dict[str, Any] = {
        "n": n,
        "correct": int(correct),
        "n_synthetic": n_synthetic,
        "n_real": n_real,
        "accuracy": correct / n if n else None,
        "sensitivity": tp / n_synthetic if n_synthetic else None,
        "specificity": tn / n_real if n_real else None,
        "p_value": None,
        "ci_low": None,
        "ci_high": None,
        "confidence_right": _mean(
            [a.confidence for a, t in rows if a.answer == t and a.confidence is not None]
        ),
        "confidence_wrong": _mean(
            [a.confidence for a, t in rows if a.answer != t and a.confidence is not None]
        ),
    }
    if n:
        out.update(binomial_summary(int(correct), n))
    return out


def score(
    kit_dir: str | os.PathLike, answer_files: Sequence[str | os.PathLike], *, log: Log = print
) -> dict[str, Any]:
    """Scores the answers against the kit's key; writes scores.json and scores.md there."""
    if not answer_files:
        raise ReaderStudyError("no --answers given: name at least one answers CSV")
    kit_dir = epath.Path(kit_dir)
    key = load_key(kit_dir)
    truth = {int(i["item"]): i["truth"] for i in key["items"]}
    resolution = {int(i["item"]): int(i["resolution"]) for i in key["items"]}
    answers: list[Answer] = []
    for path in answer_files:
        answers += read_answers(path, key)
    answers, dropped = _deduplicate(answers)
    if not answers:
        raise ReaderStudyError("the answers files hold no answers")
    if dropped:
        log(f"note: {dropped} repeated answers (same reader and item): kept the latest of each")

    pairs = [(a, truth[a.item]) for a in answers]
    readers = sorted({a.reader for a in answers})
    resolutions = sorted({resolution[a.item] for a in answers})
    by_res = lambda rows, r: [(a, t) for a, t in rows if resolution[a.item] == r]
    kit_per_res = {r: sum(v == r for v in resolution.values()) for r in resolutions}
    per_reader = {}
    for reader in readers:
        rows = [(a, t) for a, t in pairs if a.reader == reader]
        entry = group_scores(rows)
        entry["answered"] = len(rows)
        entry["kit_items"] = len(truth)
        entry["per_resolution"] = {str(r): group_scores(by_res(rows, r)) for r in resolutions}
        per_reader[reader] = entry
        if len(rows) < len(truth):
            log(f"note: {reader} answered {len(rows)} of {len(truth)} items: scored on those")
    result = {
        "kit_id": key["kit_id"],
        "positive_class": "synthetic",
        "test": "exact two-sided binomial test of accuracy against 0.5; 95% Clopper-Pearson",
        "answer_files": [os.path.basename(os.fspath(p)) for p in answer_files],
        "kit_items": len(truth),
        "kit_items_per_resolution": {str(r): k for r, k in kit_per_res.items()},
        "repeated_answers_dropped": dropped,
        "overall": group_scores(pairs),
        "per_resolution": {str(r): group_scores(by_res(pairs, r)) for r in resolutions},
        "per_reader": per_reader,
    }
    (kit_dir / SCORES_JSON).write_text(json.dumps(result, indent=2) + "\n")
    (kit_dir / SCORES_MD).write_text(scores_markdown(result))
    return result


def _table_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("all readers", result["overall"])]
    multi_res = len(result["per_resolution"]) > 1
    if multi_res:
        rows += [(f"all readers @ {r}x{r}", s) for r, s in result["per_resolution"].items()]
    for reader, s in result["per_reader"].items():
        label = reader
        if s["answered"] < s["kit_items"]:
            label += f" ({s['answered']}/{s['kit_items']} answered)"
        rows.append((label, s))
        if multi_res:
            rows += [(f"{reader} @ {r}x{r}", v) for r, v in s["per_resolution"].items() if v["n"]]
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


_HEADER = (
    "group",
    "n",
    "correct",
    "accuracy",
    "95% CI",
    "p (vs 0.5)",
    "sensitivity",
    "specificity",
    "conf right",
    "conf wrong",
)


def _cells(label: str, s: dict[str, Any]) -> tuple[str, ...]:
    ci = "-" if s["ci_low"] is None else f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
    return (
        label,
        str(s["n"]),
        str(s["correct"]),
        _fmt(s["accuracy"]),
        ci,
        _fmt_p(s["p_value"]),
        _fmt(s["sensitivity"]),
        _fmt(s["specificity"]),
        _fmt(s["confidence_right"], 2),
        _fmt(s["confidence_wrong"], 2),
    )


def scores_table(result: dict[str, Any]) -> str:
    """The scores as an aligned plain-text table."""
    rows = [_HEADER] + [_cells(label, s) for label, s in _table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    align = lambda i, cell: cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
    lines = ["  ".join(align(i, cell) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def scores_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Reader study, kit {result['kit_id']}",
        "",
        f"{result['kit_items']} items; answers from {', '.join(result['answer_files'])}. "
        "Positive class: synthetic (sensitivity = synthetic called synthetic, specificity = "
        "real called real). p: exact two-sided binomial test of the accuracy against chance "
        "(0.5); 95% Clopper-Pearson interval. Pooled rows treat every answer as independent, "
        "although readers see the same images. conf: mean confidence (1-5) of right and "
        "wrong answers.",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|",
    ]
    for label, s in _table_rows(result):
        cells = [c.replace("|", "\\|") for c in _cells(label, s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m synthjax.reader_study",
        description="The reader-study kit: real vs synthetic images for radiologists, and "
        "the scoring of their answers.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{export,score}")
    e = sub.add_parser(
        "export",
        help="write a kit: index.html for readers, key.json for the study lead",
        description="Draw n images from each workdir (half from its kept real test split, "
        "half from its synthetic test split), shuffle them all in a seeded order and write "
        "index.html (the self-contained study page), key.json (the answer key) and "
        "README.txt into the kit directory.",
    )
    e.add_argument(
        "--workdir",
        action="append",
        required=True,
        metavar="DIR",
        help="a finished run (prepare and synthesize stages); repeat for several runs, "
        "e.g. one per resolution",
    )
    e.add_argument(
        "--n",
        type=int,
        default=100,
        help="images per workdir, half real and half synthetic (default 100)",
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the draw and the order (default 0)")
    e.add_argument(
        "--out", metavar="KIT_DIR", help="kit directory (default: <first workdir>/reader_study)"
    )
    e.add_argument("--force", action="store_true", help="replace a kit already in KIT_DIR")
    s = sub.add_parser(
        "score",
        help="score readers' answers CSVs against the key",
        description="Join the readers' answers to the kit's key; print accuracy, "
        "sensitivity, specificity, binomial test and confidence, overall, per resolution, "
        "per reader and per reader x resolution; write scores.json and scores.md into the kit "
        "directory.",
    )
    s.add_argument("--workdir", metavar="DIR", help="the run whose DIR/reader_study is the kit")
    s.add_argument(
        "--answers",
        action="append",
        required=True,
        metavar="CSV",
        help="a CSV downloaded from the page; repeat for several readers",
    )
    s.add_argument("--kit", metavar="KIT_DIR", help="kit directory (default: DIR/reader_study)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    try:
        if args.command == "export":
            kit_dir = export(
                args.workdir, args.n, seed=args.seed, out=args.out, force=args.force, log=log
            )
            key = load_key(kit_dir)
            print(
                f"kit {key['kit_id']}: {len(key['items'])} images in {kit_dir}\n"
                f"  give readers only {kit_dir / PAGE_FILE}; {KEY_FILE} stays with the study lead"
            )
        else:
            if args.kit is None and args.workdir is None:
                raise ReaderStudyError("say where the kit is: --kit KIT_DIR or --workdir DIR")
            kit_dir = epath.Path(args.kit) if args.kit else epath.Path(args.workdir) / KIT_DIRNAME
            result = score(kit_dir, args.answers, log=log)
            print(scores_table(result))
            print(f"\nwritten: {kit_dir / SCORES_JSON}, {kit_dir / SCORES_MD}")
    except SynthjaxError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
