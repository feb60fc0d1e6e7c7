"""The TPU VM launcher: its dry run per TPU generation, its checked inputs, how it follows a
job it started detached (a fake gcloud: VM states, workers, a bucket), and the job script it
runs on the workers, executed here with a fake `gcloud storage cp`."""

import os
import shlex
import subprocess
import sys
import tempfile
import time

import pytest

from launch import common, tpu_endings, tpu_job, tpu_vm

TPU = [
    "--name=cxr256",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--config=configs/cxr_256.py",
    "--workdir=gs://bucket/runs/cxr256",
]
LOGS = "gs://bucket/runs/cxr256/logs"
WORKERS = ("worker0", "worker1")


def _steps(out: str) -> dict[str, str]:
    """The dry run's `[step] command` lines, by step."""
    return {line.split("]")[0][1:]: line for line in out.splitlines() if line.startswith("[")}


# --- the dry run ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accelerator, image",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_dry_run_installs_python_3_11_with_uv_and_starts_the_job_detached(
    accelerator, image, capsys
):
    argv = [a for a in TPU if not a.startswith("--accelerator-type=")]
    argv += [f"--accelerator-type={accelerator}", "--spot", "--override=gan.train_kimg=100.0"]
    assert tpu_vm.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    steps = _steps(out)
    assert set(steps) >= {"state", "create", "archive", "copy", "install", "start", "status"}
    create = steps["create"]
    assert f"tpu-vm create cxr256 --accelerator-type={accelerator} --version={image}" in create
    assert "--spot" in create and "--zone=us-central2-b" in create
    # The image's Python is 3.10: uv (from its pip, for this user) makes a 3.11 venv.
    install = steps["install"]
    assert "--worker=all" in install
    assert "python3 -m pip install --user --quiet uv" in install
    assert "~/.local/bin/uv venv --python 3.11 ~/synthjax-venv" in install
    assert "uv pip install --python ~/synthjax-venv/bin/python -e" in install
    assert "[tpu,gcs]" in install
    assert "$( [ -f constraints.txt ] && echo -c constraints.txt )" in install
    assert "curl" not in install and "sudo" not in install
    assert steps["copy"].endswith("--worker=all --zone=us-central2-b")
    assert "synthjax-job.sh" in steps["copy"]
    assert "--worker=all '--command=bash ~/synthjax-job.sh start 1'" in steps["start"]
    assert "synthjax-job.sh status" in steps["status"]
    # The script it starts: detached, the venv's Python, logs to the workdir.
    assert 'nohup setsid -w bash "$0" run "$1" < /dev/null' in out
    job = next(line for line in out.splitlines() if "-m synthjax.main" in line)
    assert '"$HOME/synthjax-venv/bin/python" -m synthjax.main --config=configs/cxr_256.py' in job
    assert "--workdir=gs://bucket/runs/cxr256" in job and "--distributed=on" in job
    assert "--config.gan.train_kimg=100.0" in job
    assert f"LOGS={LOGS}" in out


def test_version_overrides_the_generations_image(capsys):
    assert tpu_vm.main([*TPU, "--version=tpu-vm-base", "--dry-run"]) == 0
    assert "--version=tpu-vm-base" in _steps(capsys.readouterr().out)["create"]


@pytest.mark.parametrize(
    "change, message",
    [
        ("--workdir=/home/me/run", "lost on preemption"),
        ("--accelerator-type=a100", "not a TPU type"),
        ("--accelerator-type=v9-8", "give one with --version"),
        ("--name=My_VM", "lowercase"),
        ("--config=configs/nope.py", "no config file"),
    ],
)
def test_tpu_launcher_refuses_bad_inputs(change, message, capsys):
    key = change.split("=")[0]
    argv = [a for a in TPU if not a.startswith(key + "=")] + [change, "--dry-run"]
    with pytest.raises(SystemExit) as stop:
        tpu_vm.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


# --- following the job: a fake gcloud --------------------------------------------------------


def _traceback(error: str, step: int) -> str:
    return "\n".join(
        [
            f"I0101 12:00:00.000 100 progress.py:150] gan  {step}/5000 (10.0%)  3.2 step/s",
            "Traceback (most recent call last):",
            '  File "/home/me/synthjax/synthjax/main.py", line 170, in <module>',
            "    run()",
            error,
        ]
    )


