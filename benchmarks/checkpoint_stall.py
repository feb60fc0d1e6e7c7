"""Benchmark: how long a checkpoint save stalls GAN training, async against blocking.

Where it sits: every stage saves through `synthjax.core.checkpoint.Checkpointer` (orbax,
asynchronous by default: the device->host copy blocks, the file writing runs in a thread).
This script times the real jitted GAN train step (`gan.make_train_step`, state donated, as
in training) around one save: the stall is the time the save call itself takes plus how
much slower the steps after it run (the writer thread shares the CPU) than the median step,
summed over the steps until the save has finished. Both modes per resolution, repeated.

    python benchmarks/checkpoint_stall.py --resolutions 32,128 --rounds 3
    python benchmarks/checkpoint_stall.py --config configs/cxr_256.py --resolutions 256

It also prints the checkpoint's size on disk. Sizes come from the config (default: the
study's own networks, configs/default.py, at batch `--batch`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import step_setup  # this folder's module
from step_setup import gan_step

from synthjax.core import config_files, parallel
from synthjax.core.checkpoint import Checkpointer


def _stall(step, state, batch, table, directory: Path, *, async_save: bool, steps: int):
    """(stall seconds, median step seconds, bytes on disk, state) around one save."""
    times = []
    for _ in range(steps):  # the undisturbed step time
        t = time.perf_counter()
        state, m = step(state, batch, table)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    ckpt = Checkpointer(directory, async_save=async_save)
    t = time.perf_counter()
    ckpt.save(1, state)
    stall = time.perf_counter() - t
    after = 0
    while after < 4 * steps:  # the steps while the writer thread still runs
        t = time.perf_counter()
        state, m = step(state, batch, table)
        jax.block_until_ready(m)
        stall += max(0.0, time.perf_counter() - t - median)
        after += 1
        if not ckpt._manager.is_saving_in_progress():
            break
    t = time.perf_counter()
    ckpt.close()  # whatever is left of the write blocks here
    stall += time.perf_counter() - t
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return stall, median, size, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_setup.add_timing_flags(
        parser,
        config="configs/default.py",
        resolutions="32,128",
        batch=8,
        steps="5:undisturbed steps per round",
    )
    args = parser.parse_args()
    cfg = config_files.load(args.config)
    mesh = parallel.make_mesh(-1)
    print(
        f"{jax.device_count()} {jax.default_backend()} device(s); {args.config}, "
        f"batch {args.batch}, {args.rounds} rounds; stall = save call + slowdown after it"
    )
    print(f"{'res':>5} {'mode':>8} {'step s':>8} {'stall s':>16} {'stall/step':>11} {'MiB':>8}")
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        step, state, (batch, table) = gan_step(cfg, resolution, args.batch, mesh)
        state, m = step(state, batch, table)  # compile
        jax.block_until_ready(m)
        results = {True: [], False: []}
        root = Path(tempfile.mkdtemp(prefix="ckpt_stall_"))
        for r in range(args.rounds):
            for async_save in (True, False):  # alternate: a shared machine slows both alike
                directory = root / f"{r}_{async_save}"
                stall, median, size, state = _stall(
                    step, state, batch, table, directory, async_save=async_save, steps=args.steps
                )
                results[async_save].append((stall, median, size))
                shutil.rmtree(directory)
        shutil.rmtree(root)
        for async_save in (True, False):
            rows = np.asarray(results[async_save])
            stall, median, size = np.median(rows, axis=0)
            spread = f"{stall:.2f} [{rows[:, 0].min():.2f}-{rows[:, 0].max():.2f}]"
            print(
                f"{resolution:>5} {'async' if async_save else 'blocking':>8} {median:>8.3f} "
                f"{spread:>16} {stall / median:>11.1f} {size / 2**20:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
