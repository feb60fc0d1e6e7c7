"""synthjax.analysis: workdirs under a root -> one tidy DataFrame, the study's table and plots,
the study's published numbers, and the command line."""

import json

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from sweep_fixtures import RESOLUTION_GAPS, make_resolution_sweep, make_sweep, write_run

from synthjax import analysis


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path / "sweep")


@pytest.fixture
def resolution_sweep(tmp_path):
    return make_resolution_sweep(tmp_path / "resolution")


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
    # cpd: seeds 0.70 and 0.71, each +-0.05 at 95%: sqrt(t_1^2 s^2/2 + z^2 v) with
    # s^2 = 5e-5, t_1 = 12.7062, z^2 v = 0.05^2: 0.0808467 either side.
    bars = ax.containers[1].lines[2][0].get_segments()
    assert [seg[1, 1] - seg[0, 1] for seg in bars] == pytest.approx([2 * 0.0808467] * 2)


def _three_seeds(root, **config):
    """cpd at 2 classes with seeds 0, 1, 2 (TSTR 0.70, 0.74, 0.78, each +-0.05) and prog with
    seed 0 only (TSTR 0.76); TRTR 0.90 +-0.02 throughout. `config` adds fields to the first
    seed's config.json ({section: {field: value}})."""
    for seed, tstr in enumerate((0.70, 0.74, 0.78)):
        workdir = write_run(
            root, f"cpd-s{seed}", classes=2, arch="cpd", seed=seed, trtr=0.9, tstr=tstr
        )
        if seed == 0 and config:
            cfg = json.loads((workdir / "config.json").read_text())
            for section, fields in config.items():
                cfg.setdefault(section, {}).update(fields)
            (workdir / "config.json").write_text(json.dumps(cfg))
    write_run(root, "prog-s0", classes=2, arch="prog", seed=0, trtr=0.9, tstr=0.76)
    return analysis.load_runs(root)


# The 3-seed setting by hand: s = 0.04, t_2 = 4.302653, z^2 v = 0.05^2 (each run's +-0.05).
THREE_SEED_HALF = (4.302653**2 * 0.04**2 / 3 + 0.05**2) ** 0.5  # 0.111280


def test_aggregate_over_seeds_of_a_three_seed_sweep(tmp_path):
    runs = _three_seeds(tmp_path)
    agg = analysis.aggregate_seeds(runs, "tstr_auroc_mean").set_index("gan.arch")
    assert sorted(analysis.setting_columns(runs)) == [
        "dataset.num_classes",
        "dataset.resolution",
        "gan.arch",
    ]
    cpd, prog = agg.loc["cpd"], agg.loc["prog"]
    assert cpd["n_seeds"] == 3 and cpd["seeds"] == (0, 1, 2)
    assert cpd["mean"] == pytest.approx(0.74) and cpd["seed_std"] == pytest.approx(0.04)
    assert (cpd["lo"], cpd["hi"]) == pytest.approx((0.74 - THREE_SEED_HALF, 0.74 + THREE_SEED_HALF))
    assert cpd["test_se"] == pytest.approx(0.05 / 1.959964)
    assert (cpd["test_lo"], cpd["test_hi"]) == pytest.approx((0.69, 0.79))
    # Wider than the runs' own intervals (the test sample only): the seeds disagree.
    assert cpd["hi"] - cpd["lo"] > 1.5 * (cpd["test_hi"] - cpd["test_lo"])
    assert cpd["interval"] == "seeds + test sample"
    # One seed: a mean, and no seed interval invented for it.
    assert prog["n_seeds"] == 1 and prog["mean"] == pytest.approx(0.76)
    assert np.isnan(prog["lo"]) and np.isnan(prog["hi"]) and np.isnan(prog["seed_std"])
    assert prog["interval"] == "none: one seed"
    # TRTR: the real setting leaves the generator out; each seed counts once.
    real = analysis.aggregate_seeds(
        runs, "trtr_auroc_mean", by=analysis.setting_columns(runs, real=True)
    )
    assert real["n_seeds"].tolist() == [3] and real["mean"].tolist() == pytest.approx([0.9])
    assert real["hi"].tolist() == pytest.approx([0.92])  # seeds agree: the runs' +-0.02
    # An interval is clipped to the range the metric can take.
    high = runs.assign(tstr_auroc_mean=runs["tstr_auroc_mean"] + 0.2)
    high = analysis.aggregate_seeds(high[high["gan.arch"] == "cpd"])
    assert high["hi"].tolist() == [1.0] and high["lo"].tolist() == pytest.approx(
        [0.94 - THREE_SEED_HALF]
    )
    unclipped = analysis.aggregate_seeds(
        runs.assign(tstr_auroc_mean=runs["tstr_auroc_mean"] + 0.2), limits=None
    )
    assert unclipped["hi"].max() == pytest.approx(0.94 + THREE_SEED_HALF)


