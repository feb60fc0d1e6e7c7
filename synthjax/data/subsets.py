"""Benchmark subsets: which label combinations and how many images of each.

A "class" is one unique multi-hot label vector (the study's definition). `num_classes`
keeps the N most frequent combinations in the training split; `samples_per_class` keeps at
most k training images of each. Both are nested: the top 4 combinations are inside the top
10, and the first 200 images of a class (for a fixed seed) are inside its first 500, so a
sweep over either compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthjax.errors import ConfigError


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


def select_subset(
    split_labels: dict[str, np.ndarray],
    *,
    num_classes: int = 0,
    samples_per_class: int = 0,
    min_class_count: int = 0,
    seed: int = 0,
) -> Subset:
    """Applies the benchmark subset rules.

    split_labels: {split: float32[N, K]} with a `train` entry; combinations are ranked on
        train only. Validation and test keep every image whose combination is kept;
        `samples_per_class` caps training images only.
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

    in_train = np.isin(train.assignment, kept_ids)
    if samples_per_class > 0:
        rng = np.random.default_rng(seed)
        # One fixed permutation of the whole split: taking its first k members of a class
        # makes smaller k a subset of larger k.
        order = rng.permutation(len(train.assignment))
        rank_in_class = np.zeros(len(order), np.int64)
        seen = np.zeros(len(train.combos), np.int64)
        for i in order:
            c = train.assignment[i]
            rank_in_class[i] = seen[c]
            seen[c] += 1
        in_train &= rank_in_class < samples_per_class
    indices = {"train": np.flatnonzero(in_train)}
    for split, labels in split_labels.items():
        if split != "train":
            indices[split] = np.flatnonzero(match_combinations(labels, combos) >= 0)
    return Subset(combos, indices)
