"""The pipeline with its workdir and prepared data in a bucket (gs://), against a local Cloud
Storage emulator on 127.0.0.1 (`tests/gcs_emulator.py`): preempted in the middle of the GAN,
killed, resumed, and ending at the fingerprints of the same run on a local disk."""

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, _command, _env, _summary
from gcs_emulator import BUCKET, client_env

from synthjax.data import remote


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "the emulator exited"
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def bucket_env(emulator, monkeypatch, tmp_path):
    env = {**client_env(emulator), remote.CACHE_ENV: str(tmp_path / "cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _forget_clients()  # this process's clients must be made with the emulator's address
    yield env
    _forget_clients()


def _forget_clients():
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
    remote._forget_bucket_clients()


def _gs(path: str):
    from etils import epath

    return epath.Path(f"gs://{BUCKET}/{path}")


def test_shards_written_to_a_bucket_read_back_through_a_local_mirror(bucket_env, tmp_path):
    from synthjax.data import loader, shards

    features = shards.image_features((4, 4, 1), 2)
    records = [
        {"image": np.full((4, 4, 1), i, np.uint8), "labels": np.eye(2, dtype=np.float32)[i % 2],
         "id": f"r{i}"}
        for i in range(5)
    ]  # fmt: skip
    dataset_dir = _gs("unit/ds/1.0.0")
    for i, chunk in enumerate((records[:3], records[3:])):
        shards.write_shard(shards.shard_path(dataset_dir, "toy", "train", i, 2), features, chunk)
    shards.write_metadata(
        dataset_dir, name="toy", features=features, shard_lengths={"train": [3, 2]},
        label_names=["a", "b"], description="toy",
    )  # fmt: skip
    source = loader.load_source(dataset_dir, "train")
    assert [source[i]["id"] for i in range(5)] == [r["id"] for r in records]
    np.testing.assert_array_equal(source.labels, np.stack([r["labels"] for r in records]))
    mirror = remote.mirror_path(dataset_dir)
    assert (mirror / "dataset_info.json").exists()
    assert (dataset_dir / "labels-train.npy").exists()  # the label cache lives in the bucket

    # A shard rewritten in place (same size: fixed-size records) is fetched again.
    changed = [dict(r, id=f"s{i}") for i, r in enumerate(records[:3])]
    shards.write_shard(shards.shard_path(dataset_dir, "toy", "train", 0, 2), features, changed)
    again = loader.load_source(dataset_dir, "train")
    assert again[0]["id"] == "s0"


def test_the_workdir_lock_in_a_bucket_is_taken_by_one_run_only(bucket_env):
    """gs:// locks are created with ifGenerationMatch=0: a second run is refused."""
    from synthjax.core import lock

    workdir = f"gs://{BUCKET}/locked"
    with lock.acquire(workdir) as held:
        assert json.loads(_gs("locked/lock.json").read_text())["token"] == held.token
        assert not lock._create(lock.lock_path(workdir), b"{}", "other")  # the raw create
        with pytest.raises(lock.WorkdirBusy):
            lock.acquire(workdir)
    assert not _gs("locked/lock.json").exists()


def _checkpoints(stage_dir) -> int:
    """The latest checkpoint step in a bucket stage dir, listed afresh (another process
    writes it, and gcsfs would otherwise answer from this process's listing cache)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(f"{stage_dir}/checkpoints")
    fs.invalidate_cache()
    if not fs.exists(path):
        return 0
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return max((int(n) for n in names if n.isdigit()), default=0)


def _start_and_stop(workdir, cache, env, min_step, sig, log_dir):
    command = _command(workdir, cache, f"--config.dataset.data_dir=gs://{BUCKET}/data")
    log = log_dir / f"stopped-by-{sig.name}.log"
    with open(log, "w") as out:  # a file, not a pipe: nothing reads a pipe while this polls
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while _checkpoints(f"{workdir}/gan") < min_step:
                assert proc.poll() is None, log.read_text()[-5000:]
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.5)
            proc.send_signal(sig)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, log.read_text()


def test_a_run_in_a_bucket_survives_preemption_and_matches_the_local_run(
    bucket_env, smoke_run, cache_dir, tmp_path
):
    reference, _ = smoke_run
    env = {**_env(), **bucket_env}
    workdir = f"gs://{BUCKET}/runs/smoke"

    # Preempted (SIGTERM) in the middle of the GAN: saves to the bucket, exits 0.
    code, err = _start_and_stop(workdir, cache_dir, env, 10, signal.SIGTERM, tmp_path)
    assert code == 0, err[-3000:]
    assert "Rerun the same command" in err
    # Killed outright after resuming: the next run starts from the last checkpoint.
    code, _ = _start_and_stop(workdir, cache_dir, env, 15, signal.SIGKILL, tmp_path)
    assert code == -signal.SIGKILL
    # A new machine: nothing local survives but the bucket (the dataset mirror is refetched).
    env[remote.CACHE_ENV] = bucket_env[remote.CACHE_ENV] + "-new-machine"
    proc = subprocess.run(
        _command(workdir, cache_dir, f"--config.dataset.data_dir=gs://{BUCKET}/data"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    _forget_clients()
    bucket = _gs("runs/smoke")
    summaries = {
        stage: json.loads((bucket / stage / "summary.json").read_text())
        for stage in ("prepare", "classifier_real", "gan", "synthesize")
    }
    # The same fingerprints as the uninterrupted local run. (The synthetic classifier trains
    # on a release shuffled with a secret seed: it differs from run to run by design.)
    for stage, summary in summaries.items():
        assert summary["state_sha256"] == _summary(reference, stage)["state_sha256"], stage
    assert (bucket / "report.json").exists() and (
        bucket / "synthetic" / "DATASET_CARD.json"
    ).exists()
    assert list((bucket / "gan" / "samples").glob("step_*.png"))
    assert not (bucket / "lock.json").exists()
    # Metrics of the resumed GAN have each step once.
    steps = [
        json.loads(line)["step"]
        for line in (bucket / "gan" / "metrics.jsonl").read_text().splitlines()
        if "loss_d" in line
    ]
    assert steps == sorted(set(steps))

    # Notebooks read the bucket directly.
    from synthjax import analysis

    runs = analysis.load_runs(f"gs://{BUCKET}/runs")
    assert list(runs["run"]) == ["smoke"] and runs["finished"].iloc[0] == "report"
    assert runs["state_sha256.gan"].iloc[0] == summaries["gan"]["state_sha256"]