def test_free_fields_do_not_split_a_setting_and_result_fields_do(tmp_path):
    free = _three_seeds(tmp_path / "free", dataset={"data_dir": "/elsewhere"}, gan={"log_every": 5})
    agg = analysis.aggregate_seeds(free[free["gan.arch"] == "cpd"])
    assert agg["n_seeds"].tolist() == [3]
    longer = _three_seeds(tmp_path / "longer", gan={"train_kimg": 51.2})
    agg = analysis.aggregate_seeds(longer[longer["gan.arch"] == "cpd"])
    assert sorted(agg["n_seeds"].tolist()) == [1, 2]
    with pytest.raises(ValueError, match=r"2 settings at dataset.num_classes=2.*gan.train_kimg"):
        analysis.plot_auroc_against(longer, "dataset.num_classes")


def test_the_plot_draws_the_seed_interval_and_a_dotted_bar_for_one_seed(tmp_path, capsys):
    runs = _three_seeds(tmp_path)
    ax = analysis.plot_auroc_against(runs, "dataset.num_classes")
    _, cpd, prog = ax.containers
    (segment,) = cpd.lines[2][0].get_segments()
    assert segment[:, 1] == pytest.approx([0.74 - THREE_SEED_HALF, 0.74 + THREE_SEED_HALF])
    assert cpd.lines[2][0].get_linestyle()[0][1] is None  # solid
    (segment,) = prog.lines[2][0].get_segments()
    assert segment[:, 1] == pytest.approx([0.71, 0.81])  # its own interval
    assert prog.lines[2][0].get_linestyle()[0][1] is not None  # dotted
    table = analysis.seed_table(runs, "dataset.num_classes")
    assert table["curve"].tolist() == ["real", "cpd", "prog"]
    assert table["n_seeds"].tolist() == [3, 3, 1]
    assert analysis.main([str(tmp_path), "--x", "dataset.num_classes"]) == 0
    out = capsys.readouterr().out
    assert "| curve | dataset.num_classes | n_seeds | mean | seed_std | lo | hi |" in out
    assert "| prog | 2 | 1 | 0.760 | - | - | - | 0.710 | 0.810 |" in out


def test_the_study_plot_with_the_published_curves(sweep):
    runs = analysis.load_runs(sweep)
    ax = analysis.plot_auroc_against(runs, "dataset.num_classes", reference="cxr_classes")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[3:] == ["study: real", "study: cpD", "study: prog"]
    study = {line.get_label(): line for line in ax.get_lines()}
    assert study["study: real"].get_linestyle() == "--"
    assert study["study: real"].get_alpha() < 1
    assert list(study["study: cpD"].get_xdata()) == [2, 6, 10, 20]
    assert list(study["study: cpD"].get_ydata()) == [0.957, 0.854, 0.785, 0.754]
    ours = ax.containers[1].lines[0]  # the cpd curve: the study's cpD line shares its colour
    assert study["study: cpD"].get_color() == ours.get_color()


def test_gap_against_resolution_on_a_log2_axis(resolution_sweep):
    runs = analysis.load_runs(resolution_sweep)
    ax = analysis.plot_gap_against(runs, "dataset.resolution")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpd", "prog"]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64", "128"]
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.get_lines())  # the zero line
    for container, arch in zip(ax.containers, ("cpd", "prog"), strict=True):
        expected = [RESOLUTION_GAPS[r][arch] for r in (32, 64, 128)]
        assert list(container.lines[0].get_xdata()) == [32, 64, 128]
        assert list(container.lines[0].get_ydata()) == pytest.approx([g for g, _, _ in expected])
        # one run per point: the bars are the run's own 95% interval
        ends = [end for seg in container.lines[2][0].get_segments() for end in seg[:, 1]]
        assert ends == pytest.approx([end for _, lo, hi in expected for end in (lo, hi)])


