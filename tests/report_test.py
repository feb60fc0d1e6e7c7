"""The release verdict and its reasons, from constructed report.json contents."""

import copy

import pytest

from synthjax import report as report_lib


def _privacy(copy_rate, passed, override=None):
    return {
        "copy_rate": copy_rate,
        "close_rate": 0.01,
        "flagged": 3,
        "audit_passed": passed,
        "releasable": passed or override is not None,
        "override": None if override is None else {"reason": override},
        "reasons": [],
    }


GOOD = {
    "privacy": _privacy(0.01, True),
    "tstr_auroc_mean": 0.80,
    "tstr_auroc_mean_ci": [0.75, 0.85],
    "trtr_auroc_mean": 0.86,
    "auroc_gap": 0.06,
    "label_fidelity_auroc_mean": 0.84,
    "label_fidelity_auroc_mean_ci": [0.8, 0.88],
    "discrimination": {
        "per_resolution": [{"resolution": 32, "auroc": 0.7, "auroc_ci": [0.6, 0.8]}]
    },
    "fidelity": {
        "overall": {
            "precision": 0.7,
            "recall": 0.6,
            "real_baseline": {"precision": 0.8, "recall": 0.8},
        }
    },
}


def _with(**changes):
    r = copy.deepcopy(GOOD)
    r.update(changes)
    return r


def test_a_private_useful_faithful_dataset_is_released():
    v = report_lib.verdict(GOOD)
    assert v["decision"] == "release" and not v["refusals"] and not v["caveats"]
    assert len(v["passed"]) == 3


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"privacy": _privacy(0.4, False)}, "the audit failed (copy rate 40.00%"),
        ({"privacy": None}, "privacy: not measured"),
        ({"tstr_auroc_mean": 0.55, "tstr_auroc_mean_ci": [0.48, 0.62]}, "not above chance"),
        ({"tstr_auroc_mean": None, "tstr_auroc_mean_ci": None}, "utility: not measured"),
        (
            {"label_fidelity_auroc_mean": 0.51, "label_fidelity_auroc_mean_ci": [0.47, 0.55]},
            "the generator ignores its labels",
        ),
        (
            {"label_fidelity_auroc_mean": None, "label_fidelity_auroc_mean_ci": None},
            "label fidelity: not measured",
        ),
    ],
)
def test_refusals(changes, words):
    v = report_lib.verdict(_with(**changes))
    assert v["decision"] == "do not release"
    assert any(words in r for r in v["refusals"]), v["refusals"]


def test_caveats_do_not_refuse():
    easy = {"per_resolution": [{"resolution": 32, "auroc": 0.99, "auroc_ci": [0.97, 1.0]}]}
    v = report_lib.verdict(_with(discrimination=easy))
    assert v["decision"] == "release with caveats"
    assert "automated reader" in v["caveats"][0]
    poor = copy.deepcopy(GOOD["fidelity"])
    poor["overall"]["recall"] = 0.1
    v = report_lib.verdict(_with(fidelity=poor))
    assert v["decision"] == "release with caveats" and "recall" in v["caveats"][0]
    pixels_only = dict(GOOD["privacy"], not_audited={"domain_features": "no classifier"})
    v = report_lib.verdict(_with(privacy=pixels_only))
    assert v["caveats"] == ["privacy: not audited in domain_features (no classifier)"]
    overridden = report_lib.verdict(_with(privacy=_privacy(0.3, False, override="IRB ok")))
    assert overridden["decision"] == "release with caveats"
    assert "override" in overridden["caveats"][0] and "IRB ok" in overridden["caveats"][0]


# What every report in these tests has: the run it describes, no AUPRC.
_RUN = {
    "dataset": "chexpert",
    "phantom": True,
    "resolution": 32,
    "gan_arch": "cpd",
    "num_classes": 4,
    "images": {"train": 10},
    "gan_kimg": 1.0,
    "trtr_auprc_mean": None,
    "trtr_auprc_mean_ci": None,
    "tstr_auprc_mean": None,
    "tstr_auprc_mean_ci": None,
}


def test_markdown_starts_with_the_verdict():
    r = {
        **_RUN,
        "trtr_auroc_mean": 0.9,
        "trtr_auroc_mean_ci": [0.8, 1.0],
        "auroc_gap": 0.1,
        "auroc_gap_ci": [0.0, 0.2],
        "per_label": [],
        "per_combination": [],
        "labels_excluded": {},
        "figures": {"fidelity": "report_fidelity.png"},
        "wall_s": {"prepare": 1.0},
        "state_sha256": {"prepare": None},
        **{k: v for k, v in GOOD.items() if k not in ("fidelity", "privacy", "discrimination")},
    }
    r["verdict"] = report_lib.verdict(r)
    text = report_lib.report_markdown(r)
    assert text.index("## Verdict: **do not release**") < text.index("## Utility")
    assert "privacy: not measured" in text and "![fidelity](report_fidelity.png)" in text


