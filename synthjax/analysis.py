"""Analysis of saved runs: every workdir under a root as one row of a tidy DataFrame, the
study's tables and figures drawn from those rows, and the published numbers to set beside them.

```python
from synthjax import analysis

runs = analysis.load_runs("runs/sweep")         # one row per workdir with a config.json
table = analysis.study_table(runs, "dataset.num_classes", reference="cxr_classes")  # over seeds
print(analysis.to_markdown(table))
seeds = analysis.aggregate_seeds(runs, "tstr_auroc_mean")  # per setting, over its seeds
analysis.seed_table(runs, "dataset.num_classes")  # the figure's points: mean, seed std, interval
analysis.plot_auroc_against(runs, "dataset.num_classes", reference="cxr_classes")
analysis.plot_gap_against(runs, "dataset.resolution")  # TRTR - TSTR per generator
```

or from the shell, which prints the table (and the runs not finished yet) and saves the figure
(notebooks/analysis.ipynb walks through a whole sweep the same way):

    python -m synthjax.analysis runs/sweep --x dataset.num_classes --out classes.png \
        --reference cxr_classes

A row holds the run's resolved config flattened to dotted columns (`gan.arch`,
`dataset.num_classes`, ...), the headline numbers of `report.json` (`trtr_auroc_mean`,
`tstr_auroc_mean`, `label_fidelity_auroc_mean`, `auroc_gap` and their `_lo` / `_hi`
interval ends, AUPRC, FD, PRDC, the discrimination test's AUROC at the run's resolution, the
copy rate, the verdict, per-label AUROC as `trtr_auroc.<label>` / `tstr_auroc.<label>` /
`label_fidelity.<label>`), and each stage's `wall_s` and
`state_sha256` (`wall_s.gan`, ...). A run that has not reached its report still gets a row,
with what it has (`finished` says how far it got); the tables and figures leave it out. Only
files the pipeline writes are read; nothing is recomputed.

Settings are compared over seeds: `aggregate_seeds` groups the runs by every config field but
`seed` (and the free ones, `experiment.FREE_FIELDS`) and gives each setting its mean, seed
standard deviation, number of seeds and an interval that covers training randomness as well
as the test sample (`synthjax.eval.seeds`); the figures draw it.

`study_reference` gives the study's published mean test AUROC (PAPER.md, read off its
figure, about +-0.005, at 32x32) for the classes and samples-per-class benchmarks. The study's
code flipped a per-label AUC below 0.5 to 1 - AUC before averaging; ours does not, so a row
also holds `trtr_auroc_mean_study_style` / `tstr_auroc_mean_study_style` (that flip, from
report.json, or from its per-label AUROCs in reports written before it had them): the
like-for-like numbers to set beside the study's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from etils import epath

from synthjax import experiment
from synthjax.eval import seeds as seed_stats
from synthjax.eval.study_auroc import study_style_mean
from synthjax.experiment import STAGE_ORDER

_HEADLINE = (
    "trtr_auroc_mean",
    "tstr_auroc_mean",
    "label_fidelity_auroc_mean",
    "auroc_gap",
    "trtr_auprc_mean",
    "tstr_auprc_mean",
)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = tuple(value)  # hashable, so columns can be grouped on
        else:
            out[name] = value
    return out


def _read(path: epath.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _interval(row: dict[str, Any], name: str, ci: Any) -> None:
    low, high = ci if ci else (None, None)
    row[f"{name}_lo"] = np.nan if low is None else low
    row[f"{name}_hi"] = np.nan if high is None else high


def report_columns(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one report.json as flat columns."""
    row: dict[str, Any] = {}
    for name in _HEADLINE:
        value = report.get(name)
        row[name] = np.nan if value is None else value
        _interval(row, name, report.get(f"{name}_ci"))
    for side in ("trtr", "tstr"):
        value = report.get(f"{side}_auroc_mean_study_style")
        if value is None and f"{side}_auroc_mean_study_style" not in report:
            # Older reports: the same flip of the per-label AUROCs they hold.
            value = study_style_mean([r.get(f"{side}_auroc") for r in report.get("per_label", [])])
        row[f"{side}_auroc_mean_study_style"] = np.nan if value is None else value
    fid = (report.get("fidelity") or {}).get("overall") or {}
    for name in ("fd", "precision", "recall", "density", "coverage"):
        row[f"fidelity.{name}"] = fid.get(name, np.nan)
        row[f"fidelity.baseline_{name}"] = (fid.get("real_baseline") or {}).get(name, np.nan)
    per_resolution = (report.get("discrimination") or {}).get("per_resolution") or []
    if per_resolution:  # the column keeps the name of its config block, evaluate.c2st
        native = max(per_resolution, key=lambda r: r["resolution"])
        row["c2st_auroc"] = native["auroc"]
        _interval(row, "c2st_auroc", native.get("auroc_ci"))
    privacy = report.get("privacy") or {}
    row["copy_rate"] = privacy.get("copy_rate", np.nan)
    row["releasable"] = privacy.get("releasable")
    row["verdict"] = (report.get("verdict") or {}).get("decision")
    for label in report.get("per_label") or []:
        row[f"trtr_auroc.{label['label']}"] = label.get("trtr_auroc")
        row[f"tstr_auroc.{label['label']}"] = label.get("tstr_auroc")
    for name, label in (report.get("label_fidelity_per_label") or {}).items():
        row[f"label_fidelity.{name}"] = label.get("auroc")
    return row