def test_gap_against_a_setting_with_seeds(sweep):
    runs = analysis.load_runs(sweep)
    ax = analysis.plot_gap_against(runs, "dataset.num_classes")
    assert ax.get_xscale() == "linear"
    cpd = ax.containers[0].lines[0]
    assert list(cpd.get_ydata()) == pytest.approx([0.9 - 0.705, 0.85 - 0.705])


def test_study_table_and_its_markdown(sweep):
    runs = analysis.load_runs(sweep)
    table = analysis.study_table(runs, "dataset.num_classes")
    assert table.columns.tolist() == [
        "dataset.num_classes",
        *("real", "real_lo", "real_hi", "cpd", "cpd_lo", "cpd_hi", "prog", "prog_lo", "prog_hi"),
        *("real_study_style", "cpd_study_style", "prog_study_style", "n_seeds"),
    ]
    assert table["dataset.num_classes"].tolist() == [2, 4]  # the unfinished run is left out
    assert table["real"].tolist() == pytest.approx([0.9, 0.85])
    assert table["cpd"].tolist() == pytest.approx([(0.70 + 0.71) / 2] * 2)
    assert table["prog"].tolist() == pytest.approx([(0.75 + 0.76) / 2] * 2)
    assert table["n_seeds"].tolist() == [2, 2]
    # The interval is aggregate_seeds' over the two seeds, not the runs' own.
    cpd = analysis.aggregate_seeds(runs[runs["gan.arch"] == "cpd"])
    assert table["cpd_lo"].tolist() == pytest.approx(cpd["lo"].tolist())
    assert table["cpd_hi"].tolist() == pytest.approx(cpd["hi"].tolist())
    # Study-style: the per-label AUROCs flipped below 0.5 and averaged (none is here).
    assert table["cpd_study_style"].tolist() == pytest.approx([0.655, 0.655])
    lo, hi = table.loc[0, ["cpd_lo", "cpd_hi"]]
    assert analysis.to_markdown(table).splitlines()[:3] == [
        "| dataset.num_classes | real | cpd | prog | real_study_style | cpd_study_style"
        " | prog_study_style | n_seeds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| 2 | 0.900 [0.880, 0.920] | 0.705 [{lo:.3f}, {hi:.3f}] | 0.755 [{lo + 0.05:.3f}, "
        f"{hi + 0.05:.3f}] | 0.850 | 0.655 | 0.705 | 2 |",
    ]


def test_study_table_with_one_seed_and_the_study_beside_it(tmp_path):
    runs = _three_seeds(tmp_path)  # prog has one seed: its run's own interval
    table = analysis.study_table(runs, "dataset.num_classes", reference="cxr_classes")
    row = table.iloc[0]
    assert row["n_seeds"] == 1
    assert (row["prog_lo"], row["prog_hi"]) == pytest.approx((0.71, 0.81))
    assert (row["study: real"], row["study: cpd"], row["study: prog"]) == (0.965, 0.957, 0.955)
    flipped = runs.assign(tstr_auroc_mean_study_style=runs["tstr_auroc_mean"] + 0.03)
    table = analysis.study_table(flipped, "dataset.num_classes")
    assert table.loc[0, "cpd_study_style"] == pytest.approx(table.loc[0, "cpd"] + 0.03)


def test_to_markdown_text_nan_and_named_index():
    import pandas as pd

    table = pd.DataFrame({"verdict": ["release", None], "fd": [1.23456, np.nan]})
    assert analysis.to_markdown(table.set_axis(pd.Index([7, 8], name="run"))).splitlines() == [
        "| run | verdict | fd |",
        "| ---: | --- | ---: |",
        "| 7 | release | 1.235 |",
        "| 8 | - | - |",
    ]


def test_per_label_auroc(sweep):
    table = analysis.per_label_auroc(analysis.load_runs(sweep))
    assert table.index.tolist() == ["Edema", "Cardiomegaly"]
    assert table.columns.tolist() == ["real", "cpd", "prog"]
    assert table.loc["Edema"].tolist() == pytest.approx([0.875, 0.705, 0.755])
    assert table.loc["Cardiomegaly"].tolist() == pytest.approx([0.775, 0.605, 0.655])


