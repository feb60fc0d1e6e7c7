"""Stage `report`: `report.json` and `report.md`, the headline numbers, the verdict and figures.

Gathers every stage's `summary.json` into `report.json` (machine-readable: notebooks and
sweeps read it) and `report.md` (tables, figures, and the release verdict with its
reasons, `synthjax/report.py`), and draws the figures (`report_figures.py`): per-label
AUROC, ROC curves, FD and PRDC bars, the discrimination test's ROC curves; the memorization
audit's closest-pairs grids are linked from `synthesize/` (they show real training images
and stay there).
"""

from __future__ import annotations

from typing import Any

from synthjax import report_figures
from synthjax.core.workdir import Run, read_json, write_json_atomic
from synthjax.data.prepared import prepared
from synthjax.report import REPORT_VERSION, report_markdown, verdict


def build_report(run: Run) -> dict[str, Any]:
    cfg = run.config
    stages = {s: run.summary(s) for s in cfg.stages if s != "report" and run.finished(s)}
    if "evaluate" not in stages and run.finished("evaluate"):
        stages["evaluate"] = run.summary("evaluate")
    ev = stages.get("evaluate", {})
    report = {
        "report_version": REPORT_VERSION,
        "dataset": cfg.dataset.name,
        "phantom": bool(stages.get("prepare", {}).get("phantom", False)),
        "attribution": stages.get("prepare", {}).get("attribution"),
        "resolution": cfg.dataset.resolution,
        "num_classes": len(prepared(run).subset.combos),
        "gan_arch": cfg.gan.arch,
        "seed": cfg.seed,
        "images": stages.get("prepare", {}).get("images"),
        "gan_kimg": stages.get("gan", {}).get("kimg"),
    }
    # What TRTR's and TSTR's classifier saw and where it started (train/classifier_inputs.py).
    report["classifier_protocol"] = stages.get("classifier_real", {}).get("protocol")
    for key in (
        "trtr_auroc_mean",
        "trtr_auroc_mean_ci",
        "tstr_auroc_mean",
        "tstr_auroc_mean_ci",
        "auroc_gap",
        "auroc_gap_ci",
        "trtr_auprc_mean",
        "trtr_auprc_mean_ci",
        "tstr_auprc_mean",
        "tstr_auprc_mean_ci",
    ):
        report[key] = ev.get(key)
    # What the intervals above resample (patient or image), over how many test patients and
    # images, and the image-level intervals beside them for comparison with the study.
    for key in (
        "interval_level",
        "interval_level_note",
        "test_patients",
        "test_images",
        "trtr_auroc_mean_ci_image_level",
        "tstr_auroc_mean_ci_image_level",
        "auroc_gap_ci_image_level",
        "trtr_auprc_mean_ci_image_level",
        "tstr_auprc_mean_ci_image_level",
    ):
        if key in ev:
            report[key] = ev[key]
    lf = ev.get("label_fidelity") or {}
    report["label_fidelity_auroc_mean"] = lf.get("auroc_mean")
    report["label_fidelity_auroc_mean_ci"] = lf.get("auroc_mean_ci")
    report["label_fidelity_per_label"] = lf.get("per_label")
    # The study's convention (AUC < 0.5 flipped), beside ours; and the DeLong family's size.
    for key in ("trtr_auroc_mean_study_style", "tstr_auroc_mean_study_style", "multiplicity"):
        report[key] = ev.get(key)
    report["per_label"] = ev.get("per_label", [])
    report["per_combination"] = ev.get("per_combination", [])
    report["labels_excluded"] = ev.get("labels_excluded", {})
    report["min_positives"] = ev.get("min_positives")
    report["fidelity"] = ev.get("fidelity")
    overall = (report["fidelity"] or {}).get("overall") or {}
    report["fd"] = overall.get("fd")
    report["fd_real_baseline"] = (overall.get("real_baseline") or {}).get("fd")
    report["fd_num_images"] = (report["fidelity"] or {}).get("fd_num_images")
    report["kid"] = overall.get("kid")
    report["kid_ci"] = overall.get("kid_ci")
    report["kid_real_baseline"] = (overall.get("real_baseline") or {}).get("kid")
    report["kid_real_baseline_ci"] = (overall.get("real_baseline") or {}).get("kid_ci")
    report["discrimination"] = ev.get("discrimination")
    report["privacy"] = ev.get("privacy")
    if report["privacy"] is None and run.synthetic_dir.joinpath("DATASET_CARD.json").exists():
        report["privacy"] = read_json(run.synthetic_dir / "DATASET_CARD.json").get("privacy")
    report["verdict"] = verdict(report)
    report["wall_s"] = {s: v.get("wall_s") for s, v in stages.items()}
    report["state_sha256"] = {s: v.get("state_sha256") for s, v in stages.items()}
    report["figures"] = {}
    return report


def run(run: Run) -> dict[str, Any]:
    report = build_report(run)
    if run.is_host0:
        # Relative to the workdir, so report.md renders wherever the workdir is copied.
        report["figures"] = report_figures.draw_all(run, report)
        write_json_atomic(run.workdir / "report.json", report)
        (run.workdir / "report.md").write_text(report_markdown(report))
        print(report_markdown(report), flush=True)
    return {"step": 0, "state_sha256": None, "verdict": report["verdict"]["decision"]}
