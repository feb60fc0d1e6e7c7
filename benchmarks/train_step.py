"""Benchmark: the training steps' speed on this machine, against its matmul peak and PyTorch.

Where it sits: every GAN and classifier stage spends its time in one jitted step
(`synthjax.train.gan.train_step`: a WGAN-GP discriminator update with its double backward,
a generator update and the EMA; `synthjax.train.classifier.train_step`). This script
prints one table a row per (step, architecture, resolution):

- img/s: training images per second of wall time (best of `--rounds`, each `--steps` long,
  after a warm-up), and ms per step;
- compile: seconds to trace, lower and compile the step (for PyTorch: the first call,
  which is where `torch.compile` compiles), and `programs`, how many programs the jitted
  step compiled over the whole row (1 = no recompiles);
- GFLOP/img and GFLOP/s: XLA's cost analysis of the compiled step, per training image and
  per second; `MFU` divides GFLOP/s by this machine's measured float32 matmul peak (the
  first lines), the fraction of the peak the step reaches;
- MiB: the compiled program's memory (XLA's memory analysis: arguments, outputs and
  temporaries); the process's peak resident memory is printed at the end;
- cost x: GFLOP per image relative to the first resolution, beside (res / first)^2, how
  cost grows with resolution.

With PyTorch installed (`pip install torch`, a benchmark-only dependency) the same cpD-GAN
step written in PyTorch (`benchmarks/torch_cpd_gan.py`, checked against ours for equal
outputs at the start) is timed in the same run, eager and `torch.compile`d, and `torch x`
is our img/s over PyTorch's.

    python benchmarks/train_step.py                          # quickstart sizes, 32..256
    python benchmarks/train_step.py --resolutions 32 --batch 64 --archs cpd
    python benchmarks/train_step.py --config configs/cxr_256.py --resolutions 32 --batch 16

Sizes come from `--config` (default: the quickstart's narrow networks). The batch is
`--batch` at every resolution.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import step_setup  # this folder's module

from synthjax.core import compiler, parallel
from synthjax.models.layers import resolve_conv_lowering


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), seconds: float = 1.0) -> dict[int, float]:
    """GFLOP/s of a jitted float32 square matmul of each size (best call over `seconds`)."""
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f = compiler.jit(jnp.matmul)
        jax.block_until_ready(f(a, b))
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            jax.block_until_ready(f(a, b))
            best = min(best, time.perf_counter() - t)
        out[n] = 2 * n**3 / best / 1e9
    return out


def time_steps(step, state, args: tuple, *, steps: int, rounds: int) -> dict[str, Any]:
    """Calls `state = step(state, *args)[0]` repeatedly: best seconds per step over
    `rounds` of `steps` (after a warm-up call), and the number of programs `step` compiled
    (more than 1 would be a recompile)."""
    state, metrics = step(state, *args)
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, *args)
        jax.block_until_ready(metrics)
        best = min(best, (time.perf_counter() - start) / steps)
    finite = all(np.isfinite(np.asarray(v)).all() for v in jax.device_get(metrics).values())
    return {"step_s": best, "programs": step._cache_size(), "finite": finite}


def step_row(name: str, built: tuple, resolution: int, batch: int, args) -> dict[str, Any]:
    """One row of the table: the program's cost and the step's timing. `built` is
    (jitted step, state, inputs), as `step_setup` builds them."""
    step, state, inputs = built
    flops, mib, compile_s = step_setup.program_stats(step, state, *inputs)
    timing = time_steps(step, state, inputs, steps=args.steps, rounds=args.rounds)
    return {
        "step": name,
        "resolution": resolution,
        "batch": batch,
        "flops": flops,
        "mib": mib,
        "compile_s": compile_s,
        **timing,
    }


def gan_row(cfg, arch: str, resolution: int, batch: int, mesh, args) -> dict[str, Any]:
    """The GAN train step of `arch` at `resolution` (its final phase for prog-GAN)."""
    built = step_setup.gan_step(cfg, resolution, batch, mesh, arch=arch)
    return step_row(f"gan {arch}", built, resolution, batch, args)


def classifier_row(cfg, resolution: int, batch: int, mesh, args) -> dict[str, Any]:
    """The classifier's train step (its config's architecture) at `resolution`."""
    built = step_setup.classifier_step(cfg, resolution, batch, mesh)
    return step_row(f"classifier {cfg.classifier.arch}", built, resolution, batch, args)


def torch_rows(cfg, resolution: int, batch: int, args) -> list[dict[str, Any]]:
    """The same cpD-GAN step in PyTorch, eager and compiled (empty without torch)."""
    try:
        import torch
    except ImportError:
        return []
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_cpd_gan

    rows = []
    for compiled in (False, True):
        name = "torch compile" if compiled else "torch eager"
        try:
            step = torch_cpd_gan.make_train_step(
                resolution,
                step_setup.NUM_LABELS,
                batch,
                latent_dim=cfg.gan.latent_dim,
                fmap_base=cfg.gan.cpd.fmap_base,
                fmap_max=cfg.gan.cpd.fmap_max,
                learning_rate=cfg.gan.cpd.learning_rate,
                compile=compiled,
            )
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            best = float("inf")
            for _ in range(args.rounds):
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                best = min(best, (time.perf_counter() - start) / args.steps)
        except Exception as error:  # a compiler that cannot take the step is a finding
            print(f"  {name} at {resolution}: failed ({type(error).__name__}: {error})"[:300])
            continue
        rows.append(
            {
                "step": f"{name} cpd",
                "resolution": resolution,
                "batch": batch,
                "compile_s": first,
                "step_s": best,
                "programs": float("nan"),
                "flops": float("nan"),
                "mib": float("nan"),
                "finite": True,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], peak: float) -> None:
    print(
        f"\n{'step':<26} {'res':>4} {'batch':>5} {'img/s':>8} {'ms/step':>8} {'compile':>8} "
        f"{'programs':>8} {'GFLOP/img':>9} {'GFLOP/s':>8} {'MFU':>6} {'MiB':>7} "
        f"{'cost x':>7} {'res^2 x':>7} {'torch x':>7}"
    )
    first_cost: dict[str, float] = {}
    first_res: dict[str, int] = {}
    torch_rate = {
        (r["resolution"], r["step"]): r["batch"] / r["step_s"]
        for r in rows
        if r["step"].startswith("torch")
    }
    for r in rows:
        rate = r["batch"] / r["step_s"]
        gflop_img = r["flops"] / r["batch"] / 1e9
        gflops = r["flops"] / r["step_s"] / 1e9
        first_cost.setdefault(r["step"], gflop_img)
        first_res.setdefault(r["step"], r["resolution"])
        ratio = ""
        if r["step"] == "gan cpd" and torch_rate:
            best_torch = max(
                (v for (res, _), v in torch_rate.items() if res == r["resolution"]), default=None
            )
            ratio = f"{rate / best_torch:.2f}" if best_torch else ""
        flag = "" if r["finite"] else "  NON-FINITE"
        print(
            f"{r['step']:<26} {r['resolution']:>4} {r['batch']:>5} {rate:>8.1f} "
            f"{1e3 * r['step_s']:>8.1f} {r['compile_s']:>7.1f}s {r['programs']:>8} "
            f"{gflop_img:>9.3f} {gflops:>8.1f} {gflops / peak:>6.1%} {r['mib']:>7.1f} "
            f"{gflop_img / first_cost[r['step']]:>7.1f} "
            f"{(r['resolution'] / first_res[r['step']]) ** 2:>7.0f} {ratio:>7}{flag}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_setup.add_step_flags(parser)
    parser.add_argument("--resolutions", default="32,64,128,256")
    parser.add_argument("--archs", default="cpd,prog")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classifier-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument(
        "--torch-resolutions", default="32", help="where PyTorch is timed (compiling is slow)"
    )
    args = parser.parse_args()
    cfg = step_setup.step_config(args)
    mesh = parallel.make_mesh(-1)
    peaks = matmul_peak()
    peak = max(peaks.values())
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), config {args.config}, "
        f"conv lowering {cfg.conv_lowering} ({resolve_conv_lowering(cfg.conv_lowering)}), "
        f"fmap_max {cfg.gan.cpd.fmap_max}; best of {args.rounds} rounds of {args.steps} steps"
    )
    print(f"compiler options: {compiler.options() or 'XLA defaults'}")
    print(
        "float32 matmul peak: "
        + ", ".join(f"{n}x{n}: {g:.1f} GFLOP/s" for n, g in peaks.items())
        + f" -> MFU is against {peak:.1f} GFLOP/s"
    )
    rows = []
    for resolution in (int(r) for r in args.resolutions.split(",")):
        for arch in args.archs.split(","):
            rows.append(gan_row(cfg, arch, resolution, args.batch, mesh, args))
            print(f"  timed gan {arch} at {resolution}", flush=True)
        if not args.skip_torch and str(resolution) in args.torch_resolutions.split(","):
            rows.extend(torch_rows(cfg, resolution, args.batch, args))
        if not args.skip_classifier:
            rows.append(classifier_row(cfg, resolution, args.classifier_batch, mesh, args))
            print(f"  timed classifier at {resolution}", flush=True)
    rows.sort(key=lambda r: (r["step"], r["resolution"]))
    print_table(rows, peak)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\npeak resident memory of this process: {peak_rss:.0f} MiB")


if __name__ == "__main__":
    main()
