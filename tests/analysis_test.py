"""synthjax.analysis: workdirs under a root -> one tidy DataFrame, and the study's plot."""

import json

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

from synthjax import analysis


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _run(root, name, *, classes, arch, seed, trtr, tstr, report=True):
    workdir = root / name
    config = {"seed": seed, "dataset": {"num_classes": classes}, "gan": {"arch": arch}}
    _write(workdir / "config.json", config)
    for stage, wall in (("prepare", 1.0), ("classifier_real", 2.0), ("gan", 3.0)):
        _write(
            workdir / stage / "summary.json",
            {"stage": stage, "wall_s": wall, "state_sha256": stage},
        )
    if report:
        _write(
            workdir / "report.json",
            {
                "trtr_auroc_mean": trtr,
                "trtr_auroc_mean_ci": [trtr - 0.02, trtr + 0.02],
                "tstr_auroc_mean": tstr,
                "tstr_auroc_mean_ci": [tstr - 0.05, tstr + 0.05],
                "auroc_gap": trtr - tstr,
                "auroc_gap_ci": None,
                "per_label": [{"label": "Edema", "trtr_auroc": trtr, "tstr_auroc": tstr}],
                "fidelity": {"overall": {"fd": 10.0, "recall": 0.3, "real_baseline": {"fd": 1.0}}},
                "discrimination": {
                    "per_resolution": [
                        {"resolution": 16, "auroc": 0.9, "auroc_ci": [0.8, 1.0]},
                        {"resolution": 32, "auroc": 0.99, "auroc_ci": [0.97, 1.0]},
                    ]
                },
                "privacy": {"copy_rate": 0.01, "releasable": True},
                "verdict": {"decision": "release"},
            },
        )
        _write(workdir / "report" / "summary.json", {"stage": "report", "wall_s": 0.1})
    return workdir


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for classes, trtr in ((2, 0.9), (4, 0.85)):
        for arch, tstr in (("cpd", 0.7), ("prog", 0.75)):
            for seed in (0, 1):
                name = f"c{classes}-{arch}-s{seed}"
                _run(
                    root,
                    name,
                    classes=classes,
                    arch=arch,
                    seed=seed,
                    trtr=trtr,
                    tstr=tstr + seed / 100,
                )
    _run(root / "nested", "unfinished", classes=6, arch="cpd", seed=0, trtr=0, tstr=0, report=False)
    return root


def test_load_runs_gives_one_tidy_row_per_workdir(sweep):
    runs = analysis.load_runs(sweep)
    assert len(runs) == 9 and runs["run"].is_unique
    row = runs.set_index("run").loc["c4-prog-s1"]
    assert row["dataset.num_classes"] == 4 and row["gan.arch"] == "prog" and row["seed"] == 1
    assert row["tstr_auroc_mean"] == pytest.approx(0.76)
    assert (row["tstr_auroc_mean_lo"], row["tstr_auroc_mean_hi"]) == pytest.approx((0.71, 0.81))
    assert np.isnan(row["auroc_gap_lo"])  # an interval that is not there is NaN, not an error
    assert row["c2st_auroc"] == 0.99 and row["c2st_auroc_lo"] == 0.97  # the native resolution
    assert row["fidelity.fd"] == 10.0 and row["fidelity.baseline_fd"] == 1.0
    assert np.isnan(row["fidelity.precision"])
    assert row["tstr_auroc.Edema"] == pytest.approx(0.76)
    assert row["wall_s.gan"] == 3.0 and row["finished"] == "report" and row["verdict"] == "release"
    unfinished = runs.set_index("run").loc["unfinished"]
    assert unfinished["finished"] == "gan" and np.isnan(unfinished["tstr_auroc_mean"])


def test_summarize_over_seeds_and_the_study_plot(sweep):
    runs = analysis.load_runs([sweep])
    stats = analysis.summarize(
        runs[runs["gan.arch"] == "cpd"], "dataset.num_classes", "tstr_auroc_mean"
    )
    assert stats["dataset.num_classes"].tolist() == [2, 4]
    assert stats["mean"].tolist() == pytest.approx([0.705, 0.705])
    assert stats["count"].tolist() == [2, 2]
    ax = analysis.plot_auroc_against(runs, "dataset.num_classes")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["real (TRTR)", "cpd (TSTR)", "prog (TSTR)"]


def test_no_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no synthjax workdir"):
        analysis.load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a synthjax workdir"):
        analysis.load_run(tmp_path)
