"""The memorization audit: is any synthetic image a copy of a patient's training image?

Runs inside the `synthesize` stage, before the dataset is declared releasable, and its
numbers go into `DATASET_CARD.json`. For every audited synthetic image it finds the nearest
real training image (the images the GAN saw) in two spaces:

- pixels: normalised correlation of the images box-averaged to `privacy.pixel_resolution`
  (mean-centred, unit-norm vectors; 1 = the same picture up to brightness and contrast);
- domain features: cosine similarity of the real-trained classifier's pooled features,
  which also catches a copy that was shifted, flipped or re-textured.

Distance is 1 - similarity. The reference distribution is the same distance for real
held-out images (validation and test, never seen by the GAN): how close a new patient
naturally comes to some training patient. A synthetic image closer to its nearest training
image than the `privacy.percentile`-th percentile of the held-out distances counts as a
copy; a generator that does not memorize has a copy rate near percentile / 100, and one
that copies has a copy rate near 1. The dataset is marked releasable only when the copy rate
in every space is at most `privacy.max_copy_rate`, or when `privacy.release_override` gives
a reason (recorded in the card). Without a finished `classifier_real` the audit runs in
pixels alone, and the card says so.

Nearest neighbours are exact (blocked float32 matrix products), so the audit costs
O(synthetic x train x dim): seconds at the study's sizes on an accelerator host; cap the
audited images with `privacy.max_synthetic`. The grid of the closest pairs shows real
training images: it is written to the stage directory for the data owner, never into the
released dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from synthjax.data import pipeline

# Query rows per block: a [block, num_train] float32 similarity block at 100,000 training
# images is 400 MB.
_QUERY_BLOCK = 1024


def block_mean(images: np.ndarray, resolution: int) -> np.ndarray:
    """float32[N, r, r, C]: uint8[N, H, W, C] averaged over (H/r x W/r) blocks."""
    n, h, w, c = images.shape
    if h % resolution or w % resolution:
        raise ValueError(f"images of {h}x{w} cannot be averaged to {resolution}x{resolution}")
    x = images.astype(np.float32).reshape(n, resolution, h // resolution, resolution, -1, c)
    return x.mean(axis=(2, 4))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length; all-zero rows stay zero."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def pixel_vectors(images: np.ndarray, resolution: int) -> np.ndarray:
    """float32[N, r*r*C]: the vectors whose dot product is the normalised correlation."""
    x = block_mean(images, min(resolution, images.shape[1])).reshape(len(images), -1)
    return unit_rows(x - x.mean(axis=1, keepdims=True))


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows: (highest similarity float32[N], index of that reference int64[N])."""
    best = np.empty(len(queries), np.float32)
    index = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), _QUERY_BLOCK):
        sims = queries[start : start + _QUERY_BLOCK] @ references.T
        index[start : start + len(sims)] = sims.argmax(axis=1)
        best[start : start + len(sims)] = sims[
            np.arange(len(sims)), index[start : start + len(sims)]
        ]
    return np.clip(best, -1.0, 1.0), index


def space_audit(
    synthetic: np.ndarray,
    heldout: np.ndarray,
    train: np.ndarray,
    *,
    percentile: float,
) -> dict[str, Any]:
    """The audit in one space from unit vectors of the three sets (see the module doc).

    Returns a JSON-serialisable dict and, under "_nearest", the arrays (synthetic distance,
    index of the nearest training image) for the grid; `strip_arrays` drops them.
    """
    synth_sim, synth_idx = nearest(synthetic, train)
    held_sim, _ = nearest(heldout, train)
    synth_d = 1.0 - synth_sim.astype(np.float64)
    held_d = 1.0 - held_sim.astype(np.float64)
    threshold = float(np.percentile(held_d, percentile))
    copies = synth_d < threshold
    expected = percentile / 100.0
    n_copies = int(copies.sum())
    # One-sided: are there more copies than a generator drawing new patients would give?
    excess = stats.binomtest(n_copies, len(synth_d), expected, alternative="greater")
    return {
        "threshold_distance": threshold,
        "copy_rate": n_copies / len(synth_d),
        "copies": n_copies,
        "expected_copy_rate": expected,
        "excess_p_value": float(excess.pvalue),
        "synthetic_distance": _quantiles(synth_d),
        "heldout_distance": _quantiles(held_d),
        # Below 1: synthetic images sit closer to the training patients than new patients do.
        "median_distance_ratio": _ratio(np.median(synth_d), np.median(held_d)),
        "max_similarity": float(synth_sim.max()),
        "_nearest": (synth_d, synth_idx),
    }


def _quantiles(d: np.ndarray) -> dict[str, float]:
    q = np.percentile(d, [1, 5, 50])
    return {"min": float(d.min()), "p1": float(q[0]), "p5": float(q[1]), "median": float(q[2])}


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def strip_arrays(audit: dict[str, Any]) -> dict[str, Any]:
    """The audit without the private arrays: what the card and the summary keep."""
    out = {k: v for k, v in audit.items() if not k.startswith("_")}
    if "spaces" in out:
        out["spaces"] = {s: strip_arrays(v) for s, v in out["spaces"].items()}
    return out