class FakeCloud:
    """gcloud as the launcher sees it: the VM's state, two workers' jobs, a bucket.

    Each start takes the next outcome: the job runs through one poll, then by the next one
    it has finished the run, exited (a code and its log's tail), saved and exited 0, or the
    VM was preempted.
    """

    def __init__(self, state="NOT_FOUND", outcomes=()):
        self.state = state
        self.outcomes = list(outcomes)
        self.jobs: dict[str, tuple[str, int, int | None]] = {}
        self.outcome = None
        self.polls_left = 0
        self.bucket: dict[str, str] = {}
        self.finished = False
        self.calls: list[list[str]] = []
        self.started: list[int] = []

    def install(self, monkeypatch, tmp_path):
        monkeypatch.setattr(common.subprocess, "call", self.call)
        monkeypatch.setattr(tpu_vm, "probe", self.probe)
        monkeypatch.setattr(common, "finished", lambda workdir, stages: self.finished)
        monkeypatch.setattr(tpu_vm.time, "sleep", lambda seconds: None)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def steps(self, word: str) -> list[list[str]]:
        return [c for c in self.calls if word in c]

    # The actions, run through common.execute.
    def call(self, command):
        self.calls.append(command)
        text = " ".join(command)
        if command[4:5] == ["create"]:
            self.state, self.jobs = "READY", {}
        elif command[4:5] == ["delete"]:
            self.state, self.jobs = "NOT_FOUND", {}
        elif "synthjax-job.sh start" in text:
            attempt = int(text.split("synthjax-job.sh start ")[1].split()[0])
            self.started.append(attempt)
            self.jobs = {w: ("running", attempt, None) for w in WORKERS}
            self.outcome, self.polls_left = self.outcomes.pop(0), 1
        return 0

    # The probes: state, workers' status, bucket reads.
    def probe(self, command):
        text = " ".join(command)
        if command[4:5] == ["describe"]:
            self._advance()  # a poll interval has passed
            if self.state == "NOT_FOUND":
                return self._answer(1, err="ERROR: NOT_FOUND: Resource 'cxr256' was not found")
            return self._answer(0, self.state + "\n")
        if "synthjax-job.sh status" in text:
            lines = ["Using ssh batch size of 2. Attempting to SSH into 2 nodes."]
            for worker, (state, attempt, code) in sorted(self.jobs.items()):
                code_field = f" code={code}" if code is not None else ""
                lines.append(
                    f"synthjax-job {worker} state={state}{code_field} attempt={attempt} logs={LOGS}"
                )
            if not self.jobs:
                lines += [f"synthjax-job {w} state=none" for w in WORKERS]
            return self._answer(0, "\n".join(lines) + "\n")
        if command[:3] == ["gcloud", "storage", "cat"]:
            found = command[3] in self.bucket
            return self._answer(0 if found else 1, self.bucket.get(command[3], ""))
        if command[:3] == ["gcloud", "storage", "ls"]:
            listed = sorted({f"{LOGS}/attempt{a}/" for a in self.started})
            return self._answer(0 if listed else 1, "\n".join(listed))
        raise AssertionError(f"unexpected probe {command}")

    def _advance(self):
        if self.outcome is None:
            return
        if self.polls_left > 0:
            self.polls_left -= 1
            return
        kind, attempt = self.outcome[0], self.jobs[WORKERS[0]][1]
        if kind == "preempt":
            self.state, self.jobs = "PREEMPTED", {}
        elif kind == "finish":
            self.finished = True
            self.jobs = {w: ("exited", attempt, 0) for w in WORKERS}
        elif kind == "saved":
            self.jobs = {w: ("exited", attempt, 0) for w in WORKERS}
            self.bucket[f"{LOGS}/attempt{attempt}/worker0.tail"] = (
                "gan: stopped by signal 15 at step 300; checkpoint saved. "
                "Rerun the same command on every host to continue."
            )
        else:  # ("exit", code, tail): worker0 fails; worker1 is killed by the runtime
            _, code, tail = self.outcome
            self.jobs = {"worker0": ("exited", attempt, code), "worker1": ("exited", attempt, 134)}
            self.bucket[f"{LOGS}/attempt{attempt}/worker0.tail"] = tail
        self.outcome = None

    @staticmethod
    def _answer(code, out="", err=""):
        return subprocess.CompletedProcess([], code, stdout=out, stderr=err)


