"""The report's figures: PNGs beside report.md, drawn from report.json and the saved scores.

- report_auroc.png: per-label test AUROC, TRTR vs TSTR, with 95% intervals;
- report_roc.png: per-label ROC curves of both classifiers on the real test split;
- report_fidelity.png: FD and precision / recall / density / coverage, synthetic vs the
  real baseline, overall and per label combination;
- report_c2st.png: the discrimination test's ROC curves and AUROC per resolution;
- the memorization audit's closest-pairs grids, already in `synthesize/` (linked only).
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from etils import epath

from synthjax.core.workdir import Run
from synthjax.data.prepared import prepared
from synthjax.eval.auc import roc_curve

_REAL, _SYNTH = "#4c72b0", "#dd8452"


def _save(fig, path) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    epath.Path(path).write_bytes(buffer.getvalue())  # local, or a bucket


def _ci_err(values: np.ndarray, cis: list) -> np.ndarray:
    ci = np.array([[np.nan, np.nan] if not c or c[0] is None else c for c in cis], dtype=np.float64)
    return np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))


def _value(x) -> float:
    return np.nan if x is None else float(x)


def plot_auroc(report: dict[str, Any], path) -> bool:
    rows = report["per_label"]
    if not rows:
        return False
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4))
    for offset, key, color, title in (
        (-0.18, "trtr", _REAL, "TRTR (real)"),
        (0.18, "tstr", _SYNTH, "TSTR (synthetic)"),
    ):
        vals = np.array([_value(r[f"{key}_auroc"]) for r in rows])
        err = _ci_err(vals, [r[f"{key}_ci"] for r in rows])
        ax.bar(x + offset, vals, width=0.36, color=color, label=title, yerr=err, capsize=2)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=35, ha="right")
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("test AUROC (95% CI)")
    mean_r, mean_s = report["trtr_auroc_mean"], report["tstr_auroc_mean"]
    ax.set_title(
        f"TRTR {'n/a' if mean_r is None else f'{mean_r:.3f}'} vs TSTR "
        f"{'n/a' if mean_s is None else f'{mean_s:.3f}'} (mean); real test split"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)
    return True


def plot_roc(run: Run, report: dict[str, Any], path) -> bool:
    from synthjax.eval.utility import load_predictions

    rows = report["per_label"]
    if not rows or not run.finished("classifier_synthetic"):
        return False
    names = list(prepared(run).label_names)
    preds = {k: load_predictions(run, f"classifier_{k}") for k in ("real", "synthetic")}
    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        k = names.index(row["label"])
        for kind, color, auc in (
            ("real", _REAL, row["trtr_auroc"]),
            ("synthetic", _SYNTH, row["tstr_auroc"]),
        ):
            curve = roc_curve(preds[kind]["labels"][:, k], preds[kind]["probs"][:, k])
            tag = "TRTR" if kind == "real" else "TSTR"
            ax.plot(curve["fpr"], curve["tpr"], color=color, label=f"{tag} {_value(auc):.3f}")
        ax.plot([0, 1], [0, 1], color="gray", lw=0.6, ls="--")
        ax.set_title(f"{row['label']} ({row['positives']} pos.)", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    _save(fig, path)
    return True


def plot_fidelity(report: dict[str, Any], path) -> bool:
    fid = report.get("fidelity")
    if not fid:
        return False
    groups = [("all", fid["overall"])] + [(c["combination"], c) for c in fid["per_combination"]]
    fig, (ax_fd, ax_prdc) = plt.subplots(
        1, 2, figsize=(max(9, 1.2 * len(groups) + 6), 4), gridspec_kw={"width_ratios": [2, 1]}
    )
    x = np.arange(len(groups))
    ax_fd.bar(x - 0.18, [g["fd"] for _, g in groups], 0.36, color=_SYNTH, label="synthetic")
    ax_fd.bar(
        x + 0.18,
        [g["real_baseline"]["fd"] for _, g in groups],
        0.36,
        color=_REAL,
        label="real baseline",
    )
    ax_fd.set_xticks(x, [name[:24] for name, _ in groups], rotation=35, ha="right", fontsize=8)
    ax_fd.set_ylabel("Fréchet distance (domain features)")
    ax_fd.set_title("FD to the real test images (lower is better)")
    ax_fd.legend(frameon=False)
    names = ("precision", "recall", "density", "coverage")
    xm = np.arange(len(names))
    overall = fid["overall"]
    ax_prdc.bar(xm - 0.18, [overall[n] for n in names], 0.36, color=_SYNTH, label="synthetic")
    ax_prdc.bar(
        xm + 0.18,
        [overall["real_baseline"][n] for n in names],
        0.36,
        color=_REAL,
        label="real baseline",
    )
    ax_prdc.set_xticks(xm, names, rotation=20)
    ax_prdc.set_title(f"PRDC, k = {overall['k']} (all combinations)")
    ax_prdc.legend(frameon=False, fontsize=8)
    _save(fig, path)
    return True


def plot_discrimination(report: dict[str, Any], path) -> bool:
    rows = (report.get("discrimination") or {}).get("per_resolution") or []
    if not rows:
        return False
    fig, (ax_roc, ax_auc) = plt.subplots(1, 2, figsize=(9, 4))
    for r in rows:
        ax_roc.plot(r["roc"]["fpr"], r["roc"]["tpr"], label=f"{r['resolution']}px {r['auroc']:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="gray", lw=0.6, ls="--")
    ax_roc.set_xlabel("real called synthetic")
    ax_roc.set_ylabel("synthetic called synthetic")
    ax_roc.set_title("automated reader: ROC on held-out images")
    ax_roc.legend(frameon=False, fontsize=8)
    res = np.array([r["resolution"] for r in rows])
    auc = np.array([_value(r["auroc"]) for r in rows])
    ax_auc.errorbar(
        res, auc, yerr=_ci_err(auc, [r["auroc_ci"] for r in rows]), marker="o", capsize=3
    )
    ax_auc.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax_auc.set_xscale("log", base=2)
    ax_auc.set_xticks(res, [str(r) for r in res])
    ax_auc.set_ylim(0.4, 1.02)
    ax_auc.set_xlabel("resolution (px)")
    ax_auc.set_ylabel("two-sample AUROC (95% CI)")
    ax_auc.set_title("0.5 = indistinguishable")
    _save(fig, path)
    return True


def draw_all(run: Run, report: dict[str, Any]) -> dict[str, str]:
    """Draws what the report has data for; {figure name: path relative to the workdir}."""
    out = {}
    # The names and files are report.json's `figures` (a contract): kept as they were.
    for name, file, draw in (
        ("per-label AUROC", "report_auroc.png", lambda p: plot_auroc(report, p)),
        ("ROC curves", "report_roc.png", lambda p: plot_roc(run, report, p)),
        ("fidelity", "report_fidelity.png", lambda p: plot_fidelity(report, p)),
        ("automated reader", "report_c2st.png", lambda p: plot_discrimination(report, p)),
    ):
        if draw(run.workdir / file):
            out[name] = file
    synthesize_dir = run.stage_dir("synthesize")
    for space in (report.get("privacy") or {}).get("spaces", {}):
        grid = f"closest_pairs_{space}.png"
        if (synthesize_dir / grid).exists():
            out[f"closest pairs ({space}; real training images, not for release)"] = (
                f"synthesize/{grid}"
            )
    return out
