"""Analysis of saved runs: every workdir under a root as one row of a tidy DataFrame.

```python
from synthjax import analysis

runs = analysis.load_runs("runs/sweep")         # one row per workdir with a config.json
runs[["dataset.num_classes", "gan.arch", "trtr_auroc_mean", "tstr_auroc_mean"]]
analysis.plot_auroc_against(runs, "dataset.num_classes")  # the study's figure shape
```

A row holds the run's resolved config flattened to dotted columns (`gan.arch`,
`dataset.num_classes`, ...), the headline numbers of `report.json` (`trtr_auroc_mean`,
`tstr_auroc_mean`, `auroc_gap` and their `_lo` / `_hi` interval ends, AUPRC, FD, PRDC, the
automated reader's AUROC at the run's resolution, the copy rate, the verdict), and each
stage's `wall_s` and `state_sha256` (`wall_s.gan`, ...). A run that has not reached its
report still gets a row, with what it has (`finished` says how far it got). Only files the
pipeline writes are read; nothing is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthjax.experiment import STAGE_ORDER

_HEADLINE = (
    "trtr_auroc_mean",
    "tstr_auroc_mean",
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


def _read(path: Path) -> dict[str, Any] | None:
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
    fid = (report.get("fidelity") or {}).get("overall") or {}
    for name in ("fd", "precision", "recall", "density", "coverage"):
        row[f"fidelity.{name}"] = fid.get(name, np.nan)
        row[f"fidelity.baseline_{name}"] = (fid.get("real_baseline") or {}).get(name, np.nan)
    c2st = (report.get("discrimination") or {}).get("per_resolution") or []
    if c2st:
        native = max(c2st, key=lambda r: r["resolution"])
        row["c2st_auroc"] = native["auroc"]
        _interval(row, "c2st_auroc", native.get("auroc_ci"))
    privacy = report.get("privacy") or {}
    row["copy_rate"] = privacy.get("copy_rate", np.nan)
    row["releasable"] = privacy.get("releasable")
    row["verdict"] = (report.get("verdict") or {}).get("decision")
    for label in report.get("per_label") or []:
        row[f"trtr_auroc.{label['label']}"] = label.get("trtr_auroc")
        row[f"tstr_auroc.{label['label']}"] = label.get("tstr_auroc")
    return row


def load_run(workdir: str | Path) -> dict[str, Any]:
    """One workdir as a flat dict (the module docstring lists the columns)."""
    workdir = Path(workdir)
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


def find_workdirs(root: str | Path) -> list[Path]:
    """Every directory under `root` (itself included) holding a config.json, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("config.json") if not p.parent.name.startswith("."))


def load_runs(roots: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """All workdirs under `roots` as one DataFrame, a row per run."""
    roots = [roots] if isinstance(roots, str | Path) else list(roots)
    rows = [load_run(w) for root in roots for w in find_workdirs(root)]
    if not rows:
        raise FileNotFoundError(f"no synthjax workdir (config.json) under {roots}")
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, by: str | list[str], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count of `metric` over the runs (seeds) of each group."""
    by = [by] if isinstance(by, str) else by
    grouped = runs.dropna(subset=[metric]).groupby(by)[metric]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def plot_auroc_against(runs: pd.DataFrame, x: str, *, ax=None, arch_column: str = "gan.arch"):
    """Mean AUROC of real (TRTR) and of each generator's synthetic data (TSTR) against `x`
    (e.g. `dataset.num_classes`, `dataset.samples_per_class`), as in the study's figures.
    Points are means over runs (seeds); bars are the mean of the runs' 95% intervals when
    there is one run, else the spread (std) over runs."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    curves = [("real (TRTR)", runs, "trtr_auroc_mean")]
    for arch, part in runs.groupby(arch_column):
        curves.append((f"{arch} (TSTR)", part, "tstr_auroc_mean"))
    for label, part, metric in curves:
        stats = summarize(part, x, metric)
        if stats.empty:
            continue
        if (stats["count"] == 1).all():
            lo = part.groupby(x)[f"{metric}_lo"].mean().to_numpy()
            hi = part.groupby(x)[f"{metric}_hi"].mean().to_numpy()
            err = np.abs(np.stack([stats["mean"] - lo, hi - stats["mean"]]))
        else:
            err = stats["std"].fillna(0.0).to_numpy()
        ax.errorbar(stats[x], stats["mean"], yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xlabel(x)
    ax.set_ylabel("mean test AUROC")
    ax.legend(frameon=False)
    return ax
