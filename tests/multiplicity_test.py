"""Holm's adjustment against statsmodels, and the study-style (flipped) AUROC on hand-made cases."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from synthjax.eval import multiplicity, study_auroc
from synthjax.stages.evaluate import with_holm_and_study_style


def _statsmodels_holm(p):
    return multipletests(np.asarray(p, dtype=np.float64), method="holm")[1]


def test_holm_on_a_worked_example():
    # m = 4; sorted 0.01, 0.02, 0.03, 0.5 -> 4*0.01, max(0.04, 3*0.02), max(.., 2*0.03), 0.5.
    got = multiplicity.holm([0.03, 0.5, 0.01, 0.02])
    assert got == pytest.approx([0.06, 0.5, 0.04, 0.06])
    np.testing.assert_allclose(got, _statsmodels_holm([0.03, 0.5, 0.01, 0.02]))


@settings(max_examples=40, deadline=None)  # statsmodels: ~0.05 s a call
@given(
    st.lists(
        st.one_of(
            st.floats(0.0, 1.0),
            st.sampled_from([0.0, 1e-300, 0.05, 0.05, 1.0]),  # ties, extremes
        ),
        min_size=1,
        max_size=15,
    )
)
def test_holm_matches_statsmodels(p):
    np.testing.assert_allclose(multiplicity.holm(p), _statsmodels_holm(p), rtol=1e-12, atol=0)


def test_undefined_p_values_are_left_out_of_the_family():
    p = [0.01, None, 0.04, math.nan, 0.02]
    got = multiplicity.holm(p)
    assert got[1] is None and got[3] is None
    defined = [0.01, 0.04, 0.02]  # m = 3, not 5
    np.testing.assert_allclose([got[0], got[2], got[4]], _statsmodels_holm(defined))
    assert multiplicity.holm([]) == [] and multiplicity.holm([None]) == [None]


def test_holm_refuses_values_that_are_not_p_values():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        multiplicity.holm([0.2, 1.5])


def test_one_family_over_labels_and_combinations():
    labels = [{"delong_p": 0.001}, {"delong_p": 0.3}, {"delong_p": None}]
    combos = [{"delong_p": 0.02}, {"delong_p": 0.04}]
    m = multiplicity.add_holm_adjusted([labels, combos])
    assert m == 4
    expected = _statsmodels_holm([0.001, 0.3, 0.02, 0.04])
    got = [labels[0], labels[1], combos[0], combos[1]]
    np.testing.assert_allclose([r["delong_p_holm"] for r in got], expected)
    assert labels[2]["delong_p_holm"] is None
    assert [r["delong_p"] for r in got] == [0.001, 0.3, 0.02, 0.04]  # raw p untouched


@pytest.mark.parametrize(
    "auc, flipped",
    [(0.8, 0.8), (0.5, 0.5), (0.45, 0.55), (0.0, 1.0), (1.0, 1.0), (None, None)],
)
def test_study_style_flips_only_below_half(auc, flipped):
    got = study_auroc.study_style_auroc(auc)
    assert got == (None if flipped is None else pytest.approx(flipped))


def test_study_style_mean_by_hand():
    # Ours: (0.9 + 0.4 + 0.48) / 3 = 0.5933; the study's: (0.9 + 0.6 + 0.52) / 3 = 0.6733.
    assert study_auroc.study_style_mean([0.9, 0.4, 0.48, None]) == pytest.approx(2.02 / 3)
    assert study_auroc.study_style_mean([None, math.nan]) is None


def test_the_evaluate_stage_adds_both_after_its_rows():
    utility = {
        "trtr_auroc_mean": 0.75,
        "tstr_auroc_mean": (0.6 + 0.45) / 2,
        "per_label": [
            {"label": "A", "trtr_auroc": 0.8, "tstr_auroc": 0.6, "delong_p": 0.01},
            {"label": "B", "trtr_auroc": 0.7, "tstr_auroc": 0.45, "delong_p": 0.04},
        ],
        "per_combination": [{"combination": "A", "trtr_auroc": 0.9, "delong_p": 0.03}],
    }
    out = with_holm_and_study_style(utility)
    assert out["multiplicity"]["tests"] == 3 and out["multiplicity"]["method"] == "holm"
    np.testing.assert_allclose(
        [out["per_label"][0]["delong_p_holm"], out["per_label"][1]["delong_p_holm"]],
        _statsmodels_holm([0.01, 0.04, 0.03])[:2],
    )
    assert out["per_combination"][0]["delong_p_holm"] == pytest.approx(0.06)
    assert out["per_label"][1]["tstr_auroc_study_style"] == pytest.approx(0.55)
    assert out["per_label"][1]["tstr_auroc"] == 0.45  # ours stays as measured
    assert out["tstr_auroc_mean_study_style"] == pytest.approx(0.575)
    assert out["trtr_auroc_mean_study_style"] == pytest.approx(out["trtr_auroc_mean"])