def _utility_report(**extra):
    """A report with two labels and one combination, shaped like the evaluate stage's."""
    row = {"trtr_ci": [0.6, 0.9], "tstr_ci": [0.3, 0.6], "gap_ci": [0.1, 0.4], "gap": 0.3}
    r = {
        **_RUN,
        "trtr_auroc_mean_ci": [0.6, 0.9],
        "auroc_gap_ci": [0.0, 0.3],
        "per_label": [
            {
                **row,
                "label": "Edema",
                "positives": 9,
                "trtr_auroc": 0.8,
                "tstr_auroc": 0.6,
                "delong_p": 0.012,
                "delong_p_holm": 0.036,
                "trtr_auroc_study_style": 0.8,
                "tstr_auroc_study_style": 0.6,
            },
            {
                **row,
                "label": "Effusion",
                "positives": 7,
                "trtr_auroc": 0.7,
                "tstr_auroc": 0.45,
                "delong_p": 0.02,
                "delong_p_holm": 0.04,
                "trtr_auroc_study_style": 0.7,
                "tstr_auroc_study_style": 0.55,
            },
        ],
        "per_combination": [
            {
                "combination": "Edema",
                "test_images": 5,
                "trtr_auroc": 0.9,
                "trtr_ci": [0.8, 1.0],
                "tstr_auroc": 0.7,
                "tstr_ci": [0.5, 0.9],
                "delong_p": 0.3,
                "delong_p_holm": 0.3,
            },
        ],
        "labels_excluded": {},
        "figures": {},
        "wall_s": {"prepare": 1.0},
        "state_sha256": {"prepare": None},
        **{k: v for k, v in GOOD.items() if k not in ("fidelity", "privacy", "discrimination")},
        "trtr_auroc_mean": 0.75,
        "tstr_auroc_mean": 0.525,
        **extra,
    }
    r["verdict"] = report_lib.verdict(r)
    return r


def test_markdown_shows_raw_and_holm_p_and_the_study_style_auroc():
    text = report_lib.report_markdown(
        _utility_report(
            trtr_auroc_mean_study_style=0.75,
            tstr_auroc_mean_study_style=0.575,
            multiplicity={"method": "holm", "tests": 3},
        )
    )
    assert "| DeLong p | Holm p |" in text
    assert "| 0.012 | 0.036 |" in text and "| 0.02 | 0.04 |" in text  # per label
    assert "| 0.3 | 0.3 |" in text  # per combination
    assert "adjusted by Holm's step-down method over all 3 DeLong tests" in text
    assert "| TRTR, study-style (AUC < 0.5 flipped) | 0.750 | |" in text
    assert "| TSTR, study-style (AUC < 0.5 flipped) | 0.575 | |" in text
    assert "The study flipped AUC < 0.5; ours does not" in text
    assert "Flipped: TSTR Effusion 0.450 -> 0.550." in text


def test_markdown_of_a_report_without_them():
    # Reports written before the Holm and study-style keys existed still render.
    r = _utility_report()
    for row in r["per_label"] + r["per_combination"]:
        row.pop("delong_p_holm")
    text = report_lib.report_markdown(r)
    assert "study-style" not in text and "Holm's step-down" not in text
    assert "| 0.012 | n/a |" in text


def test_markdown_says_what_the_intervals_resample_and_how_the_classifiers_saw_images():
    r = _utility_report(
        interval_level="patient",
        test_patients=13,
        test_images=93,
        classifier_protocol={"name": "study", "input_resolution": 224, "initial_weights": None},
    )
    text = "\n".join(report_lib._utility_lines(r))
    assert "patient level (13 test patients, 93 images)" in text
    # Without the image-level keys there is nothing to set beside the patient-level ones.
    assert "width ratio" not in text
    r.update(
        tstr_auroc_mean_ci=[0.4, 0.6],
        tstr_auroc_mean_ci_image_level=[0.45, 0.55],
        auroc_gap_ci=[0.1, 0.2],
        auroc_gap_ci_image_level=[0.1, 0.3],
    )
    text = "\n".join(report_lib._utility_lines(r))
    assert "| TSTR mean AUROC | [0.400, 0.600] (0.200) | [0.450, 0.550] (0.100) | 2.00x |" in text
    assert "| gap TRTR - TSTR | [0.100, 0.200] (0.100) | [0.100, 0.300] (0.200) | 0.50x |" in text
    assert "TRTR mean AUROC |" not in text  # no image-level TRTR interval in this report
    assert "the study's protocol (3 channels, 224 x 224" in text and "RANDOM weights" in text
    older = "\n".join(report_lib._utility_lines(_utility_report()))
    assert "patient level" not in older and "protocol" not in older
