"""Benchmark: which conditional GAN design teaches? The recipes and their pieces, by seed.

Where it sits: `gan.recipe` picks the study's design or synthjax's (train/recipes.py).
This script measures each variant end to end at the quickstart's sizes: it prepares the
data and trains the real-data classifier once (TRTR, shared by every run), then per
variant and seed trains the GAN, synthesizes, trains the classifier on the synthetic data,
evaluates, and prints one table of mean and spread over seeds:

- label fidelity (TRTS): the real-trained classifier's AUROC on the synthetic test images
  against the labels they were generated from;
- TSTR: the synthetic-trained classifier's AUROC on the real test images;
- FD and recall: the synthetic test set against the real one in the domain features;
- the GAN stage's wall time.

It also replays every run's GAN evaluations (gan/metrics.jsonl) under each selection rule
(`gan.select`: fd, label_fidelity, combined) and reports the label fidelity and FD of the
generator each rule would have picked, so the rules are compared without retraining.

    python benchmarks/conditioning_ablation.py --workdir runs/ablation
    python benchmarks/conditioning_ablation.py --workdir runs/ablation --seeds 0 \
        --variants study,synthjax

The seed varies the GAN, the synthesis and the synthetic-data classifier; the prepared data
and the real-data classifier are those of seed 0 in every run (copied from `shared/`), so
the spread is that of the generator and what is trained on it. Rerunning resumes every
unfinished run and reprints the table; `ablation.json` in `--workdir` holds every number.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from synthjax import experiment
from synthjax.core import config_files
from synthjax.core.metrics import read_metrics
from synthjax.train.fd_monitor import SELECTIONS, Evaluation, is_better

SHARED_STAGES = ("prepare", "classifier_real")
VARIANT_STAGES = ("gan", "synthesize", "classifier_synthetic", "evaluate", "report")

# The quickstart's first dcgan: one group-norm affine for every sample, G's rate 2e-3. The
# variants built on it were measured before the adaptive norm existed.
FIRST_DCGAN = {
    "gan.recipe": "synthjax",
    "gan.dcgan.norm": "group",
    "gan.dcgan.learning_rate": 0.002,
}

# Each variant: overrides of the config (as --config.field=value would set them).
VARIANTS: dict[str, dict[str, object]] = {
    "study": {"gan.recipe": "study", "gan.arch": "cpd"},  # the study's cpD-GAN, exactly
    # The synthjax recipe on the quickstart's architecture (dcgan) and on the study's cpD:
    "synthjax": {"gan.recipe": "synthjax"},
    "synthjax-cpd": {"gan.recipe": "synthjax", "gan.arch": "cpd"},
    "synthjax-lr-2e-3": {"gan.recipe": "synthjax", "gan.dcgan.learning_rate": 0.002},
    # One affine for every sample: it erased each sample's brightness and contrast.
    "synthjax-group-norm": FIRST_DCGAN,
    # The first dcgan with one piece taken away, or cpD's R1 and mode seeking put back:
    "synthjax-no-aux": {**FIRST_DCGAN, "gan.aux": "none"},
    "synthjax-label-sum": {**FIRST_DCGAN, "gan.d_conditioning": "label_sum"},
    "synthjax+r1": {**FIRST_DCGAN, "gan.r1_gamma": 1.0},
    "synthjax+mode-seeking": {**FIRST_DCGAN, "gan.mode_seeking": 1.0},
    "synthjax+ada": {**FIRST_DCGAN, "gan.ada.enabled": True},
    # ADA's default speed moves p by 0.05 in a 26 kimg run: a short run needs a head start
    # (about DiffAugment's fixed strength) or a faster controller.
    "synthjax+aug-0.3": {**FIRST_DCGAN, "gan.ada.enabled": True, "gan.ada.start_p": 0.3},
    "synthjax+ada-fast": {**FIRST_DCGAN, "gan.ada.enabled": True, "gan.ada.speed_kimg": 20.0},
    "synthjax-800-steps": {**FIRST_DCGAN, "gan.train_steps": 800},  # 2x longer
    # synthjax on cpD with one piece taken away (or put back to the study's):
    "synthjax-cpd-no-aux": {"gan.recipe": "synthjax", "gan.arch": "cpd", "gan.aux": "none"},
    "synthjax-cpd-no-mode-seeking": {
        "gan.recipe": "synthjax",
        "gan.arch": "cpd",
        "gan.mode_seeking": 0.0,
    },
    "synthjax-cpd-wgan-gp": {"gan.recipe": "synthjax", "gan.arch": "cpd", "gan.loss": "wgan_gp"},
}
DEFAULT_VARIANTS = "study,synthjax-cpd,synthjax-group-norm,synthjax-lr-2e-3,synthjax"


def _set(cfg, field: str, value: object) -> None:
    *sections, name = field.split(".")
    node = cfg
    for section in sections:
        node = node[section]
    node[name] = value


def _mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def replay_selection(metrics_path: Path, start_kimg: float, kimg_per_step: float, guard: float):
    """{rule: {"step", "label_fidelity", "fd"}}: the generator each selection rule would
    have kept, from a run's logged evaluations."""
    evals = [
        r
        for r in read_metrics(metrics_path)
        if "fd" in r and "label_fidelity" in r and r["step"] * kimg_per_step >= start_kimg
    ]
    picked = {}
    for rule in SELECTIONS:
        best_fd, best_lf, min_fd, best = math.inf, -math.inf, math.inf, None
        for r in evals:
            ev = Evaluation(fd=r["fd"], label_fidelity=r["label_fidelity"], metrics={})
            min_fd = min(min_fd, ev.fd)
            if is_better(rule, ev, best_fd, best_lf, min_fd, guard):
                best_fd, best_lf, best = ev.fd, ev.label_fidelity, r
        if best is not None:
            picked[rule] = {
                "step": best["step"],
                "label_fidelity": best["label_fidelity"],
                "fd": best["fd"],
            }
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="print the tables from the runs that finished, train nothing",
    )
    args = parser.parse_args()

    base = config_files.load(args.config)
    root = Path(args.workdir).resolve()
    shared = root / "shared"
    base.stages = SHARED_STAGES
    base.compilation_cache = str(root / "compilation_cache")
    if not args.tables_only:
        experiment.run(base, str(shared))

    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        for seed in seeds:
            cfg = base.copy_and_resolve_references()
            for field, value in VARIANTS[variant].items():
                _set(cfg, field, value)
            cfg.seed = seed
            cfg.stages = SHARED_STAGES + VARIANT_STAGES
            # The shared prepared shards; the phantom is not read again once prepared.
            cfg.dataset.data_dir = str(shared / "data")
            workdir = root / variant / f"seed_{seed}"
            if args.tables_only:
                if (workdir / "report.json").exists():
                    runs.append(collect(variant, seed, workdir, cfg, run_s=None))
                continue
            for stage in SHARED_STAGES:
                if not (workdir / stage).exists():
                    shutil.copytree(shared / stage, workdir / stage)
            start = time.perf_counter()
            print(f"== {variant}, seed {seed}: {workdir}", flush=True)
            experiment.run(cfg, str(workdir))
            runs.append(collect(variant, seed, workdir, cfg, time.perf_counter() - start))
    if not args.tables_only:
        (root / "ablation.json").write_text(json.dumps(runs, indent=1))
    print_tables(runs, args.config)