def load_run(workdir: str | os.PathLike) -> dict[str, Any]:
    """One workdir as a flat dict (the module docstring lists the columns); local or gs://."""
    workdir = epath.Path(workdir)
    config = _read(workdir / "config.json")
    if config is None:
        raise FileNotFoundError(f"{workdir} has no config.json: not a synthjax workdir")
    row: dict[str, Any] = {"workdir": str(workdir), "run": workdir.name, **_flatten(config)}
    finished = []
    for stage in STAGE_ORDER:
        summary = _read(workdir / stage / "summary.json")
        if summary is None:
            continue
        finished.append(stage)
        row[f"wall_s.{stage}"] = summary.get("wall_s")
        row[f"state_sha256.{stage}"] = summary.get("state_sha256")
    row["finished"] = finished[-1] if finished else None
    report = _read(workdir / "report.json")
    if report is not None:
        row.update(report_columns(report))
    return row


_MAX_SWEEP_DEPTH = 4


def find_workdirs(root: str | os.PathLike) -> list[epath.Path]:
    """Every directory under `root` (itself included, local or gs://) holding a config.json."""
    if "://" not in os.fspath(root):
        found = Path(root).rglob("config.json")
        return sorted(p.parent for p in found if not p.parent.name.startswith("."))
    # A bucket: one listing per folder, and none inside a workdir (its checkpoints alone are
    # thousands of objects); sweeps nest workdirs a few folders deep at most.
    # (Older gcsfs lists a folder once per object below it: names are deduplicated.)
    found, folders = set(), [epath.Path(root)]
    for _ in range(_MAX_SWEEP_DEPTH + 1):
        deeper = set()
        for folder in folders:
            if (folder / "config.json").exists():
                found.add(folder)
                continue
            for path in folder.iterdir():
                if path != folder and not path.name.startswith(".") and path.is_dir():
                    deeper.add(path)
        folders = sorted(deeper, key=os.fspath)
    return sorted(found, key=os.fspath)


