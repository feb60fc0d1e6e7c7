"""The memorization audit: is any synthetic image a copy of a patient's training image?

Runs inside the `synthesize` stage, on every synthetic image, before anything is released;
its numbers go into `DATASET_CARD.json`. For each synthetic image it finds the nearest real
training image (the images the GAN saw) and the nearest real held-out image (validation
and test, never seen) in two spaces:

- pixels: normalised correlation of the images box-averaged to `privacy.pixel_resolution`
  (mean-centred, unit-norm vectors; 1 = the same picture up to brightness and contrast);
- domain features: cosine similarity of the real-trained classifier's pooled features,
  which also catches a copy that was shifted, flipped or re-textured.

Distance is 1 - similarity. Two questions per space, each a test at a share of
`privacy.alpha` (Bonferroni over every test):

- Copies. The floor is where near copies of training images lie, measured on the run's
  own training images (`near_copies`: exact copies and copies with a new contrast,
  brightness and noise; the floor is the `privacy.floor_quantile` of their distances to
  their originals). It does not depend on the held-out images, so held-out images that
  duplicate a training image (one patient under two ids) cannot lower it. Where no
  held-out image lies below the floor, the floor tells copies from new patients and one
  synthetic image below it fails the audit; where some do (near copies and new patients
  overlap in that space, or duplicates), copies fail it only when significantly more
  frequent than among held-out images (Fisher's exact test, one-sided).
- Memorization. Without it a generator treats the patients it saw and those it did not
  see alike, so the nearest real image of a synthetic one is a training image as often as
  chance says (`seen_share_test`, a permutation test within label combinations). A test
  against held-out images rather than against a fixed rate: an honest generator draws
  typical images, which sit nearer *every* patient than new patients do; the share of close
  images (below the held-out `privacy.percentile`, also reported) rises with that
  typicality, the seen share does not.

`privacy.release_override` (a reason, recorded in the card) releases a dataset that failed.
In a dataset that passes, `synthesize.py` then draws the close images again (or drops
them), so the release holds no image closer to a training patient than all but
`percentile`% of new patients are. Without a finished `classifier_real` the audit runs in
pixels alone, and the card says so.

Nearest neighbours are exact: blocked float32 matrix products on the device mesh (the
reference vectors split over the `data` axis), so the audit costs O(synthetic x real x
dim) flops. The grid of the closest pairs shows real training images: it is written to the
stage directory for the data owner, never into the released dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

from synthjax.core.parallel import DATA_AXIS

# Query rows per block: a [block, num_train] float32 similarity block at 200,000 training
# images is 800 MB, split over the devices.
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


def near_copies(images: np.ndarray, seed: int) -> np.ndarray:
    """uint8 copies of `images` as a copying generator might emit them: a quarter exact,
    the rest with a new contrast (x0.8-1.25), brightness (+-20 grey levels) and Gaussian
    noise (sigma up to 8 grey levels). The floor is calibrated on these."""
    rng = np.random.default_rng([seed, 41])
    n = len(images)
    shape = (n,) + (1,) * (images.ndim - 1)
    exact = rng.random(shape) < 0.25
    contrast = np.where(exact, 1.0, rng.uniform(0.8, 1.25, shape))
    brightness = np.where(exact, 0.0, rng.uniform(-20.0, 20.0, shape))
    sigma = np.where(exact, 0.0, rng.uniform(0.0, 8.0, shape))
    x = images.astype(np.float32)
    x = (x - 128.0) * contrast + 128.0 + brightness + sigma * rng.standard_normal(x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def floor_distance(originals: np.ndarray, copies: np.ndarray, quantile: float) -> float:
    """The floor in one space: the `quantile` of the distances between unit vectors of
    training images and of their near copies (row i of each)."""
    d = 1.0 - np.sum(originals * copies, axis=1, dtype=np.float64)
    return float(np.quantile(np.clip(d, 0.0, 2.0), quantile))


@jax.jit
def _block_nearest(queries: jax.Array, references: jax.Array, valid: jax.Array):
    # HIGHEST: an exact copy must score 1.0 on TPUs too, whose default is bfloat16 passes.
    sims = jnp.dot(queries, references.T, precision=jax.lax.Precision.HIGHEST)
    sims = jnp.where(valid[None, :], sims, -jnp.inf)
    return sims.max(axis=1), sims.argmax(axis=1)


def nearest(
    queries: np.ndarray, references: np.ndarray, mesh: Mesh | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows: (highest similarity float32[N], index of that reference int64[N]).

    Exact, in query blocks of `_QUERY_BLOCK` rows; with a mesh the references are split
    over its `data` axis (each device scores its share, XLA reduces the maxima), so the
    training set needs only 1/devices of each device's memory. Every process holds the
    same inputs and gets the same answer.
    """
    queries = np.asarray(queries, np.float32)
    references = np.asarray(references, np.float32)
    if mesh is None:
        mesh = jax.make_mesh((1,), (DATA_AXIS,), devices=jax.devices()[:1])
    parts = mesh.shape[DATA_AXIS]
    pad = -len(references) % parts
    refs = np.concatenate([references, np.zeros((pad, references.shape[1]), np.float32)])
    valid = np.arange(len(refs)) < len(references)
    split, whole = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())

    def put(x, sharding):
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    refs_dev, valid_dev = put(refs, split), put(valid, split)
    block = min(_QUERY_BLOCK, max(1, len(queries)))
    best = np.empty(len(queries), np.float32)
    index = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        n = len(q)
        if n < block:  # one shape, one compilation
            q = np.concatenate([q, np.zeros((block - n, q.shape[1]), np.float32)])
        sims, idx = _block_nearest(put(q, whole), refs_dev, valid_dev)
        best[start : start + n] = np.asarray(jax.device_get(sims))[:n]
        index[start : start + n] = np.asarray(jax.device_get(idx))[:n]
    return np.clip(best, -1.0, 1.0), index


