"""Several processes, one run: two processes on 127.0.0.1 (CPU, gloo collectives), each with
2 forced devices; preempted on one of them and resumed; against one process with 4 devices.

Bit for bit, a two-process run stopped by SIGTERM on one process and resumed ends where an
uninterrupted two-process run ends. Against one process with 4 devices the data, the
prepared dataset and the synthetic labels agree exactly, the GAN to float rounding only:
XLA:CPU sizes its intra-op partitioning by the devices of a process (the compiled programs
differ in `outer_dimension_partitions` alone, 4 against 2), which changes the order of some
float sums in the convolutions' gradients (about 1e-8 after one step; measured in
`test_one_process_and_two_agree`, marked slow).

Loopback only: every coordinator address here is 127.0.0.1.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from launch import local
from synthjax.core import lock
from synthjax.data.loader import load_source

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.py:smoke"
OVERRIDES = (
    "stages=('prepare','gan','synthesize')",
    "gan.fd.every_kimg=0.0",  # FD selection needs classifier_real; not the point here
)


def _plan(workdir, processes, devices, cache):
    args = local.parse(
        [
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            f"--processes={processes}",
            f"--cpu-devices={devices}",
            "--loopback",
            *(f"--override={o}" for o in (*OVERRIDES, f"compilation_cache={cache}")),
        ]
    )
    return local.process_plan(args, local.free_port())


# What is compared is bits between runs with the same settings, not speed: XLA's cheapest
# CPU settings compile several times faster.
FAST_COMPILE = " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _start(workdir, processes, devices, cache):
    procs = []
    for i, (env, command) in enumerate(_plan(workdir, processes, devices, cache)):
        env = {**os.environ, **env}
        env["XLA_FLAGS"] += FAST_COMPILE
        log = open(Path(workdir).parent / f"{Path(workdir).name}_{i}.log", "a")
        procs.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log), log))
    return procs


def _wait(procs, timeout=900):
    deadline = time.monotonic() + timeout
    codes = []
    for proc, log in procs:
        codes.append(proc.wait(timeout=max(1, deadline - time.monotonic())))
        log.close()
    return codes


def _logs(workdir, processes):
    return [
        (Path(workdir).parent / f"{Path(workdir).name}_{i}.log").read_text()
        for i in range(processes)
    ]


def _summary(workdir, stage):
    return json.loads((Path(workdir) / stage / "summary.json").read_text())


def _synthetic_digest(workdir):
    """Per split: the number of records and their (image, labels) digests, order aside (the
    release order is shuffled with a secret seed)."""
    out = {}
    for split in ("train", "validation", "test"):
        source = load_source(Path(workdir) / "synthetic", split)
        records = sorted(
            hashlib.sha256(r["image"].tobytes() + r["labels"].tobytes()).hexdigest()
            for r in (source[i] for i in range(len(source)))
        )
        out[split] = (len(source), hashlib.sha256("".join(records).encode()).hexdigest())
    return out


def _run(workdir, processes, devices, cache):
    codes = _wait(_start(workdir, processes, devices, cache))
    logs = _logs(workdir, processes)
    assert codes == [0] * processes, "\n".join(log[-3000:] for log in logs)
    return logs


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, cache):
    """Two processes, 2 CPU devices each, uninterrupted."""
    workdir = tmp_path_factory.mktemp("two") / "run"
    logs = _run(workdir, 2, 2, cache)
    return workdir, logs


def test_two_processes_split_the_work_and_process_0_writes(two_processes):
    workdir, logs = two_processes
    assert "joined a 2-process run as process 1" in logs[1]
    assert "== prepare: done by process 0" in logs[1]  # process 1 waited for the data
    assert "2 local / 4 global devices" in logs[0]
    # Every synthetic shard is there, written by the process whose turn it was.
    card = json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())
    prepared = _summary(workdir, "prepare")
    dropped = {s: v["dropped"] for s, v in card["release"]["per_split"].items()}
    assert {s: n + dropped[s] for s, n in card["counts"].items()} == prepared["images"]
    # No real-trained classifier in this run: the memorization audit ran in pixels alone.
    assert list(card["privacy"]["spaces"]) == ["pixels_16"]
    assert "domain_features" in card["privacy"]["not_audited"]
    real = load_source(prepared["dataset_dir"], "train")
    subset = np.load(workdir / "prepare" / "subset.npz")["indices_train"]
    if not dropped["train"]:  # the same label vectors, in a secretly shuffled order
        synthetic = load_source(workdir / "synthetic", "train").labels
        assert sorted(map(bytes, synthetic)) == sorted(map(bytes, real.labels[subset]))
    logged = [
        json.loads(line)["step"]
        for line in (workdir / "gan" / "metrics.jsonl").read_text().splitlines()
        if "loss_d" in line
    ]
    assert logged == sorted(set(logged))  # each step once: only process 0 writes


def test_both_processes_refuse_a_workdir_another_run_holds(tmp_path, cache):
    """Process 0 finds the workdir's lock held (here by this test's process, alive on this
    host): every process of the job refuses with it (exit 3), none waits at a barrier."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = lock._record("held-by-the-test", time.time())
    (workdir / lock.LOCK_NAME).write_text(json.dumps(holder))
    codes = _wait(_start(workdir, 2, 2, cache), timeout=300)
    logs = _logs(workdir, 2)
    assert codes == [3, 3], "\n".join(log[-3000:] for log in logs)
    for log in logs:
        assert f"in use by another run: host {holder['host']}, pid {os.getpid()}" in log
    assert sorted(p.name for p in workdir.iterdir()) == [lock.LOCK_NAME]  # nothing written
    assert json.loads((workdir / lock.LOCK_NAME).read_text()) == holder


