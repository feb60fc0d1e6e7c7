"""One run per workdir: a second run refuses naming the holder, a stale lock (dead pid,
reused pid, old heartbeat on another host, unreadable file) is taken over, and the lock
is released on return, on errors and on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthjax import experiment
from synthjax.core import lock
from synthjax.core.config_files import load
from synthjax.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.py:smoke"


def _lock_file(workdir):
    return Path(workdir) / lock.LOCK_NAME


def _write_lock(workdir, **fields):
    record = {**lock._record("someone-elses", time.time() - 600), **fields}
    tmp = Path(workdir) / "lock.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(_lock_file(workdir))  # whole, as a holder writes it
    return record


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_records_its_holder_and_is_released(tmp_path):
    with lock.acquire(tmp_path) as held:
        record = json.loads(_lock_file(tmp_path).read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        assert record["started"] <= record["heartbeat"] <= time.time()
        assert record["token"] == held.token
        with pytest.raises(lock.WorkdirBusy, match="this same process"):
            lock.acquire(tmp_path)
    assert not _lock_file(tmp_path).exists()
    assert not list(tmp_path.iterdir())  # no temporary files left either
    lock.acquire(tmp_path).release()  # free again


def test_the_heartbeat_moves_and_a_lost_lock_is_noticed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    held = lock.acquire(tmp_path)
    try:
        first = held.record["heartbeat"]
        deadline = time.monotonic() + 5
        while json.loads(_lock_file(tmp_path).read_text())["heartbeat"] == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
        # Another run took it over (it judged this one gone): said, and the run stops.
        other = _write_lock(tmp_path, host="elsewhere", pid=4242, heartbeat=time.time())
        deadline = time.monotonic() + 5
        while held.lost_to is None:
            assert time.monotonic() < deadline, "the lost lock went unnoticed"
            time.sleep(0.05)
            # A beat that read the file just before the takeover may write over it once
            # (a window of microseconds every HEARTBEAT_S; here 50 ms): take it again.
            if json.loads(_lock_file(tmp_path).read_text())["token"] != other["token"]:
                _write_lock(tmp_path, **other)
        assert "was taken over by another run (host elsewhere" in capsys.readouterr().out
        with pytest.raises(lock.WorkdirBusy, match="lost the lock"):
            held.check()
    finally:
        held.release()
    assert json.loads(_lock_file(tmp_path).read_text())["token"] == other["token"]  # not ours


@pytest.mark.parametrize(
    "holder,reason",
    [
        (lambda: {"pid": _dead_pid()}, "is not running on this host"),
        (lambda: {"pid": os.getppid(), "pid_start": 1}, "is now another process"),
        (lambda: {"pid": os.getpid()}, "is this process, which does not hold it"),
        (lambda: {"boot_id": "an-earlier-boot"}, "rebooted"),
        (
            lambda: {"host": "preempted-vm", "heartbeat": time.time() - 600},
            "last heartbeat was 10 min ago",
        ),
    ],
    ids=["dead_pid", "reused_pid", "earlier_process_same_pid", "rebooted", "old_heartbeat"],
)
def test_a_stale_lock_is_taken_over_saying_so(tmp_path, monkeypatch, capsys, holder, reason):
    monkeypatch.setattr(lock, "CONFIRM_S", 0.2)
    _write_lock(tmp_path, **holder())
    with lock.acquire(tmp_path) as held:
        assert json.loads(_lock_file(tmp_path).read_text())["token"] == held.token
    out = capsys.readouterr().out
    assert f"taking over the stale lock of {tmp_path}" in out and reason in out


def test_the_best_effort_path_for_gs_workdirs(tmp_path, monkeypatch, capsys):
    """Non-local epaths (gs://) create-if-absent and read back: here forced on a local path."""
    monkeypatch.setattr(lock, "_is_local", lambda path: False)
    monkeypatch.setattr(lock, "READ_BACK_S", 0.0)
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with lock.acquire(tmp_path) as held:
        time.sleep(0.2)  # a few heartbeats, written in place
        # A local file rewritten in place can be read half-written (a bucket object cannot):
        # read until it parses.
        for _ in range(100):
            try:
                record = json.loads(_lock_file(tmp_path).read_text())
                break
            except ValueError:
                time.sleep(0.001)
        assert record["heartbeat"] > held.record["started"]
        with pytest.raises(lock.WorkdirBusy, match="this same process"):
            lock.acquire(tmp_path)
    assert not _lock_file(tmp_path).exists()
    _write_lock(tmp_path, pid=_dead_pid())
    lock.acquire(tmp_path).release()
    assert "is not running on this host" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_an_unreadable_lock_is_taken_over(tmp_path, capsys):
    _lock_file(tmp_path).write_text("")
    lock.acquire(tmp_path).release()
    assert "empty or unreadable" in capsys.readouterr().out


def test_a_live_holder_elsewhere_is_not_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "CONFIRM_S", 0.2)
    record = _write_lock(tmp_path, host="other-vm", pid=4242, heartbeat=time.time() - 5)
    with pytest.raises(lock.WorkdirBusy) as err:
        lock.acquire(tmp_path)
    message = str(err.value)
    assert "host other-vm, pid 4242, since" in message and "heartbeat 5 s ago" in message
    assert "Fix:" in message and "--workdir" in message
    assert json.loads(_lock_file(tmp_path).read_text()) == record  # untouched