def collect(variant: str, seed: int, workdir: Path, cfg, run_s: float | None) -> dict:
    """One finished run's numbers, from the files the pipeline wrote."""
    report = json.loads((workdir / "report.json").read_text())
    gan = json.loads((workdir / "gan" / "summary.json").read_text())
    fid = (report.get("fidelity") or {}).get("overall") or {}
    c2st = (report.get("discrimination") or {}).get("per_resolution") or [{}]
    return {
        "variant": variant,
        "seed": seed,
        "label_fidelity": report.get("label_fidelity_auroc_mean"),
        "label_fidelity_ci": report.get("label_fidelity_auroc_mean_ci"),
        "label_fidelity_per_label": {
            k: v["auroc"] for k, v in (report.get("label_fidelity_per_label") or {}).items()
        },
        "tstr": report.get("tstr_auroc_mean"),
        "tstr_ci": report.get("tstr_auroc_mean_ci"),
        "trtr": report.get("trtr_auroc_mean"),
        "fd": fid.get("fd"),
        "precision": fid.get("precision"),
        "recall": fid.get("recall"),
        "c2st": c2st[-1].get("auroc"),
        "gan_s": gan["wall_s"],
        "selected": gan["selected"],
        "selection_replay": replay_selection(
            workdir / "gan" / "metrics.jsonl",
            cfg.gan.fd.start_kimg,
            gan["kimg"] / max(gan["step"], 1),
            cfg.gan.select_fd_guard,
        ),
        "run_s": run_s,
    }


def print_tables(runs: list[dict], config: str) -> None:
    print(f"\n{config}: mean ± sd over seeds (n = seeds per variant)")
    print("| variant | n | label fidelity (TRTS) | TSTR | FD | precision | recall | GAN s |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        cells = []
        for key, digits in (
            ("label_fidelity", 3),
            ("tstr", 3),
            ("fd", 1),
            ("precision", 3),
            ("recall", 3),
            ("gan_s", 0),
        ):
            mean, sd = _mean_sd([r[key] for r in rows])
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        print(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    print("\nSelection rules replayed on each run's GAN evaluations (label fidelity / FD of")
    print("the generator each rule keeps, mean over seeds):")
    print("| variant | " + " | ".join(SELECTIONS) + " |")
    print("|---|" + "---|" * len(SELECTIONS))
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        cells = []
        for rule in SELECTIONS:
            lf, _ = _mean_sd(
                [r["selection_replay"].get(rule, {}).get("label_fidelity") for r in rows]
            )
            fd, _ = _mean_sd([r["selection_replay"].get(rule, {}).get("fd") for r in rows])
            cells.append(f"{lf:.3f} / {fd:.1f}")
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
