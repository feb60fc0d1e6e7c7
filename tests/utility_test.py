"""Tests of synthjax.eval.utility: label-combination scores and the labels evaluated."""

import math

import numpy as np
import pytest

from synthjax.eval import utility


def test_combination_scores_single_out_each_combination():
    combos = np.array([[0, 0], [1, 0], [1, 1]], np.float64)
    labels = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    member = utility.combination_membership(labels, combos)
    np.testing.assert_array_equal(member, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    probs = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    scores = utility.combination_log_scores(probs, combos)
    np.testing.assert_array_equal(scores[:3].argmax(axis=1), [0, 1, 2])
    assert scores[1, 1] == pytest.approx(math.log(0.9) + math.log(0.9))


def test_evaluated_labels_need_positives_and_negatives():
    labels = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 1, 0]], np.float32)
    np.testing.assert_array_equal(utility.evaluated_labels(labels, 1), [True, True, True])
    np.testing.assert_array_equal(utility.evaluated_labels(labels, 2), [False, False, True])


def test_prediction_patients_line_up_with_the_scored_records():
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    patients = np.array(["p1", "p1", "p2"])
    got = utility.prediction_patients(patients, labels, labels.astype(np.float64))
    assert got.tolist() == ["p1", "p1", "p2"]
    with pytest.raises(RuntimeError, match="not the prepared test split"):
        utility.prediction_patients(patients, labels, labels[::-1])  # another order
    with pytest.raises(RuntimeError, match="rerun the classifier stages"):
        utility.prediction_patients(patients, labels, labels[:2])  # another count