def load_runs(roots: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """All workdirs under `roots` (local folders or gs:// prefixes) as one DataFrame."""
    roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    rows = [load_run(w) for root in roots for w in find_workdirs(root)]
    if not rows:
        raise FileNotFoundError(f"no synthjax workdir (config.json) under {roots}")
    return pd.DataFrame(rows)


# The study's published mean test AUROC (PAPER.md, "Reported figures": read off its benchmark
# figures, about +-0.005, all at 32x32), per benchmark: the config field it varies, its
# setting, and the AUROC of the classifier trained on real, cpD-GAN and prog-GAN images.
_STUDY_TABLE = """
benchmark    varies                     setting  real   cpD    prog
cxr_classes  dataset.num_classes        20       0.789  0.754  0.704
cxr_classes  dataset.num_classes        10       0.822  0.785  0.742
cxr_classes  dataset.num_classes        6        0.878  0.854  0.834
cxr_classes  dataset.num_classes        2        0.965  0.957  0.955
ct_classes   dataset.num_classes        10       0.872  0.801  0.707
ct_classes   dataset.num_classes        6        0.907  0.838  0.753
ct_classes   dataset.num_classes        4        0.886  0.809  0.665
ct_classes   dataset.num_classes        2        0.928  0.904  0.807
cxr_samples  dataset.samples_per_class  5950     0.925  0.908  0.899
cxr_samples  dataset.samples_per_class  1500     0.902  0.888  0.872
cxr_samples  dataset.samples_per_class  500      0.887  0.873  0.838
cxr_samples  dataset.samples_per_class  200      0.857  0.848  0.834
ct_samples   dataset.samples_per_class  5400     0.912  0.844  0.761
ct_samples   dataset.samples_per_class  1500     0.883  0.792  0.741
ct_samples   dataset.samples_per_class  300      0.805  0.747  0.683
ct_samples   dataset.samples_per_class  100      0.718  0.702  0.641
"""


StudyRows = tuple[tuple[int, float, float, float], ...]  # (setting, real, cpD, prog)


def _study_figures(table: str) -> dict[str, tuple[str, StudyRows]]:
    """{benchmark: (the config field it varies, its rows)} from the table above."""
    figures: dict[str, tuple[str, list]] = {}
    for line in table.strip().splitlines()[1:]:
        benchmark, field, setting, *aurocs = line.split()
        figures.setdefault(benchmark, (field, []))[1].append((int(setting), *map(float, aurocs)))
    return {b: (field, tuple(rows)) for b, (field, rows) in figures.items()}


STUDY_FIGURES = _study_figures(_STUDY_TABLE)
_STUDY_NAMES = {"real": "real", "cpd": "cpD", "prog": "prog"}


def study_reference(benchmark: str) -> pd.DataFrame:
    """The study's mean test AUROC on one benchmark (`cxr_classes`, `ct_classes`,
    `cxr_samples`, `ct_samples`): columns x, real, cpd, prog, a row per setting, ascending."""
    if benchmark not in STUDY_FIGURES:
        raise ValueError(f"unknown benchmark {benchmark!r}: choose from {sorted(STUDY_FIGURES)}")
    _, rows = STUDY_FIGURES[benchmark]
    table = pd.DataFrame(rows, columns=["x", "real", "cpd", "prog"])
    return table.sort_values("x", ignore_index=True)


def _reference_table(reference: str | pd.DataFrame) -> pd.DataFrame:
    """`study_reference(reference)` for a benchmark's name; a table shaped like it as is."""
    return study_reference(reference) if isinstance(reference, str) else reference


def summarize(runs: pd.DataFrame, by: str | list[str], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count of `metric` over the runs (seeds) of each group."""
    by = [by] if isinstance(by, str) else by
    grouped = runs.dropna(subset=[metric]).groupby(by)[metric]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def _reported(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that reached their report; the others have no AUROC to show."""
    done = runs[runs["finished"] == "report"]
    if done.empty or "tstr_auroc_mean" not in done:
        raise ValueError(f"none of the {len(runs)} runs has reached its report yet")
    return done


# Every config field is under one of these (a trailing dot: a section); report columns are not.
_CONFIG_FIELDS = (*experiment.FIELD_STAGES, *experiment.FREE_FIELDS, *experiment.GAN_LENGTH_FIELDS)


def _matches(column: str, pattern: str) -> bool:
    return column.startswith(pattern) if pattern.endswith(".") else column == pattern


def setting_columns(runs: pd.DataFrame, *, real: bool = False) -> list[str]:
    """The config columns that make a setting: every config field except `seed` and those
    that change no result (`experiment.FREE_FIELDS`: where things go, how fast). `real`
    keeps only what the real-data classifier depends on (no generator, synthesis or
    evaluation fields), so runs of both generators share their TRTR setting."""
    columns = []
    for c in runs.columns:
        if c == "seed" or not any(_matches(c, p) for p in _CONFIG_FIELDS):
            continue
        if any(_matches(c, p) for p in experiment.FREE_FIELDS):
            continue
        if real and "classifier_real" not in experiment.stages_of_field(c):
            continue
        columns.append(c)
    return columns


_SEED_COLUMNS = ("n_seeds", "seeds", "mean", "seed_std", "test_se", "se", "lo", "hi")


def aggregate_seeds(
    runs: pd.DataFrame,
    metric: str = "tstr_auroc_mean",
    *,
    by: list[str] | None = None,
    confidence: float = 0.95,
    limits: tuple[float, float] | None = (0.0, 1.0),
) -> pd.DataFrame:
    """`metric` per setting over its seeds: a row per setting (the runs that agree on `by`,
    by default `setting_columns`: every config field but `seed` and the free ones) with the
    `by` columns, `n_seeds`, `seeds`, `mean` over seeds, `seed_std` (their sample standard
    deviation), `lo` / `hi`, the `confidence` interval for the setting's mean that covers
    training randomness and the test sample (`synthjax.eval.seeds`: mean +- sqrt(t_{n-1}^2
    S^2/n + z^2 v), S^2 the seeds' variance, v their mean bootstrap variance; conservative
    when the seeds' test sets differ), `se` (sqrt(S^2/n + v)), `test_se` (sqrt v, from the
    runs' own `<metric>_lo` / `_hi` at their `evaluate.confidence`), `test_lo` / `test_hi`
    (the mean of the runs' own interval ends) and `interval`, what `lo` / `hi` cover. A
    setting with one seed has no seed interval: `lo` and `hi` are NaN and `interval` says
    so. Runs of a setting with the same seed (the TRTR of both generators, one shared real
    classifier) count once, their values averaged. Runs without the metric are left out.
    `limits` is the range the metric can take (an AUROC's [0, 1] by default; a gap's is
    [-1, 1]; None for none): `lo` / `hi` are clipped to it, which keeps the true value
    inside whenever the unclipped interval held it."""
    if "seed" not in runs:
        raise ValueError("the runs have no seed column: not rows of load_runs")
    runs = runs.dropna(subset=[metric])
    by = setting_columns(runs) if by is None else list(by)
    lo_col, hi_col = f"{metric}_lo", f"{metric}_hi"
    ends = runs.reindex(columns=[lo_col, hi_col]).to_numpy(np.float64)
    run_confidence = runs["evaluate.confidence"] if "evaluate.confidence" in runs else 0.95
    work = pd.DataFrame(
        {
            "key": [json.dumps(k, default=str) for k in runs[by].to_numpy().tolist()],
            "seed": runs["seed"].to_numpy(),
            "value": runs[metric].to_numpy(np.float64),
            "test_var": seed_stats.bootstrap_variance(ends[:, 0], ends[:, 1], run_confidence),
            "test_lo": ends[:, 0],
            "test_hi": ends[:, 1],
        },
        index=runs.index,
    )
    rows = []
    for _, group in work.groupby("key", sort=False):
        per_seed = group.groupby("seed").mean(numeric_only=True)
        stats = seed_stats.seed_interval(
            per_seed["value"], per_seed["test_var"], confidence=confidence
        )
        if limits is not None:
            stats = dataclasses.replace(
                stats, lo=max(stats.lo, limits[0]), hi=min(stats.hi, limits[1])
            )
        first = runs.loc[group.index[0], by].to_dict()
        rows.append(
            first
            | {c: getattr(stats, c) for c in _SEED_COLUMNS if c != "seeds"}
            | {
                "seeds": tuple(per_seed.index.tolist()),
                "test_lo": group["test_lo"].mean(),
                "test_hi": group["test_hi"].mean(),
                "interval": stats.basis,
            }
        )
    columns = [*by, *_SEED_COLUMNS, "test_lo", "test_hi", "interval"]
    return pd.DataFrame(rows, columns=columns)


def _points(
    runs: pd.DataFrame,
    x: str,
    metric: str,
    *,
    real: bool = False,
    limits: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """`aggregate_seeds` of one curve, a row per value of `x` in ascending order; refuses
    two settings at one point (say which fields tell them apart: filter the runs first)."""
    by = setting_columns(runs, real=real)
    agg = aggregate_seeds(runs, metric, by=by if x in by else [*by, x], limits=limits)
    for value, group in agg.groupby(x, dropna=False):
        if len(group) > 1:
            differ = [c for c in by if c != x and group[c].nunique(dropna=False) > 1]
            raise ValueError(
                f"{len(group)} settings at {x}={value} ({metric}) differ in more than the "
                f"seed: {', '.join(differ) or 'values that print alike'}; keep one setting "
                "per point (filter the runs on those columns first)"
            )
    return agg.sort_values(x, ignore_index=True)


def _errorbar(ax, points: pd.DataFrame, x: str, **style) -> None:
    """Draw `_points` with the error bars every figure here shares: the seed interval
    (`aggregate_seeds`: training randomness and the test sample) where a point has two or
    more seeds; where it has one, the run's own interval (the test sample only), its bar
    dotted. A missing interval draws no bar."""
    if points.empty:
        return
    mean = points["mean"].to_numpy(np.float64)
    one = points["n_seeds"].to_numpy() < 2
    lo = np.where(one, points["test_lo"], points["lo"]).astype(np.float64)
    hi = np.where(one, points["test_hi"], points["hi"]).astype(np.float64)
    err = np.nan_to_num(np.abs(np.stack([mean - lo, hi - mean])), nan=0.0)
    bars = ax.errorbar(points[x], mean, yerr=err, marker="o", capsize=3, **style)
    bars.lines[2][0].set_linestyle([":" if o else "-" for o in one])


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    return ax


def _format_x(ax, x: str, values: Iterable[float]) -> None:
    """Label the x axis: whole-number ticks; a resolution gets a log2 axis, a tick per value."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(x)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x.endswith("resolution"):
        ticks = sorted({float(v) for v in values if pd.notna(v)})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, labels=[f"{v:g}" for v in ticks])
        ax.minorticks_off()


def _curves(
    runs: pd.DataFrame, x: str, arch_column: str, suffix: str = ""
) -> list[tuple[str, pd.DataFrame]]:
    """[(curve, `_points`)]: real (TRTR over the real-data settings) and each generator's
    TSTR, in that order; `suffix` picks a variant of the mean AUROC (`_study_style`)."""
    curves = [("real", _points(runs, x, f"trtr_auroc_mean{suffix}", real=True))]
    for arch in sorted(runs[arch_column].dropna().unique()):
        part = runs[runs[arch_column] == arch]
        curves.append((str(arch), _points(part, x, f"tstr_auroc_mean{suffix}")))
    return curves


def seed_table(runs: pd.DataFrame, x: str, arch_column: str = "gan.arch") -> pd.DataFrame:
    """The figure's points as a table: a row per curve (`real` TRTR, each generator's TSTR)
    and value of `x`, with `n_seeds`, `mean`, `seed_std`, the seed interval `lo` / `hi`
    (`aggregate_seeds`; `-` with one seed) and the mean of the runs' own intervals
    (`test_lo` / `test_hi`, the test sample only)."""
    runs = _reported(runs)
    shown = [x, "n_seeds", "mean", "seed_std", "lo", "hi", "test_lo", "test_hi"]
    parts = [p[shown].assign(curve=c) for c, p in _curves(runs, x, arch_column)]
    return pd.concat(parts, ignore_index=True)[["curve", *shown]]


def plot_auroc_against(
    runs: pd.DataFrame,
    x: str,
    *,
    ax=None,
    arch_column: str = "gan.arch",
    reference: str | pd.DataFrame | None = None,
):
    """Mean AUROC of real (TRTR) and of each generator's synthetic data (TSTR) against `x`
    (e.g. `dataset.num_classes`, `dataset.samples_per_class`), as in the study's figures.
    Points are means over a setting's seeds (`aggregate_seeds`, one setting per point and
    curve); bars are its seed interval, which covers training randomness and the test
    sample, or, for a point with one seed, the run's own interval (the test sample only),
    dotted. `reference` (a benchmark of `study_reference`, or a table shaped like its
    result) adds the study's published curves, dashed and lighter, in the colours of ours."""
    runs = _reported(runs)
    ax = _axes(ax)
    archs = sorted(runs[arch_column].dropna().unique())
    colors = {"real": "C0"} | {str(arch): f"C{i + 1}" for i, arch in enumerate(archs)}
    for curve, points in _curves(runs, x, arch_column):
        label = "real (TRTR)" if curve == "real" else f"{curve} (TSTR)"
        _errorbar(ax, points, x, color=colors[curve], label=label)
    xs = list(runs[x])
    if reference is not None:
        study = _reference_table(reference)
        for name, shown in _STUDY_NAMES.items():
            style = {"ls": "--", "marker": ".", "alpha": 0.45, "color": colors.get(name, "gray")}
            ax.plot(study["x"], study[name], label=f"study: {shown}", **style)
        xs += list(study["x"])
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    _format_x(ax, x, xs)
    ax.set_ylabel("mean test AUROC")
    handles, labels = ax.get_legend_handles_labels()  # ours first, then the study's
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("study:"))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], frameon=False)
    return ax


