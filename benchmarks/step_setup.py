"""The real jitted train steps on random data, as the benchmark scripts time and compile them.

Where it sits: shared by the scripts of this folder (`train_step.py`, `step_profile.py`,
`checkpoint_stall.py`, `mixed_precision.py`, `cost_model.py`), which run as
`python benchmarks/<script>.py` and so import it by its bare name. It holds:

  * `gan_step`: the GAN train step of a config (`gan.make_train_step`, state donated, as in
    training; prog-GAN's final phase) with its state, a random batch and a label table;
  * `classifier_step`: the classifier's train step the same way;
  * `program_stats`: FLOPs, memory and compile time of the program a jitted step compiles;
  * `add_step_flags` / `step_config`: the flags that pick the step's config (`--config`,
    `--recipe`, `--conv-lowering`, `--fmap-max`) and the config they give.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from synthjax.core import compiler, config_files, parallel
from synthjax.train import classifier, gan

NUM_LABELS = 14
LABEL_TABLE_ROWS = 256


def random_batch(batch: int, resolution: int, channels: int, mesh) -> dict[str, jax.Array]:
    """{"image": uint8[B, R, R, C], "labels": float32[B, NUM_LABELS] (~30% ones)} on the
    mesh, seeded by the resolution."""
    rng = np.random.default_rng(resolution)
    return parallel.to_global(
        {
            "image": rng.integers(0, 256, (batch, resolution, resolution, channels), np.uint8),
            "labels": (rng.random((batch, NUM_LABELS)) < 0.3).astype(np.float32),
        },
        mesh,
    )


def gan_step(
    cfg: ml_collections.ConfigDict,
    resolution: int,
    batch: int,
    mesh,
    *,
    arch: str | None = None,
    bf16_resolution: int | None = None,
) -> tuple[Any, Any, tuple[Any, Any]]:
    """(jitted step, state, (batch, label table)): the GAN train step at `resolution`.

    `arch` and `bf16_resolution` override the config's `gan.arch` and `gan.bf16_resolution`
    when given. For prog-GAN the step is its final phase's, at `batch` images throughout.
    """
    cfg = cfg.copy_and_resolve_references()
    if arch is not None:
        cfg.gan.arch = arch
    if bf16_resolution is not None:
        cfg.gan.bf16_resolution = bf16_resolution
    cfg.gan.cpd.batch_size = cfg.gan.dcgan.batch_size = batch
    cfg.gan.prog.batch_sizes = ",".join(f"{2**k}:{batch}" for k in range(2, 11))
    cfg.gan.train_steps = 10**9  # only the final phase's program is timed
    setup = gan.gan_setup(cfg, num_labels=NUM_LABELS, image_shape=(resolution, resolution, 1))
    replicated = parallel.replicated(mesh)
    state = compiler.jit(setup.init, out_shardings=replicated)()
    step = compiler.jit(
        gan.make_train_step(cfg.gan, setup.models, setup.optimizer, setup.schedule.final),
        donate_argnums=0,
    )
    data = random_batch(batch, resolution, 1, mesh)
    rows = np.random.default_rng(0).random((LABEL_TABLE_ROWS, NUM_LABELS)) < 0.3
    table = jax.device_put(rows.astype(np.float32), replicated)
    return step, state, (data, table)


def classifier_step(
    cfg: ml_collections.ConfigDict, resolution: int, batch: int, mesh
) -> tuple[Any, Any, tuple[Any, Any]]:
    """(jitted step, state, (batch, label weights)): the classifier's train step (its
    config's architecture) at `resolution`, the state donated at every call."""
    model = classifier.build_model(cfg, NUM_LABELS)
    optimizer = classifier.make_optimizer(cfg.classifier.learning_rate)
    init = functools.partial(
        classifier.init_state, cfg.seed, model, optimizer, (resolution, resolution, 1)
    )
    state = compiler.jit(init, out_shardings=parallel.replicated(mesh))()
    step = compiler.jit(
        functools.partial(classifier.train_step, model=model, optimizer=optimizer),
        donate_argnums=0,
    )
    data = random_batch(batch, resolution, 1, mesh)
    return step, state, (data, jnp.ones(NUM_LABELS, jnp.float32))


def program_stats(jitted, *args) -> tuple[float, float, float]:
    """(flops, MiB, compile seconds) of the program `jitted` compiles for `args`: XLA's
    analyses, and the time to trace, lower and compile it."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per device program
        analysis = analysis[0]
    memory = compiled.memory_analysis()
    mib = float("nan")
    if memory is not None:
        total = memory.argument_size_in_bytes + memory.output_size_in_bytes
        mib = (total + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2**20
    return float(analysis.get("flops", float("nan"))), mib, seconds


def add_timing_flags(
    parser: argparse.ArgumentParser, *, config: str, resolutions: str, batch: int, steps: str
) -> None:
    """--config, --resolutions, --batch, --steps (`steps`: "N:what they are") and --rounds."""
    count, what = steps.split(":", 1)
    parser.add_argument("--config", default=config)
    parser.add_argument("--resolutions", default=resolutions)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=int(count), help=what)
    parser.add_argument("--rounds", type=int, default=3)


def add_step_flags(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--recipe`, `--conv-lowering` and `--fmap-max`: which step is timed."""
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument(
        "--recipe",
        default="study",
        choices=("study", "synthjax"),
        help="GAN recipe (study: the step the PyTorch twin reproduces and earlier rows timed)",
    )
    parser.add_argument("--conv-lowering", default="", help="override the config's")
    parser.add_argument("--fmap-max", type=int, default=0, help="override the config's")


def step_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The config `add_step_flags`' flags name, with their overrides applied."""
    cfg = config_files.load(args.config)
    cfg.gan.recipe = args.recipe
    cfg.conv_lowering = args.conv_lowering or cfg.conv_lowering
    for arch in ("cpd", "prog", "dcgan"):
        cfg.gan[arch].fmap_max = args.fmap_max or cfg.gan[arch].fmap_max
    return cfg
