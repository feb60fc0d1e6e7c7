"""Fake sweeps of synthjax workdirs for the analysis tests: only the files the pipeline writes
(`config.json`, each stage's `summary.json`, `report.json`), with numbers chosen by the test.

Imported by analysis_test.py and notebook_test.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = ("Edema", "Cardiomegaly")


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_run(
    root: Path,
    name: str,
    *,
    classes: int,
    arch: str,
    seed: int,
    trtr: float,
    tstr: float,
    resolution: int = 32,
    gap_ci: tuple[float, float] | None = None,
    report: bool = True,
) -> Path:
    """One workdir under `root`: stages up to `gan`, and the report when `report`.

    Every label gets the run's mean AUROC except Cardiomegaly, 0.1 lower on both sides."""
    workdir = root / name
    config = {
        "seed": seed,
        "dataset": {"num_classes": classes, "resolution": resolution},
        "gan": {"arch": arch},
    }
    _write(workdir / "config.json", config)
    for stage, wall in (("prepare", 1.0), ("classifier_real", 2.0), ("gan", 3.0)):
        _write(
            workdir / stage / "summary.json",
            {"stage": stage, "wall_s": wall, "state_sha256": stage},
        )
    if not report:
        return workdir
    per_label = [
        {"label": label, "trtr_auroc": trtr - drop, "tstr_auroc": tstr - drop}
        for label, drop in zip(LABELS, (0.0, 0.1), strict=True)
    ]
    _write(
        workdir / "report.json",
        {
            "trtr_auroc_mean": trtr,
            "trtr_auroc_mean_ci": [trtr - 0.02, trtr + 0.02],
            "tstr_auroc_mean": tstr,
            "tstr_auroc_mean_ci": [tstr - 0.05, tstr + 0.05],
            "auroc_gap": trtr - tstr,
            "auroc_gap_ci": list(gap_ci) if gap_ci else None,
            "per_label": per_label,
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


def make_sweep(root: Path) -> Path:
    """The classes benchmark in miniature: 2 and 4 classes x cpd / prog x seeds 0, 1.

    TRTR is 0.9 (2 classes) and 0.85 (4); TSTR is 0.7 (cpd) or 0.75 (prog) plus seed / 100.
    One more run, `nested/unfinished` (6 classes, cpd), stopped after `gan`."""
    for classes, trtr in ((2, 0.9), (4, 0.85)):
        for arch, tstr in (("cpd", 0.7), ("prog", 0.75)):
            for seed in (0, 1):
                write_run(
                    root,
                    f"c{classes}-{arch}-s{seed}",
                    classes=classes,
                    arch=arch,
                    seed=seed,
                    trtr=trtr,
                    tstr=tstr + seed / 100,
                )
    write_run(
        root / "nested", "unfinished", classes=6, arch="cpd", seed=0, trtr=0, tstr=0, report=False
    )
    return root


# The resolution benchmark in miniature, one seed per point: {resolution: {arch: (gap, lo, hi)}}
RESOLUTION_GAPS = {
    32: {"cpd": (0.02, 0.00, 0.05), "prog": (0.06, 0.03, 0.09)},
    64: {"cpd": (0.04, 0.01, 0.07), "prog": (0.10, 0.06, 0.14)},
    128: {"cpd": (0.05, 0.01, 0.09), "prog": (0.15, 0.10, 0.20)},
}


def make_resolution_sweep(root: Path) -> Path:
    """RESOLUTION_GAPS as runs: TRTR 0.9, TSTR 0.9 - gap, the gap's interval as given."""
    for resolution, gaps in RESOLUTION_GAPS.items():
        for arch, (gap, lo, hi) in gaps.items():
            write_run(
                root,
                f"r{resolution}-{arch}",
                classes=10,
                arch=arch,
                seed=0,
                trtr=0.9,
                tstr=0.9 - gap,
                resolution=resolution,
                gap_ci=(lo, hi),
            )
    return root