def excess_p_value(synthetic_close: int, n_synthetic: int, heldout_close: int, n_heldout: int):
    """One-sided exact p-value that synthetic images are close more often than held-out
    ones (Fisher's test on the 2x2 table, conditional on the total close)."""
    table = [
        [synthetic_close, n_synthetic - synthetic_close],
        [heldout_close, n_heldout - heldout_close],
    ]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def seen_share_test(
    pool_nearest: np.ndarray, pool_strata: np.ndarray, n_train: int
) -> tuple[float, float, float]:
    """Is a synthetic image's nearest real image a training image more often than chance?

    pool_nearest: int[N] each synthetic image's nearest real image among the pooled real
    images, the training ones first (0 .. n_train-1), then the held-out ones.
    pool_strata: int[n_train + n_heldout] each real image's label combination.

    A generator that does not memorize treats the patients it saw and those it did not see
    alike, so within a label combination the labels "seen" and "unseen" are exchangeable
    among the real images. Whatever the generator's diversity (an image typical of the
    data is near many patients of both kinds), the number of synthetic images whose nearest
    real image was seen then follows the permutation distribution of those labels within
    each combination: a random "seen" subset of the same size, drawn without replacement,
    whose count of synthetic neighbours has an exact mean and variance (the finite-population
    formulas; synthetic images sharing a nearest neighbour widen it). The p-value is the
    normal tail beyond the observed count. Its power comes from the number of real images,
    whose labels it permutes, not from the number of synthetic ones. Returns (observed
    share, expected share, one-sided p-value).
    """
    pool_strata = np.asarray(pool_strata)
    counts = np.bincount(pool_nearest, minlength=len(pool_strata)).astype(np.float64)
    seen = np.arange(len(pool_strata)) < n_train
    observed = counts[seen].sum()
    mean = var = 0.0
    for stratum in np.unique(pool_strata):
        members = pool_strata == stratum
        c, k, m = counts[members], int(seen[members].sum()), int(members.sum())
        mean += k * c.mean()
        if 0 < k < m:
            var += k * (m - k) / (m - 1) * c.var()
    excess = observed - mean
    p = float(stats.norm.sf(excess / np.sqrt(var))) if var > 0 else float(excess <= 0)
    n = len(pool_nearest)
    return float(observed / n), float(mean / n), p


