"""The `report` stage: headline numbers and a figure a person reads first.

Gathers every stage's `summary.json` into `report.json` (machine-readable: notebooks and
sweeps read it) and `report.md` (a human table), and draws per-label AUROC (TRTR vs TSTR
with 95% intervals) to `report_auroc.png`.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from etils import epath

from synthjax.workdir import Run, write_json_atomic

REPORT_VERSION = 1


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def build_report(run: Run) -> dict[str, Any]:
    cfg = run.config
    stages = {s: run.summary(s) for s in cfg.stages if s != "report" and run.finished(s)}
    ev = stages.get("evaluate", {})
    return {
        "report_version": REPORT_VERSION,
        "dataset": cfg.dataset.name,
        "phantom": bool(stages.get("prepare", {}).get("phantom", False)),
        "attribution": stages.get("prepare", {}).get("attribution"),
        "resolution": cfg.dataset.resolution,
        "num_classes": len(run.prepared.subset.combos),
        "gan_arch": cfg.gan.arch,
        "seed": cfg.seed,
        "trtr_auroc_mean": ev.get("trtr_auroc_mean"),
        "trtr_auroc_mean_ci": ev.get("trtr_auroc_mean_ci"),
        "tstr_auroc_mean": ev.get("tstr_auroc_mean"),
        "tstr_auroc_mean_ci": ev.get("tstr_auroc_mean_ci"),
        "auroc_gap": ev.get("auroc_gap"),
        "auroc_gap_ci": ev.get("auroc_gap_ci"),
        "per_label": ev.get("per_label", []),
        "labels_excluded": ev.get("labels_excluded", {}),
        "min_positives": ev.get("min_positives"),
        "images": stages.get("prepare", {}).get("images"),
        "gan_kimg": stages.get("gan", {}).get("kimg"),
        "wall_s": {s: v.get("wall_s") for s, v in stages.items()},
        "state_sha256": {s: v.get("state_sha256") for s, v in stages.items()},
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# synthjax report: {report['dataset']}"
        f"{' (built-in phantom)' if report['phantom'] else ''}, "
        f"{report['resolution']}x{report['resolution']}, {report['gan_arch']} GAN",
        "",
        f"{report['num_classes']} label combinations; images per split: {report['images']}; "
        f"GAN trained for {_fmt(report['gan_kimg'], 1)} kimg.",
        "",
        "| | mean test AUROC (95% CI) |",
        "|---|---|",
        f"| TRTR (trained on real) | {_fmt(report['trtr_auroc_mean'])}"
        f"{_fmt_ci(report['trtr_auroc_mean_ci'])} |",
        f"| TSTR (trained on synthetic) | {_fmt(report['tstr_auroc_mean'])}"
        f"{_fmt_ci(report['tstr_auroc_mean_ci'])} |",
        f"| gap TRTR - TSTR (paired) | {_fmt(report['auroc_gap'])}"
        f"{_fmt_ci(report['auroc_gap_ci'])} |",
        "",
        "Both classifiers are tested on the same real test images. AUCs below 0.5 are "
        "reported as they are.",
        "",
        "| label | test positives | TRTR | TSTR | gap |",
        "|---|---|---|---|---|",
    ]
    for row in report["per_label"]:
        lines.append(
            f"| {row['label']} | {row['positives']} | {_fmt(row['trtr_auroc'])}"
            f"{_fmt_ci(row['trtr_ci'])} | {_fmt(row['tstr_auroc'])}{_fmt_ci(row['tstr_ci'])} "
            f"| {_fmt(row['gap'])}{_fmt_ci(row['gap_ci'])} |"
        )
    if report["labels_excluded"]:
        excluded = ", ".join(f"{k} ({v})" for k, v in report["labels_excluded"].items())
        need = report.get("min_positives")
        rule = f"fewer than {need} test positives or negatives" if need else "too few test cases"
        lines += ["", f"Not in the mean ({rule}; test positives shown): {excluded}."]
    lines += ["", "| stage | wall time (s) | state_sha256 |", "|---|---|---|"]
    for stage, wall in report["wall_s"].items():
        lines.append(f"| {stage} | {_fmt(wall, 1)} | `{report['state_sha256'][stage][:16]}` |")
    if report.get("attribution"):
        lines += ["", report["attribution"]]
    return "\n".join(lines) + "\n"


def plot_auroc(report: dict[str, Any], path) -> None:
    rows = report["per_label"]
    if not rows:
        return
    names = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4))
    for offset, key, color, title in (
        (-0.18, "trtr", "#4c72b0", "TRTR (real)"),
        (0.18, "tstr", "#dd8452", "TSTR (synthetic)"),
    ):
        vals = np.array([np.nan if r[f"{key}_auroc"] is None else r[f"{key}_auroc"] for r in rows])
        ci = np.array(
            [
                [np.nan, np.nan]
                if not r[f"{key}_ci"] or r[f"{key}_ci"][0] is None
                else r[f"{key}_ci"]
                for r in rows
            ]
        )
        err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
        ax.bar(x + offset, vals, width=0.36, color=color, label=title, yerr=err, capsize=2)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("test AUROC (95% CI)")
    ax.set_title(
        f"TRTR {_fmt(report['trtr_auroc_mean'])} vs TSTR "
        f"{_fmt(report['tstr_auroc_mean'])} (mean); real test split"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    epath.Path(path).write_bytes(buffer.getvalue())  # local, or a bucket


def run_stage(run: Run) -> dict[str, Any]:
    report = build_report(run)
    if run.is_host0:
        write_json_atomic(run.workdir / "report.json", report)
        (run.workdir / "report.md").write_text(report_markdown(report))
        plot_auroc(report, run.workdir / "report_auroc.png")
        print(report_markdown(report), flush=True)
    return {"step": 0, "state_sha256": None}
