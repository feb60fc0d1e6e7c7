"""Benchmark: the GAN train step in float32 against bfloat16 convolutions, per resolution.

Where it sits: `gan.bf16_resolution` makes every layer at that resolution and above compute
in bfloat16 (parameters, optimizer state and the coarse layers stay float32;
`synthjax.models.layers.compute_dtype`). This script measures what that buys on the machine
at hand: images/s of the real jitted train step (`synthjax.train.gan.train_step`, WGAN-GP,
one D and one G update, EMA) and the compiled program's memory (XLA's memory analysis:
arguments + temporaries), with and without bfloat16, for each architecture.

    python benchmarks/mixed_precision.py --resolutions 64,128 --batch 32
    python benchmarks/mixed_precision.py --config configs/cxr_256.py --resolutions 256

Sizes come from the config (default: the quickstart's narrow networks); `--bf16-from`
sets where bfloat16 starts (default: half the resolution, so the two finest levels run in
bfloat16). Rows alternate between float32 and bfloat16 so a shared machine slows both alike.
On CPUs without native bfloat16 matrix units expect little gain, or a loss; the point of the
option is GPUs and TPUs, where bfloat16 matmuls run at several times the float32 rate.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import step_setup  # this folder's module
from step_setup import gan_step

from synthjax.core import config_files, parallel


def _step_program(cfg, arch: str, resolution: int, bf16_from: int, batch: int, mesh):
    step, state, (batch_arrays, table) = gan_step(
        cfg, resolution, batch, mesh, arch=arch, bf16_resolution=bf16_from
    )
    compiled = step.lower(state, batch_arrays, table).compile()
    memory = compiled.memory_analysis()
    mib = float("nan")
    if memory is not None:
        mib = (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / 2**20
    return compiled, state, batch_arrays, table, mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_setup.add_timing_flags(
        parser,
        config="configs/quickstart.py",
        resolutions="64,128",
        batch=32,
        steps="6:timed steps per row and round",
    )
    parser.add_argument("--archs", default="cpd,prog")
    parser.add_argument("--bf16-from", type=int, default=0, help="0: half the resolution")
    args = parser.parse_args()
    cfg = config_files.load(args.config)
    mesh = parallel.make_mesh(-1)
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), batch {args.batch}, "
        f"config {args.config}; img/s best of {args.rounds} rounds of {args.steps} steps"
    )
    print(f"{'arch':>5} {'res':>5} {'dtype':>16} {'img/s':>9} {'MiB':>9} {'speed-up':>9}")
    for arch in args.archs.split(","):
        for resolution in (int(r) for r in args.resolutions.split(",")):
            bf16_from = args.bf16_from or resolution // 2
            rows = {
                "float32": _step_program(cfg, arch, resolution, 0, args.batch, mesh),
                f"bf16 from {bf16_from}": _step_program(
                    cfg, arch, resolution, bf16_from, args.batch, mesh
                ),
            }
            states = {name: row[1] for name, row in rows.items()}
            best = dict.fromkeys(rows, float("inf"))
            finite = {}
            for _ in range(args.rounds):
                for name, (compiled, _, batch, table, _) in rows.items():
                    state, metrics = compiled(states[name], batch, table)  # warm-up / sync
                    jax.block_until_ready(metrics)
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        state, metrics = compiled(state, batch, table)
                    jax.block_until_ready(metrics)
                    best[name] = min(best[name], time.perf_counter() - start)
                    states[name] = state
                    finite[name] = all(np.isfinite(v) for v in jax.device_get(metrics).values())
            base = args.steps * args.batch / best["float32"]
            for name, (_, _, _, _, mib) in rows.items():
                rate = args.steps * args.batch / best[name]
                flag = "" if finite[name] else "  NON-FINITE"
                print(
                    f"{arch:>5} {resolution:>5} {name:>16} {rate:>9.1f} {mib:>9.1f} "
                    f"{rate / base:>8.2f}x{flag}"
                )


if __name__ == "__main__":
    main()