def space_audit(
    synthetic: np.ndarray,
    heldout: np.ndarray,
    train: np.ndarray,
    *,
    percentile: float,
    floor: float,
    strata: np.ndarray | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """The audit in one space from unit vectors of the three sets (see the module doc).

    Returns a JSON-serialisable dict and, under "_nearest", the arrays (synthetic distance,
    index of the nearest training image) for the grid, and under "_flagged" the mask of
    synthetic images to replace (close or below the floor); `strip_arrays` drops them.
    """
    synth_sim, synth_idx = nearest(synthetic, train, mesh)
    held_sim, _ = nearest(heldout, train, mesh)
    to_held_sim, to_held_idx = nearest(synthetic, heldout, mesh)
    pool_nearest = np.where(synth_sim >= to_held_sim, synth_idx, len(train) + to_held_idx)
    if strata is None:
        strata = np.zeros(len(train) + len(heldout), np.int64)
    seen_share, seen_expected, seen_p = seen_share_test(pool_nearest, strata, len(train))
    synth_d = 1.0 - synth_sim.astype(np.float64)
    held_d = 1.0 - held_sim.astype(np.float64)
    threshold = float(np.percentile(held_d, percentile))
    close = synth_d < threshold
    held_close = int((held_d < threshold).sum())
    below_floor = synth_d < floor
    n_close, n_copies = int(close.sum()), int(below_floor.sum())
    held_below_floor = int((held_d < floor).sum())
    return {
        "threshold_distance": threshold,
        "floor_distance": floor,
        "copies": n_copies,
        "copy_rate": n_copies / len(synth_d),
        "heldout_below_floor": held_below_floor,
        "copies_p_value": excess_p_value(n_copies, len(synth_d), held_below_floor, len(held_d)),
        "close": n_close,
        "close_rate": n_close / len(synth_d),
        "heldout_close_rate": held_close / len(held_d),
        "excess_p_value": excess_p_value(n_close, len(synth_d), held_close, len(held_d)),
        "seen_share": seen_share,
        "seen_share_expected": seen_expected,
        "seen_p_value": seen_p,
        "synthetic_distance": _quantiles(synth_d),
        "heldout_distance": _quantiles(held_d),
        # Below 1: synthetic images sit closer to the training patients than new patients do.
        "median_distance_ratio": _ratio(np.median(synth_d), np.median(held_d)),
        "max_similarity": float(synth_sim.max()),
        "_nearest": (synth_d, synth_idx),
        # Replaced before release: close images, and copies where the floor tells copies from
        # new patients (where it does not, everyone is below it).
        "_flagged": close | (below_floor if held_below_floor == 0 else False),
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
    """Unit vectors of the image sets in one space: the synthetic, held-out and training
    images, and the floor's calibration (training images and their `near_copies`)."""

    synthetic: np.ndarray
    heldout: np.ndarray
    train: np.ndarray
    originals: np.ndarray
    copies: np.ndarray


def decide(spaces: dict[str, dict[str, Any]], *, alpha: float, override: str) -> dict[str, Any]:
    """The release decision. In each space it fails on copies (images below the floor) or
    on memorization (nearest real images that are training images significantly more often
    than chance: `seen_share_test`). Where no held-out image lies below the floor, the
    floor tells copies from new patients, and one copy fails it; where some do (the space
    does not separate them there, or held-out images duplicate training images), copies
    fail it only when significantly more frequent than among held-out images. The tests
    share alpha (Bonferroni); `override` (a non-empty reason) releases a dataset that
    failed. The reasons say why."""
    reasons = []
    passed = True
    alpha_test = alpha / (2 * len(spaces))
    for name, a in spaces.items():
        separates = a["heldout_below_floor"] == 0
        copies_ok = a["copies"] == 0 if separates else a["copies_p_value"] >= alpha_test
        seen_ok = a["seen_p_value"] >= alpha_test
        passed &= copies_ok and seen_ok
        floor = (
            f"{name}: {a['copies']} synthetic image(s) below the copy floor (distance "
            f"{a['floor_distance']:.4f}, where near copies of training images lie)"
        )
        if not separates:
            floor += (
                f"; so are {a['heldout_below_floor']} real held-out image(s), so copies count "
                f"only in excess: p = {a['copies_p_value']:.2g}"
            )
        reasons.append(floor + ("" if copies_ok else ": COPIES"))
        reasons.append(
            f"{name}: the nearest real image is a training one for "
            f"{100 * a['seen_share']:.1f}% of synthetic images, against "
            f"{100 * a['seen_share_expected']:.1f}% without memorization; p = "
            f"{a['seen_p_value']:.2g} ({'not ' if seen_ok else ''}significant at "
            f"{alpha_test:.3g}{'' if seen_ok else ': MEMORIZES'})"
        )
    decision: dict[str, Any] = {
        "releasable": bool(passed or override),
        "audit_passed": bool(passed),
        "alpha": alpha,
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
    floor_quantile: float,
    alpha: float,
    override: str = "",
    strata: np.ndarray | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """The audit in every space, and the release decision; "_flagged" is the mask of
    synthetic images that are close or below the floor in any space."""
    spaces = {
        name: space_audit(
            s.synthetic,
            s.heldout,
            s.train,
            percentile=percentile,
            floor=floor_distance(s.originals, s.copies, floor_quantile),
            strata=strata,
            mesh=mesh,
        )
        for name, s in sets.items()
    }
    first = next(iter(sets.values()))
    flagged = np.logical_or.reduce([a["_flagged"] for a in spaces.values()])
    return {
        "audited_synthetic": len(first.synthetic),
        "heldout": len(first.heldout),
        "train": len(first.train),
        "floor_calibration_images": len(first.originals),
        "percentile": percentile,
        "floor_quantile": floor_quantile,
        # Copies where the floor tells them from new patients (elsewhere everyone is below).
        "copy_rate": max(
            (a["copy_rate"] for a in spaces.values() if not a["heldout_below_floor"]),
            default=0.0,
        ),
        "close_rate": max(a["close_rate"] for a in spaces.values()),
        "flagged": int(flagged.sum()),
        "spaces": spaces,
        **decide(spaces, alpha=alpha, override=override),
        "_flagged": flagged,
    }


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
