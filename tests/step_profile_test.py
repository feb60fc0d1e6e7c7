"""benchmarks/step_profile.py: the GAN step's operations are found in a real profile and
attributed to the parts of the step its named scopes mark."""

import sys
from pathlib import Path

import jax
import numpy as np

from configs import default
from synthjax.core import parallel
from synthjax.train import gan

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import step_profile


def test_profile_attributes_the_gan_step(tmp_path):
    cfg = default.get_config("smoke")
    cfg.gan.recipe = "study"  # the profiled step: WGAN-GP with its double backward
    mesh = parallel.make_mesh(1)
    setup = gan.gan_setup(cfg, num_labels=3, image_shape=(8, 8, 1))
    state = jax.jit(setup.init, out_shardings=parallel.replicated(mesh))()
    step = jax.jit(
        gan.make_train_step(cfg.gan, setup.models, setup.optimizer, setup.schedule.final),
        donate_argnums=0,
    )
    rng = np.random.default_rng(0)
    batch = parallel.to_global(
        {
            "image": rng.integers(0, 256, (4, 8, 8, 1)).astype(np.uint8),
            "labels": (rng.random((4, 3)) < 0.4).astype(np.float32),
        },
        mesh,
    )
    table = jax.device_put((rng.random((10, 3)) < 0.4).astype(np.float32))
    program = step_profile.instructions(step.lower(state, batch, table).compile().as_text())

    parts = {step_profile.part_of(info["op_name"]) for info in program.values()}
    assert {
        "D update: G and D forward",
        "D update: D backward",
        "D: gradient penalty (double backward)",
        "G update: G and D forward",
        "G update: G and D backward",
        "optimisers (Adam)",
        "EMA",
    } <= parts
    kinds = {step_profile.kind_of(name, info) for name, info in program.items()}
    assert "matmul / convolution" in kinds

    for _ in range(2):  # compile and settle the state's placement: no compile in the trace
        state, metrics = step(state, batch, table)
    jax.block_until_ready(metrics)
    jax.profiler.start_trace(str(tmp_path))
    state, metrics = step(state, batch, table)
    jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    assert step._cache_size() == 1
    matched = [name for name in step_profile.trace_durations(tmp_path) if name in program]
    assert matched, "no operation of the compiled step appears in the profile"
    assert any(step_profile.kind_of(n, program[n]) == "matmul / convolution" for n in matched)
