"""The reader-study kit's export: real and synthetic test images drawn from workdirs,
shuffled, and written as one self-contained page (`index.html`), its answer key
(`key.json`) and a README. What the kit holds and why is in the package's docstring
(`synthjax/reader_study/__init__.py`); the scoring of the answers is `scores.py`.

This module needs no JAX: it reads the shards with the dataset loader only.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import importlib.resources
import io
import json
import os
from collections.abc import Callable, Sequence
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

DISPLAY_TARGET_PX = 512  # images are shown at an integer multiple of their size near this
DISPLAY_MIN_PX = 256


class ReaderStudyError(SynthjaxError):
    """A kit or an answers file that cannot be used; the message says what to do."""


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


def spread_over_patients(patients: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """int[n], sorted: positions in `patients` drawn so that as many patients as possible
    appear, each as few times as possible: one image of every patient (in a seeded order)
    before any patient's second. A reader shown two images of one patient can tell a real
    image by its twin, and the kit would then measure recognition, not realism."""
    _, ids = np.unique(np.asarray(patients), return_inverse=True)
    ids = ids.reshape(-1)
    shuffled = rng.permutation(len(ids))  # a random image order within each patient
    patient_rank = rng.permutation(int(ids.max()) + 1)[ids[shuffled]]
    turn = np.empty(len(ids), np.int64)  # 0 for a patient's first image, 1 its second, ...
    order = np.lexsort((np.arange(len(ids)), patient_rank))
    starts = np.r_[0, np.flatnonzero(np.diff(patient_rank[order])) + 1]
    sizes = np.diff(np.r_[starts, len(ids)])
    turn[order] = np.arange(len(ids)) - np.repeat(starts, sizes)
    chosen = np.lexsort((patient_rank, turn))[:n]  # every first image, then every second, ...
    return np.sort(shuffled[chosen])


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
    if real.has_patients:
        real_pick = spread_over_patients(real.patients[indices], n_real, rng)
    else:
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


def load_key(kit_dir: str | os.PathLike) -> dict[str, Any]:
    path = epath.Path(kit_dir) / KEY_FILE
    if not path.exists():
        raise ReaderStudyError(
            f"no answer key at {path}: pass --kit with the directory `export` wrote (it holds "
            "key.json beside index.html)"
        )
    return _read_json(path)