@dataclasses.dataclass(frozen=True)
class AuditSets:
    """Unit vectors of the three image sets in one space."""

    synthetic: np.ndarray
    heldout: np.ndarray
    train: np.ndarray


def decide(
    spaces: dict[str, dict[str, Any]], *, max_copy_rate: float, override: str
) -> dict[str, Any]:
    """The release decision: releasable iff every space's copy rate <= max_copy_rate,
    unless `override` (a non-empty reason) says otherwise; the reasons say why."""
    reasons = []
    passed = True
    for name, audit in spaces.items():
        ok = audit["copy_rate"] <= max_copy_rate
        passed &= ok
        reasons.append(
            f"{name}: {audit['copies']} of the audited synthetic images "
            f"({100 * audit['copy_rate']:.2f}%) are closer to a training image than "
            f"{audit['expected_copy_rate']:.0%} of real held-out images are "
            f"({'within' if ok else 'above'} the {100 * max_copy_rate:.2f}% limit)"
        )
    decision: dict[str, Any] = {
        "releasable": bool(passed or override),
        "audit_passed": bool(passed),
        "max_copy_rate": max_copy_rate,
        "reasons": reasons,
        "override": None,
    }
    if override and not passed:
        decision["override"] = {"reason": override}
        reasons.append(f"released despite the audit by override: {override!r}")
    return decision


def memorization_audit(
    sets: dict[str, AuditSets],
    *,
    percentile: float,
    max_copy_rate: float,
    override: str = "",
) -> dict[str, Any]:
    """The audit in every space, and the release decision."""
    if not 0.0 < percentile < 50.0:
        raise ValueError(f"privacy.percentile must be in (0, 50), got {percentile}")
    spaces = {
        name: space_audit(s.synthetic, s.heldout, s.train, percentile=percentile)
        for name, s in sets.items()
    }
    first = next(iter(sets.values()))
    return {
        "audited_synthetic": len(first.synthetic),
        "heldout": len(first.heldout),
        "train": len(first.train),
        "percentile": percentile,
        "copy_rate": max(a["copy_rate"] for a in spaces.values()),
        "spaces": spaces,
        **decide(spaces, max_copy_rate=max_copy_rate, override=override),
    }


def vectors_of(
    source: Any,
    indices: np.ndarray,
    *,
    features: Callable[[np.ndarray], np.ndarray] | None,
    pixel_resolution: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixel unit vectors, feature unit vectors or None without `features`) of the records
    `indices`, streamed in batches so no full-resolution copy of a split is held."""
    pixels, feats = [], []
    for i, batch in enumerate(pipeline.eval_batches(source, indices, batch_size=batch_size)):
        images = batch["image"][batch["mask"]]
        pixels.append(pixel_vectors(images, pixel_resolution))
        if features is not None:
            feats.append(unit_rows(features(images)))
        if progress is not None:
            progress(i + 1)
    return np.concatenate(pixels), np.concatenate(feats) if feats else None


def seeded_subset(indices: np.ndarray, limit: int, seed: int, stream: int) -> np.ndarray:
    """At most `limit` (0 = all) of `indices`, a seeded choice, in their original order."""
    indices = np.asarray(indices)
    if limit <= 0 or len(indices) <= limit:
        return indices
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(indices, limit, replace=False))


def closest_pairs(audit: dict[str, Any], space: str, count: int) -> list[tuple[int, int, float]]:
    """The `count` synthetic images nearest to a training image in `space`:
    (position among the audited synthetic images, position among the training images,
    distance), closest first."""
    distance, index = audit["spaces"][space]["_nearest"]
    order = np.argsort(distance, kind="stable")[:count]
    return [(int(i), int(index[i]), float(distance[i])) for i in order]


def pairs_grid_rows(
    pairs: Sequence[tuple[int, int, float]],
    synthetic_image: Callable[[int], np.ndarray],
    train_image: Callable[[int], np.ndarray],
    *,
    threshold: float,
    pairs_per_row: int = 4,
) -> tuple[np.ndarray, list[str]]:
    """uint8[R, 2 * pairs_per_row, H, W, C]: each pair as (synthetic, its nearest training
    image) side by side, closest first; row titles give the rows' distance range and how
    many pairs are copies. A short last row is padded with white cells."""
    cells = [np.stack([synthetic_image(s), train_image(t)]) for s, t, _ in pairs]
    blank = np.full_like(cells[0], 255)
    rows, titles = [], []
    for start in range(0, len(cells), pairs_per_row):
        chunk = cells[start : start + pairs_per_row]
        d = [dist for _, _, dist in pairs[start : start + pairs_per_row]]
        chunk += [blank] * (pairs_per_row - len(chunk))
        rows.append(np.concatenate(chunk))
        copies = sum(x < threshold for x in d)
        titles.append(f"d {d[0]:.3f}-{d[-1]:.3f}" + (f", {copies} COPY" if copies else ""))
    return np.stack(rows), titles