@pytest.mark.slow  # ~1.5 min; the single-process SIGTERM path is in e2e_test
def test_sigterm_to_one_process_stops_both_and_the_rerun_ends_bit_for_bit(
    two_processes, cache, tmp_path
):
    reference, _ = two_processes
    workdir = tmp_path / "run"
    procs = _start(workdir, 2, 2, cache)
    # SIGTERM to process 1 only, once the GAN is a few steps in (its first checkpoint).
    deadline = time.monotonic() + 600
    while not any((workdir / "gan" / "checkpoints").glob("[0-9]*")):
        assert all(p.poll() is None for p, _ in procs), _logs(workdir, 2)[1][-5000:]
        assert time.monotonic() < deadline, "the GAN did not start in time"
        time.sleep(0.2)
    procs[1][0].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    codes = _wait(procs, timeout=300)
    exit_s = time.monotonic() - sent
    logs = _logs(workdir, 2)
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for log in logs:  # both stopped together and said how to go on
        assert "SIGTERM to one of the 2 processes" in log and "on every host" in log
    assert not (workdir / "gan" / "summary.json").exists()
    steps = sorted(int(p.name) for p in (workdir / "gan" / "checkpoints").glob("[0-9]*"))
    assert 0 < steps[-1] < 30
    print(f"SIGTERM to the exit of both processes: {exit_s:.1f} s (saved at step {steps[-1]})")

    _run(workdir, 2, 2, cache)
    for stage in ("prepare", "gan", "synthesize"):
        assert (
            _summary(workdir, stage)["state_sha256"] == _summary(reference, stage)["state_sha256"]
        ), stage
    assert _synthetic_digest(workdir) == _synthetic_digest(reference)


@pytest.mark.slow
def test_one_process_and_two_agree(two_processes, tmp_path):
    """One process with 4 devices (connected through gloo too, --loopback) and two with 2."""
    reference, _ = two_processes
    workdir = tmp_path / "one"
    _run(workdir, 1, 4, tmp_path / "cache")
    assert (
        _summary(workdir, "prepare")["state_sha256"]
        == _summary(reference, "prepare")["state_sha256"]
    )
    first = [
        json.loads((w / "gan" / "metrics.jsonl").read_text().splitlines()[0])
        for w in (workdir, reference)
    ]
    # The losses, and the penalty when the recipe logs one at the first step (WGAN-GP's gp;
    # lazy R1 does not run at step 1).
    keys = {"loss_d", "loss_g", "label_loss_d"} | ({"gp", "r1"} & set(first[0]))
    assert keys <= set(first[0]) & set(first[1]), sorted(first[0])
    for key in sorted(keys):
        np.testing.assert_allclose(first[0][key], first[1][key], rtol=1e-5)
    for split in ("train", "validation", "test"):
        a, b = (load_source(w / "synthetic", split) for w in (workdir, reference))
        assert sorted(map(bytes, a.labels)) == sorted(map(bytes, b.labels))
    print(
        "gan state_sha256: one process",
        _summary(workdir, "gan")["state_sha256"][:16],
        "two",
        _summary(reference, "gan")["state_sha256"][:16],
    )