def test_a_restarted_launcher_leaves_a_running_job_alone(tmp_path, monkeypatch, capsys):
    """The launcher was stopped while attempt 3 ran; started again, it only watches."""
    cloud = FakeCloud(state="READY")
    cloud.install(monkeypatch, tmp_path)
    cloud.started = [1, 2, 3]  # what the bucket's logs/ lists
    cloud.jobs = {w: ("running", 3, None) for w in WORKERS}
    cloud.outcome, cloud.polls_left = ("finish",), 3
    assert tpu_vm.main(TPU) == 0
    assert cloud.calls == []  # no create, no copy, no install, no start
    out = capsys.readouterr().out
    assert "attempt 3: running on 2 worker(s)" in out and "finished" in out


def test_a_preempted_run_is_relaunched_until_finished(tmp_path, monkeypatch, capsys):
    """Preempted (the VM is recreated), then saved on SIGTERM and exited 0 (relaunched on
    the same VM), then finished."""
    cloud = FakeCloud(outcomes=[("preempt",), ("saved",), ("finish",)])
    cloud.install(monkeypatch, tmp_path)
    assert tpu_vm.main([*TPU, "--spot", "--delete-when-done"]) == 0
    assert cloud.started == [1, 2, 3]
    assert len(cloud.steps("create")) == 2  # at first, and after the preemption
    assert len(cloud.steps("delete")) == 2  # the preempted VM, and when done
    assert len([c for c in cloud.calls if any("uv venv" in w for w in c)]) == 3  # installs
    assert (tmp_path / "synthjax-cxr256" / "synthjax-job.sh").is_file()
    out = capsys.readouterr().out
    assert "VM cxr256 is PREEMPTED" in out and "was preempted or stopped" in out


def test_the_same_error_twice_at_the_same_step_stops(tmp_path, monkeypatch, capsys):
    error = _traceback("FloatingPointError: the loss is nan", 4200)
    cloud = FakeCloud(outcomes=[("exit", 1, error), ("exit", 1, error), ("finish",)])
    cloud.install(monkeypatch, tmp_path)
    assert tpu_vm.main(TPU) == 1
    assert cloud.started == [1, 2]
    err = capsys.readouterr().err
    assert "FloatingPointError: the loss is nan (at step 4200)" in err
    assert f"full log: {LOGS}/attempt2/worker0.log" in err


def test_different_errors_keep_retrying(tmp_path, monkeypatch, capsys):
    first = _traceback("OSError: [Errno 5] Input/output error", 100)
    second = _traceback("OSError: [Errno 5] Input/output error", 900)  # later: progress
    third = _traceback("RuntimeError: DEADLINE_EXCEEDED", 900)
    outcomes = [("exit", 1, first), ("exit", 1, second), ("exit", 1, third), ("finish",)]
    cloud = FakeCloud(outcomes=outcomes)
    cloud.install(monkeypatch, tmp_path)
    assert tpu_vm.main(TPU) == 0
    assert cloud.started == [1, 2, 3, 4]
    assert len(cloud.steps("create")) == 1  # the failures relaunch on the same VM
    assert "attempt 3 failed on worker0: RuntimeError" in capsys.readouterr().out


def test_a_refused_config_stops_at_once(tmp_path, monkeypatch, capsys):
    tail = "\nerror: gan.arch='nope': use cpd or prog"
    cloud = FakeCloud(outcomes=[("exit", 2, tail), ("finish",)])
    cloud.install(monkeypatch, tmp_path)
    assert tpu_vm.main(TPU) == 1
    assert cloud.started == [1]
    assert "refused its config: error: gan.arch='nope'" in capsys.readouterr().err