def test_a_heartbeat_that_moves_is_alive_though_its_clock_is_behind(tmp_path, monkeypatch):
    """An old-looking heartbeat that still changes (a holder whose clock is behind)."""
    monkeypatch.setattr(lock, "CONFIRM_S", 2.0)
    _write_lock(tmp_path, host="slow-clock-vm", pid=4242, heartbeat=time.time() - 600)
    beats = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, os, sys, time\n"
            "p = sys.argv[1]\n"
            "r = json.load(open(p))\n"
            "for i in range(100):\n"
            "    r['heartbeat'] += 1\n"
            "    open(p + '.t', 'w').write(json.dumps(r))\n"
            "    os.replace(p + '.t', p)\n"
            "    print('beating', flush=True)\n"
            "    time.sleep(0.1)\n",
            str(_lock_file(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert beats.stdout.readline().strip() == "beating"
    try:
        with pytest.raises(lock.WorkdirBusy, match="host slow-clock-vm"):
            lock.acquire(tmp_path)
    finally:
        beats.kill()
        beats.wait()


def _smoke(tmp_path):
    config = load(str(REPO / CONFIG))
    config.dataset.phantom.dir = str(tmp_path / "phantoms")
    config.dataset.data_dir = str(tmp_path / "data")
    config.compilation_cache = ""
    return config


def test_run_releases_the_lock_after_an_error_every_time(tmp_path):
    """In-process callers (tests, notebooks) call `experiment.run` again and again."""
    config = _smoke(tmp_path)
    config.stages = ("prepare", "gan")  # refused inside the lock: no classifier_real
    for _ in range(2):
        with pytest.raises(ConfigError, match="classifier_real has not run"):
            experiment.run(config, str(tmp_path / "w"))
        assert not _lock_file(tmp_path / "w").exists()
    config.stages = ()
    assert experiment.run(config, str(tmp_path / "w")) == {}
    assert not _lock_file(tmp_path / "w").exists()


def test_run_refuses_a_workdir_another_run_holds(tmp_path):
    (tmp_path / "w").mkdir()
    _write_lock(tmp_path / "w", host="other-vm", pid=4242, heartbeat=time.time())
    config = _smoke(tmp_path)
    config.stages = ()
    with pytest.raises(lock.WorkdirBusy, match="host other-vm, pid 4242"):
        experiment.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "config.json").exists()  # refused before anything
    assert _lock_file(tmp_path / "w").exists()  # the holder's lock stays


def _main(workdir, *overrides, **kwargs):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synthjax.main",
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            f"--config.dataset.phantom.dir={workdir.parent / 'phantoms'}",
            f"--config.dataset.data_dir={workdir.parent / 'data'}",
            *overrides,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_a_second_command_refuses_naming_the_first_which_sigterm_releases(tmp_path):
    """Two real `python -m synthjax.main` on one workdir: the second refuses (exit 3) within
    seconds, naming the first; SIGTERM stops the first (exit 0) and releases the lock."""
    workdir = tmp_path / "w"
    first = _main(workdir)
    try:
        deadline = time.monotonic() + 120
        while not _lock_file(workdir).exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run took no lock"
            time.sleep(0.1)
        holder = json.loads(_lock_file(workdir).read_text())
        assert holder["pid"] == first.pid
        started = time.monotonic()
        second = _main(workdir)
        out, err = second.communicate(timeout=60)
        refused_s = time.monotonic() - started
        assert second.returncode == 3, out[-2000:] + err[-3000:]
        assert f"host {socket.gethostname()}, pid {first.pid}, since" in err
        assert "Fix: wait for that run to finish" in err
        assert refused_s < 30, refused_s
        print(f"the second command refused in {refused_s:.1f} s")
        assert first.poll() is None  # undisturbed
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
        assert "Rerun the same command" in err
        assert not _lock_file(workdir).exists()
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
