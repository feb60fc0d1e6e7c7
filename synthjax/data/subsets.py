"""Benchmark subsets: which label combinations and how many images of each.

A "class" is one unique multi-hot label vector (the study's definition). `num_classes`
keeps the N most frequent combinations in the training split; `samples_per_class` takes
exactly k training images of each, and `validation_per_class` / `test_per_class` exactly as
many validation / test images (the study's benchmarks fix all three). A split with fewer
images of a kept combination than asked is refused, naming the combination and what it
has: a benchmark setting is never shrunk silently. All are nested: the top 4 combinations
are inside the top 10, and the first 200 images of a class (for a fixed seed) are inside
its first 500, so a sweep over either compares like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synthjax.core.errors import ConfigError


@dataclass(frozen=True)
class LabelCombinations:
    """Unique label vectors of a split, most frequent first.

    combos: uint8[M, K] unique label vectors, sorted by count (descending) then by the
        vector itself (ascending, as a bit string), so ties break the same way everywhere.
    counts: int64[M] images per combination.
    assignment: int64[N] index into `combos` of each image's label vector.
    """

    combos: np.ndarray
    counts: np.ndarray
    assignment: np.ndarray


def label_combinations(labels: np.ndarray) -> LabelCombinations:
    """labels: float32[N, K] multi-hot (0/1) -> its unique combinations, most frequent first."""
    bits = (np.asarray(labels) > 0.5).astype(np.uint8)
    if bits.ndim != 2:
        raise ValueError(f"labels must be [N, K], got shape {bits.shape}")
    uniq, inverse, counts = np.unique(bits, axis=0, return_inverse=True, return_counts=True)
    # np.unique sorts lexicographically; a stable sort on -count keeps that as the tie-break.
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return LabelCombinations(uniq[order], counts[order], rank[np.ravel(inverse)])


def match_combinations(labels: np.ndarray, combos: np.ndarray) -> np.ndarray:
    """int64[N]: index into combos of each label vector, or -1 when it is not one of them."""
    bits = (np.asarray(labels) > 0.5).astype(np.uint8)
    lookup = {row.tobytes(): i for i, row in enumerate(np.asarray(combos, np.uint8))}
    return np.array([lookup.get(row.tobytes(), -1) for row in bits], np.int64)


@dataclass(frozen=True)
class Subset:
    """The kept combinations and the kept indices of each split.

    combos: uint8[M, K] kept label combinations (most frequent in train first).
    indices: {split: int64[n]} kept record indices, ascending.
    """

    combos: np.ndarray
    indices: dict[str, np.ndarray]

    def counts(self, split_labels: dict[str, np.ndarray]) -> dict[str, list[int]]:
        """Images per kept combination in each split (for reports)."""
        out = {}
        for split, idx in self.indices.items():
            match = match_combinations(split_labels[split][idx], self.combos)
            out[split] = np.bincount(match, minlength=len(self.combos)).tolist()
        return out


# The subset rules in `config.dataset`, by the names `select_subset` takes them under.
SUBSET_RULES = (
    "num_classes",
    "samples_per_class",
    "validation_per_class",
    "test_per_class",
    "min_class_count",
)
PER_CLASS_FIELDS = {
    "train": "dataset.samples_per_class",
    "validation": "dataset.validation_per_class",
    "test": "dataset.test_per_class",
}


def describe_combination(combo: np.ndarray, label_names: Sequence[str] | None) -> str:
    """'Lung Opacity + Pleural Effusion' (or 'no label'); label indices without names."""
    on = np.flatnonzero(np.asarray(combo) > 0)
    if not len(on):
        return "no label"
    return " + ".join(label_names[i] if label_names else f"label {i}" for i in on)


# Each split draws its own permutation; train's is the plain seed (as it always was).
_SPLIT_SEEDS = {"train": (), "validation": (1,), "test": (2,)}


def _first_per_class(
    assignment: np.ndarray, num_combos: int, per_class: int, split_seed: tuple, seed: int
) -> np.ndarray:
    """bool[N]: the first `per_class` images of each combination in one seeded permutation
    of the split, so a smaller count is a subset of a larger one (nested benchmarks)."""
    rng = np.random.default_rng([seed, *split_seed] if split_seed else seed)
    order = rng.permutation(len(assignment))
    rank_in_class = np.empty(len(assignment), np.int64)
    seen = np.zeros(num_combos, np.int64)
    for i in order:
        c = assignment[i]
        rank_in_class[i] = seen[c]
        seen[c] += 1
    return rank_in_class < per_class


def _refuse_short(
    split: str,
    per_class: int,
    counts: np.ndarray,
    combos: np.ndarray,
    label_names: Sequence[str] | None,
) -> None:
    short = np.flatnonzero(counts < per_class)
    if not len(short):
        return
    worst = short[np.argmin(counts[short])]
    field = PER_CLASS_FIELDS[split]
    raise ConfigError(
        field,
        f"{per_class} {split} images per label combination requested, but {len(short)} of the "
        f"{len(combos)} kept combinations have fewer; the shortest, #{worst + 1} "
        f"({describe_combination(combos[worst], label_names)}), has {int(counts[worst])}",
        f"use {field} <= {int(counts.min())}, keep fewer label combinations "
        "(dataset.num_classes), use more data, or 0 to keep every image",
    )


def select_subset(
    split_labels: dict[str, np.ndarray],
    *,
    num_classes: int = 0,
    samples_per_class: int = 0,
    validation_per_class: int = 0,
    test_per_class: int = 0,
    min_class_count: int = 0,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
) -> Subset:
    """Applies the benchmark subset rules.

    split_labels: {split: float32[N, K]} with a `train` entry; combinations are ranked on
        train only. A split keeps every image whose combination is kept, unless its
        per-class count (`samples_per_class` for train, `validation_per_class`,
        `test_per_class`) is set: then exactly that many of each kept combination.
    label_names: names of the K labels, for refusals people can read.

    Raises:
      ConfigError: more combinations than the data has, or a split with fewer images of
        a kept combination than its per-class count; the message names the field.
    """
    train = label_combinations(split_labels["train"])
    keep = np.ones(len(train.combos), bool)
    if min_class_count > 0:
        keep &= train.counts >= min_class_count
    available = int(keep.sum())
    if num_classes > 0:
        if num_classes > available:
            raise ConfigError(
                "dataset.num_classes",
                f"{num_classes} label combinations requested but the training split has "
                f"only {available}"
                + (f" with at least {min_class_count} images" if min_class_count else ""),
                f"use at most {available}, or 0 for all",
            )
        keep &= np.cumsum(keep) <= num_classes
    kept_ids = np.flatnonzero(keep)
    combos = train.combos[kept_ids]

    per_class = {
        "train": samples_per_class,
        "validation": validation_per_class,
        "test": test_per_class,
    }
    indices = {}
    for split, labels in split_labels.items():
        match = match_combinations(labels, combos)
        keep_split = match >= 0
        wanted = per_class.get(split, 0)
        if wanted > 0:
            counts = np.bincount(match[keep_split], minlength=len(combos))
            _refuse_short(split, wanted, counts, combos, label_names)
            # Images outside the kept combinations form one extra class nobody takes from.
            match = np.where(keep_split, match, len(combos))
            keep_split &= _first_per_class(
                match, len(combos) + 1, wanted, _SPLIT_SEEDS[split], seed
            )
        indices[split] = np.flatnonzero(keep_split)
    return Subset(combos, indices)