def test_max_attempts_bounds_the_relaunches(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(outcomes=[("preempt",), ("preempt",), ("finish",)])
    cloud.install(monkeypatch, tmp_path)
    assert tpu_vm.main([*TPU, "--max-attempts=2"]) == 1
    assert cloud.started == [1, 2]
    assert "not finished after 2 attempts" in capsys.readouterr().err


def test_a_vm_running_another_runs_job_is_not_touched(tmp_path, monkeypatch, capsys):
    cloud = FakeCloud(state="READY")
    cloud.install(monkeypatch, tmp_path)

    def other_run(command):
        line = "synthjax-job worker0 state=running attempt=1 logs=gs://bucket/other/logs"
        return subprocess.CompletedProcess(command, 0, stdout=line, stderr="")

    monkeypatch.setattr(
        tpu_vm, "probe", lambda c: other_run(c) if "status" in " ".join(c) else cloud.probe(c)
    )
    assert tpu_vm.main(TPU) == 1
    assert cloud.calls == [] and "another --name" in capsys.readouterr().err


def test_failure_signature_reads_the_last_traceback_and_step():
    chained = "\n".join(
        [
            "gan  step 1 took 41.0s (the first step includes start-up)",
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in f',
            "KeyError: 'x'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "b.py", line 2, in g',
            "    raise ValueError(f'bad buffer at {hex(id(x))}')",
            "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
            "ValueError: bad buffer at 0x7f3a2c01",
            "I0101 12:00:00.000 100 main.py:1] shutting down",
        ]
    )
    assert tpu_endings.failure_signature(chained) == ("ValueError: bad buffer at 0x?", 1)
    progress = "gan  1200/5000 (24.0%)  3.21 step/s\ngan  1300/5000 (26.0%)\n\nerror: disk full"
    assert tpu_endings.failure_signature(progress) == ("error: disk full", 1300)
    assert tpu_endings.failure_signature("") == ("(an empty log)", None)


# --- the job script on a worker -----------------------------------------------------------


def test_the_job_script_parses():
    args = tpu_vm.parse(TPU)
    script = tpu_job.job_script(tpu_job.job_arguments(args), tpu_vm.logs_url(args))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


FAKE_GCLOUD = """#!/bin/sh
# `gcloud storage cp SRC gs://PATH` copies to $FAKE_BUCKET/PATH; nothing else is expected.
if [ "$1" = storage ] && [ "$2" = cp ]; then
  dest="$FAKE_BUCKET/${4#gs://}"
  mkdir -p "$(dirname "$dest")" && exec cp "$3" "$dest"
fi
echo "fake gcloud: unexpected $*" >&2
exit 1
"""


def test_the_job_script_runs_detached_and_leaves_log_and_exit_status_in_the_workdir(tmp_path):
    """Executed here: `start` returns while the job runs, a second `start` does not start it
    again, and the job's output and exit status (3) reach the "bucket"."""
    home, bin_dir, bucket = tmp_path / "home", tmp_path / "bin", tmp_path / "bucket"
    (home / "synthjax").mkdir(parents=True)
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    job = ["-c", "import time; print('hello from the job'); time.sleep(1.5); raise SystemExit(3)"]
    script = home / "synthjax-job.sh"
    script.write_text(
        tpu_job.job_script(job, "gs://bkt/run/logs", python=shlex.quote(sys.executable), every=1)
    )
    env = {**os.environ, "HOME": str(home), "FAKE_BUCKET": str(bucket)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    def script_says(*words):
        done = subprocess.run(
            ["bash", str(script), *words], env=env, capture_output=True, text=True, timeout=5
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    began = time.monotonic()
    assert "state=started attempt=1" in script_says("start", "1")
    assert time.monotonic() - began < 1.0  # it did not wait for the job
    assert "state=running attempt=1 logs=gs://bkt/run/logs" in script_says("status")
    assert "not started again" in script_says("start", "1")
    deadline = time.monotonic() + 8
    while "state=exited" not in (status := script_says("status")):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert "state=exited code=3 attempt=1" in status
    worker = status.split()[1]
    logs = bucket / "bkt" / "run" / "logs" / "attempt1"
    assert (logs / f"{worker}.exit").read_text().strip() == "3"
    assert "hello from the job" in (logs / f"{worker}.log").read_text()
    assert "hello from the job" in (logs / f"{worker}.tail").read_text()
    assert (home / "synthjax-run" / "job.log").read_text().startswith("hello from the job")
