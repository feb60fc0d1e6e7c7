"""Benchmark subset rules: ranking, nesting, caps, and refusals."""

import numpy as np
import pytest

from synthjax.core.errors import ConfigError
from synthjax.data.subsets import label_combinations, match_combinations, select_subset


def _labels(n, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, k)) < rng.uniform(0.1, 0.5, k)).astype(np.float32)


def test_combinations_ranked_by_count_with_stable_ties():
    labels = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 1], [0, 0]], np.float32)
    lc = label_combinations(labels)
    assert lc.counts.tolist() == [2, 2, 1, 1]
    # Ties break by the vector as a bit string, ascending.
    assert lc.combos.tolist() == [[0, 1], [1, 0], [0, 0], [1, 1]]
    np.testing.assert_array_equal(lc.combos[lc.assignment], labels.astype(np.uint8))


def test_num_classes_keeps_most_frequent_and_is_nested():
    splits = {
        "train": _labels(2000),
        "validation": _labels(300, seed=1),
        "test": _labels(300, seed=2),
    }
    lc = label_combinations(splits["train"])
    small = select_subset(splits, num_classes=3)
    large = select_subset(splits, num_classes=6)
    np.testing.assert_array_equal(small.combos, lc.combos[:3])
    assert set(small.indices["train"]) <= set(large.indices["train"])
    assert set(small.indices["test"]) <= set(large.indices["test"])
    for split, idx in small.indices.items():
        assert (match_combinations(splits[split][idx], small.combos) >= 0).all()
    # Every train image of a kept combination is kept when there is no cap.
    assert len(small.indices["train"]) == lc.counts[:3].sum()


def test_samples_per_class_caps_train_only_and_is_nested():
    splits = {
        "train": _labels(3000),
        "validation": _labels(400, seed=1),
        "test": _labels(400, seed=2),
    }
    a = select_subset(splits, num_classes=4, samples_per_class=50, seed=3)
    b = select_subset(splits, num_classes=4, samples_per_class=120, seed=3)
    counts = a.counts(splits)
    assert counts["train"] == [50, 50, 50, 50]
    assert set(a.indices["train"]) <= set(b.indices["train"])
    np.testing.assert_array_equal(a.indices["test"], b.indices["test"])


def test_too_many_classes_is_refused_naming_the_field():
    splits = {"train": _labels(200, k=2), "test": _labels(20, k=2)}
    with pytest.raises(ConfigError, match=r"dataset\.num_classes.*only 4"):
        select_subset(splits, num_classes=5)


def test_min_class_count_drops_rare_combinations():
    labels = np.array([[1, 0]] * 5 + [[0, 1]] * 2 + [[1, 1]], np.float32)
    subset = select_subset({"train": labels}, min_class_count=2)
    assert subset.combos.tolist() == [[1, 0], [0, 1]]
