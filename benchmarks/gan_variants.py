"""Benchmark: TSTR of both GANs, with and without ADA, on one prepared dataset.

Where it sits: the study found GAN training overfits at few samples per class; adaptive
discriminator augmentation (`gan.ada`) is the standard remedy. This script answers "does
it help here?" end to end: it prepares the data and trains the real-data classifier once
(TRTR, shared), then for each variant trains the GAN, synthesizes, trains the classifier on
the synthetic data and evaluates it on the real test split (TSTR), each in its own workdir
under `--workdir`, and prints one table. Rerunning resumes every unfinished run.

    python benchmarks/gan_variants.py --workdir runs/ada200 \
        --config configs/quickstart.py --samples-per-class 200
    python benchmarks/gan_variants.py --workdir runs/x --variants cpd,cpd+ada \
        --override gan.train_kimg=51.2

Variants are `cpd`, `prog`, `cpd+ada`, `prog+ada`; `--override field=value` applies to all
(as `--config.field=value` would). The numbers are mean test AUROC with bootstrap 95%
intervals from each run's `report.json`.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import time
from pathlib import Path

import jax

from synthjax import experiment
from synthjax.core import config_files
from synthjax.train import gan_models

SHARED_STAGES = ("prepare", "classifier_real")
VARIANT_STAGES = ("gan", "synthesize", "classifier_synthetic", "evaluate", "report")


def _override(cfg, assignment: str) -> None:
    field, _, text = assignment.partition("=")
    *sections, name = field.split(".")
    node = cfg
    for section in sections:
        node = node[section]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    node[name] = type(node[name])(value) if not isinstance(node[name], str) else text


def _variant_config(base, variant: str):
    cfg = base.copy_and_resolve_references()
    arch, _, extra = variant.partition("+")
    cfg.gan.arch = arch
    cfg.gan.ada.enabled = extra == "ada"
    if extra not in ("", "ada") or arch not in gan_models.ARCHS:
        raise SystemExit(f"unknown variant {variant!r}; use cpd, prog, cpd+ada or prog+ada")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--samples-per-class", type=int, default=200)
    parser.add_argument("--variants", default="cpd,cpd+ada,prog,prog+ada")
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args()

    base = config_files.load(args.config)
    base.dataset.samples_per_class = args.samples_per_class
    for assignment in args.override:
        _override(base, assignment)
    root = Path(args.workdir).resolve()
    shared = root / "shared"
    base.stages = SHARED_STAGES
    experiment.run(base, str(shared))

    rows = []
    for variant in args.variants.split(","):
        cfg = _variant_config(base, variant)
        cfg.stages = SHARED_STAGES + VARIANT_STAGES
        cfg.compilation_cache = str(root / "compilation_cache")
        workdir = root / variant
        for stage in SHARED_STAGES:  # the same data and TRTR classifier for every variant
            if not (workdir / stage).exists():
                shutil.copytree(shared / stage, workdir / stage)
        start = time.perf_counter()
        experiment.run(cfg, str(workdir))
        report = json.loads((workdir / "report.json").read_text())
        gan = json.loads((workdir / "gan" / "summary.json").read_text())
        rows.append((variant, report, gan, time.perf_counter() - start))

    print(
        f"\n{args.config}, {args.samples_per_class} train images per class, "
        f"{jax.default_backend()}; mean test AUROC [95% CI]"
    )
    print("| variant | kimg | selected at kimg (FD) | final ada p | TRTR | TSTR | gap | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, report, gan, seconds in rows:
        ci = report.get("tstr_auroc_mean_ci", [float("nan")] * 2)
        trtr_ci = report.get("trtr_auroc_mean_ci", [float("nan")] * 2)
        gap_ci = report.get("auroc_gap_ci", [float("nan")] * 2)
        selected = gan["selected"]
        fd = f"{selected['fd']:.3g}" if selected.get("fd") is not None else "last"
        print(
            f"| {variant} | {gan['kimg']:.1f} | {selected['kimg']:.1f} ({fd}) | "
            f"{gan['ada_p']:.3f} | {report['trtr_auroc_mean']:.3f} "
            f"[{trtr_ci[0]:.3f}, {trtr_ci[1]:.3f}] | {report['tstr_auroc_mean']:.3f} "
            f"[{ci[0]:.3f}, {ci[1]:.3f}] | {report['auroc_gap']:.3f} "
            f"[{gap_ci[0]:.3f}, {gap_ci[1]:.3f}] | {seconds / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
