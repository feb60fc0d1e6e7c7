"""Checkpoints: state + iterator round trip, fingerprints, stop requests."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.core import parallel
from synthjax.core.checkpoint import Checkpointer, StopRequest, abstract_like, state_sha256
from synthjax.data import input_pipeline as pipeline


def _state(seed=0):
    k = jax.random.key(seed)
    return {"step": jnp.int32(3), "w": jax.random.normal(k, (4, 3)), "b": {"x": jnp.arange(5.0)}}


def test_fingerprint_depends_on_values_dtypes_and_paths():
    a = state_sha256(_state())
    assert a == state_sha256(_state())
    assert a != state_sha256(_state(seed=1))
    s = _state()
    assert a != state_sha256(
        {**s, "step": jnp.int64(3) if jax.config.x64_enabled else jnp.int16(3)}
    )
    assert a != state_sha256({"step": s["step"], "v": s["w"], "b": s["b"]})


def test_state_and_iterator_round_trip(tmp_path):
    mesh = parallel.make_mesh()
    state = jax.device_put(_state(), parallel.replicated(mesh))
    src = [
        {"image": np.full((1, 1, 1), i, np.uint8), "labels": np.zeros(1, np.float32)}
        for i in range(9)
    ]
    ds = pipeline.train_dataset(src, np.arange(9), global_batch=4, seed=0)
    it = pipeline.train_iterator(ds)
    next(it), next(it)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(2, state, it)
    expected = next(it)["image"].ravel().tolist()

    fresh = pipeline.train_iterator(ds)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.latest_step() == 2
        restored = ckpt.restore(abstract_like(state), fresh)
    assert state_sha256(restored) == state_sha256(state)
    assert restored["w"].sharding.is_equivalent_to(parallel.replicated(mesh), 2)
    assert next(fresh)["image"].ravel().tolist() == expected


def test_restore_without_checkpoint_says_so(tmp_path):
    with Checkpointer(tmp_path / "none") as ckpt, pytest.raises(FileNotFoundError):
        ckpt.restore(abstract_like(_state()))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_become_a_flag_and_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.signal == signum
    assert signal.getsignal(signum) == before
