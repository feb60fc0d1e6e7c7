"""The training loop's pacing: the host never runs far ahead of the device."""

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from synthjax.core import parallel
from synthjax.data import input_pipeline as pipeline
from synthjax.train import loop


def _settings(tmp_path, name: str, total_steps: int) -> loop.LoopSettings:
    return loop.LoopSettings(
        name=name,
        stage_dir=epath.Path(tmp_path),
        total_steps=total_steps,
        global_batch=4,
        checkpoint_every=100,
        log_every=100,
    )


def test_host_stays_within_one_step_of_the_device(tmp_path):
    """Dispatch is asynchronous: unbounded, the host would queue all 12 slow steps at once
    (each holding its batch) and progress would report the dispatch rate. The loop
    dispatches step n+1 only once step n-1 has finished, so at most two are unfinished."""
    mesh = parallel.make_mesh(1)
    rep = parallel.replicated(mesh)
    a = jnp.full((400, 400), 1e-3)

    @jax.jit
    def step(state, batch):
        x = state["x"] + jnp.mean(batch["image"].astype(jnp.float32))
        x = jax.lax.fori_loop(0, 30, lambda _, m: jnp.tanh(m @ a), x + a)  # ~50 ms of work
        return {"step": state["step"] + 1, "x": x}, {"loss": jnp.mean(x)}

    outputs, unfinished = [], []

    def step_fn(state, batch, i):
        unfinished.append(sum(not m["loss"].is_ready() for m in outputs))
        state, metrics = step(state, batch)
        outputs.append(metrics)
        return state, metrics

    source = [
        {"image": np.full((4, 4, 1), i, np.uint8), "labels": np.zeros(2, np.float32)}
        for i in range(8)
    ]
    result = loop.train_loop(
        _settings(tmp_path, "pace", 12),
        mesh=mesh,
        create_state=lambda: jax.device_put(
            {"step": jnp.int32(0), "x": jnp.zeros((400, 400))}, rep
        ),
        step_fn=step_fn,
        dataset=pipeline.train_dataset(source, np.arange(8), global_batch=4, seed=0),
        state_step=lambda s: int(s["step"]),
    )
    assert result.step == 12
    assert max(unfinished) <= 1, unfinished


def test_an_error_in_a_step_says_after_which_step(tmp_path):
    """The note under the traceback is what `launch/tpu_vm.py` compares between attempts."""
    import pytest

    mesh = parallel.make_mesh(1)

    def step_fn(state, batch, i):
        if i == 3:
            raise ValueError("boom")
        return {"step": state["step"] + 1}, {"loss": jnp.float32(0)}

    source = [
        {"image": np.full((4, 4, 1), i, np.uint8), "labels": np.zeros(2, np.float32)}
        for i in range(8)
    ]
    with pytest.raises(ValueError, match="boom") as raised:
        loop.train_loop(
            _settings(tmp_path, "gan", 10),
            mesh=mesh,
            create_state=lambda: jax.device_put({"step": jnp.int32(0)}, parallel.replicated(mesh)),
            step_fn=step_fn,
            dataset=pipeline.train_dataset(source, np.arange(8), global_batch=4, seed=0),
            state_step=lambda s: int(s["step"]),
        )
    assert raised.value.__notes__ == ["gan: failed after step 3"]
