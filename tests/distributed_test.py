"""When a process joins a multi-process run, and what it refuses (no JAX backend needed)."""

import pytest

from synthjax.core import distributed
from synthjax.core.distributed import Launch
from synthjax.core.errors import ConfigError

CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    for name in (*CLUSTER_VARS, "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)


def test_alone_by_default_and_with_off():
    assert distributed.reason_to_connect(Launch()) is None
    assert distributed.reason_to_connect(Launch(mode="off")) is None
    assert "asked" in distributed.reason_to_connect(Launch(mode="on"))


def test_explicit_flags_connect_and_must_come_together():
    assert distributed.reason_to_connect(Launch("auto", "127.0.0.1:1234", 2, 1)) == "flags"
    with pytest.raises(ConfigError, match="all three or none"):
        distributed.reason_to_connect(Launch("auto", "127.0.0.1:1234", 2, None))
    with pytest.raises(ConfigError, match=r"not in \[0, 2\)"):
        distributed.reason_to_connect(Launch("auto", "127.0.0.1:1234", 2, 2))


def test_slurm_steps_and_tpu_slices_with_several_workers_connect(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.reason_to_connect(Launch()) is None  # one task: alone
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert "16 tasks" in distributed.reason_to_connect(Launch())
    assert distributed.reason_to_connect(Launch(mode="off")) is None
    for name in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1,w2,w3")
    assert "4 workers" in distributed.reason_to_connect(Launch())


def test_one_process_primitives_are_no_ops():
    distributed.barrier("nothing to wait for")
    assert distributed.preemption_reached(10) is False
    calls = []
    fn = distributed.CompiledEverywhere(lambda *a: calls.append(a) or 1, "f")
    assert fn(1, 2) == 1 and calls == [(1, 2)]


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="unknown mode"):
        distributed.initialize(Launch(mode="maybe"))
