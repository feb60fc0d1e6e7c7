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


def test_a_checkpoint_of_the_flat_gan_state_restores_into_the_nested_one(tmp_path):
    """Workdirs written before the GAN state was nested hold its fields as one flat tree;
    `restore_state` reads them through `flat_layout`, every field where it was."""
    from synthjax.core.checkpoint import Checkpointer, abstract_like
    from synthjax.train.gan import AdaState, GanOptimizers, GanState
    from synthjax.train.selection import BestSoFar

    def scalar(v, dtype=jnp.float32):
        return jnp.asarray(v, dtype)

    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    state = GanState(
        step=scalar(7, jnp.int32),
        g_params=params,
        d_params={"v": jnp.ones(4)},
        g_ema=jax.tree.map(lambda x: x + 1, params),
        opt=GanOptimizers(g={"m": jnp.zeros(2)}, d={"m": jnp.full(2, 3.0)}),
        rng=jnp.arange(2, dtype=jnp.uint32),
        phase=scalar(1, jnp.int32),
        alpha=scalar(0.5),
        ada=AdaState(p=scalar(0.25), signs=scalar(3.0), count=scalar(8.0)),
        best=BestSoFar(
            jax.tree.map(lambda x: x + 2, params),
            {"fd": scalar(1.5), "label_fidelity": scalar(0.75)},
            scalar(4, jnp.int32),
            scalar(2, jnp.int32),
        ),
        min_fd=scalar(1.25),
    )
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        ckpt.save(7, state.flat_layout())
    restored = loop.restore_final_state(epath.Path(tmp_path), abstract_like(state))
    assert isinstance(restored, GanState)
    for want, got in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(got, want)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
