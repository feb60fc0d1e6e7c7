r"""Patient-level against image-level intervals: how much wider resampling patients makes them.

Runs a config (by default only `prepare` and `classifier_real`; `--full` for the whole
pipeline, which adds TSTR) once per seed into `--workdir`/seed-<n>, then bootstraps the
saved test predictions at both levels with the same resamples count and prints, per seed
and over seeds, the mean AUROC's 95% interval width by patient and by image, their ratio,
and the range of the per-label ratios.

  python benchmarks/interval_levels.py --config configs/quickstart.py:ct --workdir /tmp/il
  python benchmarks/interval_levels.py --config configs/quickstart.py:ct --workdir /tmp/ct_long \
      --override dataset.phantom.num_patients=300 --override dataset.phantom.min_slices=16 \
      --override dataset.phantom.max_slices=32

The second is the brain-CT phantom with long series (16-32 slices a patient): there a
patient's slices are many and alike, and the patient-level interval is the honest one. A run
that already finished is read, not rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthjax.core.workdir import Run  # noqa: E402
from synthjax.eval import auc  # noqa: E402
from synthjax.eval.utility import evaluated_labels, load_predictions  # noqa: E402
from synthjax.stages.evaluate import interval_clusters  # noqa: E402

REAL_STAGES = ("prepare", "classifier_real")


def run_seed(config: str, workdir: Path, seed: int, overrides: list[str], full: bool) -> None:
    stages = [] if full else [f"--config.stages={REAL_STAGES!r}"]
    command = [
        sys.executable,
        "-m",
        "synthjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *(f"--config.{o}" for o in overrides),
        *stages,
    ]
    last = "report" if full else "classifier_real"
    if (workdir / last / "summary.json").exists():
        return
    print(f"running seed {seed} into {workdir} ...", flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def widths(workdir: Path, resamples: int) -> dict[str, dict[str, np.ndarray]]:
    """{side: {"patient": float[1 + K], "image": float[1 + K]}}: interval widths of the
    mean AUROC (first) and of each evaluated label, for TRTR and (if run) TSTR."""
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    config.evaluate.interval_level = "patient"
    run = Run(config, workdir, mesh=None)
    out = {}
    for side, stage in (("TRTR", "classifier_real"), ("TSTR", "classifier_synthetic")):
        if not (workdir / stage / "test_predictions.npz").exists():
            continue
        predictions = load_predictions(run, stage)
        labels = predictions["labels"]
        keep = evaluated_labels(labels, config.evaluate.min_positives)
        patients, _ = interval_clusters(run, labels)
        if patients is None:
            raise SystemExit(f"{workdir}: the prepared data keep no patient ids")
        if not keep.any():
            raise SystemExit(
                f"{workdir}: no label has {config.evaluate.min_positives} positive and negative "
                "test images; use a design with more test patients or label combinations"
            )
        y, p = labels[:, keep], predictions["probs"][:, keep]
        levels = {}
        for level, clusters in (("patient", patients), ("image", None)):
            boot = auc.bootstrap_auroc(
                y, p, num_resamples=resamples, seed=config.seed, clusters=clusters
            )
            ends = np.array([boot["mean_ci"], *boot["per_label_ci"]], np.float64)
            levels[level] = ends[:, 1] - ends[:, 0]
        levels["patients"] = len(np.unique(patients))
        levels["images"] = len(patients)
        out[side] = levels
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.py:ct")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--override", action="append", default=[], help="field=value")
    parser.add_argument("--full", action="store_true", help="run every stage (adds TSTR)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for seed in seeds:
        workdir = args.workdir / f"seed-{seed}"
        run_seed(args.config, workdir, seed, args.override, args.full)
        rows[seed] = widths(workdir, args.resamples)

    print(
        f"\n{args.config} {' '.join(args.override)}: 95% interval widths, {args.resamples} "
        "resamples at each level"
    )
    print(
        "| seed | side | test patients / images | mean AUROC by patient | by image | ratio "
        "| per-label ratios |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {}
    for seed, sides in rows.items():
        for side, w in sides.items():
            per_label = w["patient"][1:] / w["image"][1:]
            ratio = w["patient"][0] / w["image"][0]
            ratios.setdefault(side, []).append(ratio)
            print(
                f"| {seed} | {side} | {w['patients']} / {w['images']} | {w['patient'][0]:.3f} "
                f"| {w['image'][0]:.3f} | {ratio:.2f}x | {per_label.min():.2f}-"
                f"{per_label.max():.2f}x |"
            )
    for side, values in ratios.items():
        print(
            f"{side}: mean width ratio over seeds {np.mean(values):.2f}x "
            f"(from {min(values):.2f}x to {max(values):.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
