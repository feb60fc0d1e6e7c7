"""Benchmark: XLA's native convolution vs im2col + matmul for the cpD-GAN, on this backend.

Where it sits: `synthjax.models.layers.conv2d` lowers every convolution either way and
`resolve_conv_lowering('auto')` picks im2col on CPU; this script is the evidence for that
choice (and the check to re-run on a new machine or backend). It times one fwd+bwd step
(gradients with respect to the parameters) of the discriminator and of the generator with
each lowering, and a plain float32 matmul as the reference peak.

    python benchmarks/conv_lowering.py                  # D and G at 32x32, batch 64
    python benchmarks/conv_lowering.py --resolution 64 --batch 16

FLOPs come from XLA's cost analysis of the compiled step; achieved GFLOP/s uses the native
program's count for both lowerings so the two rows measure the same work. Cost per image
grows about with resolution**2 (channels shrink only above 64x64 with the study's sizes).
"""

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from synthjax.core import compiler
from synthjax.models.cpd_gan import Discriminator, Generator
from synthjax.models.layers import count_params


def _flops(compiled: Any) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX returns one dict per device program
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def _interleaved_seconds(
    programs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]], rounds: int
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall seconds, process CPU seconds) per call, measured round-robin.

    The machine is shared, so the programs take turns: a burst of someone else's work slows
    every row alike instead of one of them. Wall time is reported as best and median; CPU
    time (all our threads) barely moves when others compete for the cores, so work per
    CPU-second is the steadier efficiency figure.
    """
    for step, args in programs.values():
        jax.block_until_ready(step(*args))  # warm-up: first call pays allocation and caching
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in programs}
    for _ in range(rounds):
        for name, (step, args) in programs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(step(*args))
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return times


def _gradient_step(model_name: str, lowering: str, args: argparse.Namespace):
    """(jitted step, params, inputs) for one fwd+bwd pass of G or D."""
    sizes = dict(
        resolution=args.resolution,
        num_labels=args.num_labels,
        fmap_base=args.fmap_base,
        fmap_max=args.fmap_max,
        conv_lowering=lowering,
    )
    key = jax.random.key(0)
    labels = (jax.random.uniform(key, (args.batch, args.num_labels)) < 0.3).astype(jnp.float32)
    if model_name == "D":
        model = Discriminator(**sizes)
        data = jax.random.normal(key, (args.batch, args.resolution, args.resolution, 1))
    else:
        model = Generator(latent_dim=args.latent_dim, **sizes)
        data = jax.random.normal(key, (args.batch, args.latent_dim))
    params = compiler.jit(model.init)(key, data, labels)

    def loss(params, data, labels):
        out = model.apply(params, data, labels)
        out = out[0] if isinstance(out, tuple) else out  # D: (scores, aux logits)
        return jnp.mean(jnp.square(out))

    return compiler.jit(jax.value_and_grad(loss)), params, (data, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--fmap-base", type=int, default=16384)
    parser.add_argument("--fmap-max", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=512)
    parser.add_argument("--num-labels", type=int, default=14)
    parser.add_argument("--models", default="D,G", help="comma-separated subset of D,G")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per program")
    parser.add_argument("--matmul-size", type=int, default=2048)
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} before the run"
    )
    print(
        f"cpD-GAN fwd+bwd, {args.resolution}x{args.resolution}, batch {args.batch}, "
        f"fmap_base {args.fmap_base}, fmap_max {args.fmap_max}, latent {args.latent_dim}, "
        f"{args.num_labels} labels, best and median of {args.rounds} interleaved rounds"
    )

    programs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
    info: dict[str, tuple[int, float, float]] = {}  # params, compile seconds, XLA flops
    for model_name in args.models.split(","):
        for lowering in ("native", "im2col"):
            step, params, inputs = _gradient_step(model_name, lowering, args)
            t0 = time.perf_counter()
            compiled = step.lower(params, *inputs).compile()
            compile_seconds = time.perf_counter() - t0
            name = f"{model_name} {lowering}"
            programs[name] = (compiled, (params, *inputs))
            info[name] = (count_params(params), compile_seconds, _flops(compiled))
    n = args.matmul_size
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    programs["matmul"] = (compiler.jit(jnp.matmul), (a, a))

    times = _interleaved_seconds(programs, args.rounds)

    header = (
        f"{'model':<5} {'lowering':<8} {'params':>10} {'compile s':>9} {'GFLOP/step':>10} "
        f"{'best ms':>8} {'median ms':>9} {'images/s':>8} {'GFLOP/s':>7} {'GFLOP/cpu-s':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, (params, compile_seconds, flops) in info.items():
        model_name, lowering = name.split()
        # Both lowerings do the same arithmetic; XLA counts im2col's slices and concatenation
        # a little differently, so the native count is the common yardstick.
        work = info[f"{model_name} native"][2]
        wall, cpu = times[name]
        best, median, cpu_median = min(wall), float(np.median(wall)), float(np.median(cpu))
        print(
            f"{model_name:<5} {lowering:<8} {params:>10,} {compile_seconds:>9.1f} "
            f"{flops / 1e9:>10.1f} {best * 1e3:>8.0f} {median * 1e3:>9.0f} "
            f"{args.batch / best:>8.1f} {work / best / 1e9:>7.1f} {work / cpu_median / 1e9:>11.1f}"
        )
    wall, cpu = times["matmul"]
    print(
        f"reference: float32 matmul {n}x{n}x{n}: best {2 * n**3 / min(wall) / 1e9:.1f} GFLOP/s, "
        f"{2 * n**3 / float(np.median(cpu)) / 1e9:.1f} GFLOP/cpu-s"
    )
    print(
        "images/s and GFLOP/s use the best wall time; GFLOP/cpu-s the median CPU time.\n"
        "Cost per image grows ~ resolution**2."
    )


if __name__ == "__main__":
    main()