def plot_gap_against(runs: pd.DataFrame, x: str, *, ax=None, arch_column: str = "gan.arch"):
    """The TRTR - TSTR gap in mean test AUROC (`auroc_gap`) of each generator against `x` (a
    log2 axis when `x` is a resolution): what training on synthetic instead of real images
    costs; the line at zero is no cost. Points and bars follow plot_auroc_against's rule."""
    runs = _reported(runs)
    ax = _axes(ax)
    for i, (arch, part) in enumerate(runs.groupby(arch_column)):
        points = _points(part, x, "auroc_gap", limits=(-1.0, 1.0))
        _errorbar(ax, points, x, color=f"C{i + 1}", label=str(arch))
    ax.axhline(0.0, color="gray", lw=0.8)
    _format_x(ax, x, runs[x])
    ax.set_ylabel("AUROC gap (TRTR - TSTR)")
    ax.legend(frameon=False)
    return ax


def study_table(
    runs: pd.DataFrame,
    x: str,
    arch_column: str = "gan.arch",
    *,
    reference: str | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The study's table over seeds: a row per value of `x`; for `real` (TRTR) and each
    generator's TSTR (a curve per value of `arch_column`), `<curve>` the mean AUROC over the
    setting's seeds, `<curve>_lo` / `<curve>_hi` its interval (the seed interval of
    `aggregate_seeds` with two or more seeds; with one, that run's own bootstrap interval,
    the test sample only) and `<curve>_study_style` the mean of the seeds' study-style mean
    AUROC (AUC < 0.5 flipped, as the study's code did: the numbers to set beside its
    figures); `n_seeds`, the fewest seeds of any curve at that `x`; and with `reference` (a
    `study_reference` benchmark, or a table shaped like its result) the study's published
    values as `study: <curve>`. `to_markdown` writes a value and its interval as one cell."""
    runs = _reported(runs)
    table, seeds = None, []
    for curve, points in _curves(runs, x, arch_column):
        one = points["n_seeds"].to_numpy() < 2
        part = pd.DataFrame(
            {
                x: points[x],
                curve: points["mean"],
                f"{curve}_lo": np.where(one, points["test_lo"], points["lo"]),
                f"{curve}_hi": np.where(one, points["test_hi"], points["hi"]),
            }
        )
        seeds.append(points.set_index(x)["n_seeds"].rename(curve))
        table = part if table is None else table.merge(part, on=x, how="outer")
    table = table.set_index(x)
    if {"trtr_auroc_mean_study_style", "tstr_auroc_mean_study_style"} <= set(runs):
        for curve, points in _curves(runs, x, arch_column, "_study_style"):
            table[f"{curve}_study_style"] = points.set_index(x)["mean"]
    table["n_seeds"] = pd.concat(seeds, axis=1).min(axis=1).astype(int)
    if reference is not None:
        study = _reference_table(reference).set_index("x")
        study = study.rename(columns=lambda c: f"study: {c}")
        table = table.join(study, how="left")
    return table.sort_index().reset_index()


def per_label_auroc(runs: pd.DataFrame, arch_column: str = "gan.arch") -> pd.DataFrame:
    """Mean test AUROC per label (a row each): `real` (TRTR) and each generator's TSTR, over
    the runs that reached their report. Filter `runs` first to look at one setting."""
    runs = _reported(runs)
    labels = [c.removeprefix("trtr_auroc.") for c in runs if c.startswith("trtr_auroc.")]
    table = pd.DataFrame({"real": [runs[f"trtr_auroc.{lab}"].mean() for lab in labels]})
    for arch, part in runs.groupby(arch_column):
        table[str(arch)] = [part[f"tstr_auroc.{lab}"].mean() for lab in labels]
    return table.set_axis(pd.Index(labels, name="label"))


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """`table` as a markdown pipe table, floats to `digits` decimals, missing values as `-`, numbers
    right-aligned (no `tabulate` needed). A named index becomes the first column. A column
    `c` with columns `c_lo` and `c_hi` beside it (`study_table`) is one cell, `c [lo, hi]`."""
    if table.index.name is not None:
        table = table.reset_index()

    def cell(value: Any) -> str:
        if pd.api.types.is_scalar(value) and pd.isna(value):
            return "-"
        if isinstance(value, float | np.floating):
            return f"{value:.{digits}f}"
        return str(value)

    ends = {c for c in table.columns if f"{c}_lo" in table and f"{c}_hi" in table}
    shown = [c for c in table.columns if not any(c in (f"{e}_lo", f"{e}_hi") for e in ends)]

    def value(row: pd.Series, c: str) -> str:
        if c not in ends or pd.isna(row[f"{c}_lo"]):
            return cell(row[c])
        return f"{cell(row[c])} [{cell(row[f'{c}_lo'])}, {cell(row[f'{c}_hi'])}]"

    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in shown]
    lines = [
        [str(c) for c in shown],
        ["---:" if is_number else "---" for is_number in numeric],
        *([value(row, c) for c in shown] for _, row in table.astype(object).iterrows()),
    ]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring): print the table, save the figure."""
    parser = argparse.ArgumentParser(
        prog="python -m synthjax.analysis",
        description="A sweep's mean test AUROC (TRTR vs TSTR per generator) against a setting.",
    )
    parser.add_argument("roots", nargs="+", metavar="ROOT", help="directory holding workdirs")
    parser.add_argument(
        "--x",
        required=True,
        help="the config column the sweep varied: dataset.num_classes, dataset.samples_per_class"
        " or dataset.resolution (which adds the TRTR - TSTR gap beside the AUROC figure)",
    )
    parser.add_argument("--out", type=Path, help="save the figure here (a .png, .pdf, ...)")
    parser.add_argument(
        "--reference", choices=sorted(STUDY_FIGURES), help="draw the study's published curves"
    )
    parser.add_argument("--arch-column", default="gan.arch", help="the generator's column")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.roots)
    except FileNotFoundError as e:
        parser.error(str(e))
    if args.x not in runs:
        config = sorted(c for c in runs if c.startswith(("dataset.", "gan.")))
        parser.error(f"--x {args.x}: no such column (some there are: {', '.join(config)})")
    if args.reference and STUDY_FIGURES[args.reference][0] != args.x:
        print(f"note: the study's {args.reference} varies {STUDY_FIGURES[args.reference][0]}")

    unfinished = runs[runs["finished"] != "report"]
    print(
        f"loaded {len(runs)} runs: {len(runs) - len(unfinished)} with a report, "
        f"{len(unfinished)} unfinished"
    )
    for workdir, stage in zip(unfinished["workdir"], unfinished["finished"], strict=True):
        print(f"  unfinished: {workdir} (last stage done: {stage or 'none'})")
    try:
        table = study_table(runs, args.x, args.arch_column, reference=args.reference)
    except ValueError as e:
        print(e)
        return 1
    print()
    print(to_markdown(table))
    print(f"\nover seeds (interval: {seed_stats.__name__}; '-' for one seed):\n")
    print(to_markdown(seed_table(runs, args.x, args.arch_column)))

    if args.out is not None:
        from matplotlib.figure import Figure  # no pyplot: no display, no global figure state

        with_gap = args.x == "dataset.resolution"
        fig = Figure(figsize=(12 if with_gap else 6, 4), layout="constrained")
        axes = fig.subplots(1, 2 if with_gap else 1, squeeze=False)[0]
        plot_auroc_against(
            runs, args.x, ax=axes[0], arch_column=args.arch_column, reference=args.reference
        )
        if with_gap:
            plot_gap_against(runs, args.x, ax=axes[1], arch_column=args.arch_column)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=150)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