def test_study_reference_is_the_papers_table():
    chest = analysis.study_reference("cxr_classes").set_index("x")
    assert chest.columns.tolist() == ["real", "cpd", "prog"]
    assert chest.index.tolist() == [2, 6, 10, 20]
    assert chest.loc[20].tolist() == [0.789, 0.754, 0.704]
    assert chest.loc[2].tolist() == [0.965, 0.957, 0.955]
    brain = analysis.study_reference("ct_classes").set_index("x")
    assert brain.loc[10].tolist() == [0.872, 0.801, 0.707]
    assert brain.loc[4].tolist() == [0.886, 0.809, 0.665]
    assert analysis.study_reference("cxr_samples").set_index("x").loc[500].tolist() == [
        0.887,
        0.873,
        0.838,
    ]
    brain_samples = analysis.study_reference("ct_samples")
    assert brain_samples["x"].tolist() == [100, 300, 1500, 5400]
    assert brain_samples.iloc[0, 1:].tolist() == [0.718, 0.702, 0.641]
    with pytest.raises(ValueError, match="unknown benchmark"):
        analysis.study_reference("chest")


def test_command_line_prints_the_table_and_saves_the_figure(sweep, tmp_path, capsys):
    out = tmp_path / "figures" / "classes.png"
    argv = [str(sweep), "--x", "dataset.num_classes", "--out", str(out)]
    assert analysis.main([*argv, "--reference", "cxr_classes"]) == 0
    printed = capsys.readouterr().out
    assert "loaded 9 runs: 8 with a report, 1 unfinished" in printed
    assert "unfinished" in printed and "(last stage done: gan)" in printed
    assert "| 2 | 0.900 [0.880, 0.920] | 0.705 [0.624, 0.786] | 0.755 [0.674, 0.836] |" in printed
    assert "| 0.850 | 0.655 | 0.705 | 2 | 0.965 | 0.957 | 0.955 |" in printed  # + the study
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_on_resolution_adds_the_gap(resolution_sweep, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "resolution.png"
    argv = [str(resolution_sweep), "--x", "dataset.resolution", "--out", str(out)]
    assert analysis.main(argv) == 0
    assert "| 128 | 0.900 [0.880, 0.920] | 0.850 [0.800, 0.900] | 0.750 [0.700, 0.800] |" in (
        capsys.readouterr().out
    )
    height, width, _ = matplotlib.image.imread(out).shape
    assert width > 1.5 * height  # two panels side by side


def test_command_line_errors(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit):
        analysis.main([str(sweep), "--x", "dataset.nope"])
    assert "dataset.num_classes" in capsys.readouterr().err  # says which columns there are
    with pytest.raises(SystemExit):
        analysis.main([str(tmp_path / "empty"), "--x", "dataset.num_classes"])
    assert "no synthjax workdir" in capsys.readouterr().err


def test_no_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no synthjax workdir"):
        analysis.load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a synthjax workdir"):
        analysis.load_run(tmp_path)


def test_a_row_holds_the_study_style_auroc_beside_ours():
    # report_columns reads what the evaluate stage wrote ...
    row = analysis.report_columns(
        {"tstr_auroc_mean": 0.525, "tstr_auroc_mean_study_style": 0.575, "per_label": []}
    )
    assert row["tstr_auroc_mean"] == 0.525 and row["tstr_auroc_mean_study_style"] == 0.575
    assert np.isnan(row["trtr_auroc_mean_study_style"])
    # ... and flips the per-label AUROCs of a report written before the key existed.
    older = {
        "per_label": [
            {"label": "Edema", "trtr_auroc": 0.9, "tstr_auroc": 0.4},
            {"label": "Cardiomegaly", "trtr_auroc": 0.7},
        ]
    }
    row = analysis.report_columns(older)
    assert row["tstr_auroc_mean_study_style"] == pytest.approx(0.6)
    assert row["trtr_auroc_mean_study_style"] == pytest.approx(0.8)


def test_the_sweep_fixtures_study_style_means(sweep):
    runs = analysis.load_runs(sweep).set_index("run")
    row = runs.loc["c4-prog-s1"]  # per label 0.76 and 0.66: nothing to flip
    assert row["tstr_auroc_mean_study_style"] == pytest.approx((0.76 + 0.66) / 2)
