"""One run per workdir: a lock file, `DIR/lock.json`, held while a run works in DIR.

Two runs on one workdir (a second terminal, a relaunch while the first job still runs)
would overwrite each other's checkpoints and summaries. The lock records who holds it:

```
{"host", "pid", "pid_start", "boot_id", "started", "heartbeat", "token", "command"}
```
(times are Unix seconds, with `*_utc` copies for people). A daemon thread rewrites
`heartbeat` every `HEARTBEAT_S`. A second run refuses at once, naming the holder. It takes
the lock over (and prints a line saying so) only when the holder is gone:

- on the same host (same host name and boot): its pid is not alive, or is now another
  process (its start time differs); after a reboot every lock of that host is stale;
- on another host, where the pid cannot be checked (a preempted VM): its heartbeat is older
  than `STALE_AFTER_S`, and does not move while this process watches it for `CONFIRM_S`
  (so a clock that runs behind is not mistaken for a dead holder).

Local paths are created atomically (a fully written temporary file, hard-linked to the lock
name: the link fails if the lock exists). In a Cloud Storage bucket (gs://) the lock is an
upload conditional on no object of that name existing (`ifGenerationMatch=0`), atomic too.
Other remote stores have no such condition here: the lock is written when absent and read
back, a best effort.

One JAX job of several processes shares one lock: process 0 takes it (`experiment.run`
tells the others whether it could).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import fsspec
from absl import logging
from etils import epath

from synthjax.core.errors import SynthjaxError
from synthjax.core.workdir import fsync_dir, is_local

LOCK_NAME = "lock.json"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
CONFIRM_S = 15.0
READ_BACK_S = 1.0  # non-local paths: how long to wait before reading our lock back
_ATTEMPTS = 5

# Locks this process holds, by lock path: a second `acquire` in the same process (another
# thread) is refused like any other run.
_held: dict[str, WorkdirLock] = {}


class WorkdirBusy(SynthjaxError):
    """Another live run holds the workdir's lock. The message names it and what to do."""


def lock_path(workdir: epath.PathLike) -> epath.Path:
    return epath.Path(workdir) / LOCK_NAME


def _is_local(path: epath.Path) -> bool:
    return is_local(path)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _ago(t: float, now: float | None = None) -> str:
    s = max(0.0, (time.time() if now is None else now) - t)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _boot_id() -> str | None:
    """This machine's boot: a process cannot outlive it (Linux; None elsewhere)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _process_start(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot: tells a reused pid from the holder."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a zombie holds nothing


def _record(token: str, started: float) -> dict[str, Any]:
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "boot_id": _boot_id(),
        "started": started,
        "started_utc": _utc(started),
        "heartbeat": now,
        "heartbeat_utc": _utc(now),
        "token": token,
        "command": " ".join(sys.argv),
    }


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2) + "\n").encode()


def _read_raw(path: epath.Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "token" in record else None


def _write_file(path: str, data: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: epath.Path, data: bytes, token: str) -> bool:
    """Creates the lock file holding `data` unless it exists; True when this call made it."""
    if not _is_local(path):
        fs, key = fsspec.core.url_to_fs(os.fspath(path))
        if "gs" in _protocols(fs):  # gcsfs sends ifGenerationMatch=0 for mode "x"
            try:
                with fs.open(key, "xb") as f:
                    f.write(data)
            except FileExistsError:
                return False
            return True
        if path.exists():
            return False
        path.write_bytes(data)
        time.sleep(READ_BACK_S)  # a racing writer's lock would have replaced ours by now
        return _read_raw(path) == data
    target = os.fspath(path)
    tmp = f"{os.path.dirname(target)}/.{LOCK_NAME}.{token}.tmp"
    _write_file(tmp, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.link(tmp, target)  # atomic, and fails when the lock exists
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links
        try:
            _write_file(target, data, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    fsync_dir(os.path.dirname(target))
    return True


def _protocols(fs) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _replace(path: epath.Path, data: bytes, token: str) -> None:
    """Rewrites our own lock (the heartbeat): readers see the old or the new file, whole."""
    if not _is_local(path):
        path.write_bytes(data)
        return
    target = os.fspath(path)
    tmp = f"{os.path.dirname(target)}/.{LOCK_NAME}.{token}.beat"
    _write_file(tmp, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.replace(tmp, target)


def _remove_if_unchanged(path: epath.Path, raw: bytes, token: str) -> bool:
    """Removes the stale lock whose content is `raw`; False if it changed meanwhile."""
    if not _is_local(path):
        if _read_raw(path) != raw:
            return False
        path.unlink(missing_ok=True)
        return True
    target = os.fspath(path)
    aside = f"{os.path.dirname(target)}/.{LOCK_NAME}.{token}.stale"
    try:
        os.rename(target, aside)  # only one of several racing takers gets it
    except FileNotFoundError:
        return False
    with open(aside, "rb") as f:
        taken = f.read()
    if taken != raw:  # a fresh lock arrived between our read and the rename: put it back
        try:
            os.link(aside, target)
        except OSError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def _say(message: str) -> None:
    logging.warning("%s", message)
    print(f"== {message}", flush=True)


def holder_text(record: dict[str, Any], now: float | None = None) -> str:
    """`host vm, pid 123, since 2025-01-01 10:00:00 UTC (5 min ago), heartbeat 3 s ago`."""
    started = record.get("started")
    beat = record.get("heartbeat")
    since = f"since {_utc(started)} ({_ago(started, now)})" if started else "since (unknown)"
    heartbeat = f"heartbeat {_ago(beat, now)}" if beat else "no heartbeat"
    return f"host {record.get('host')}, pid {record.get('pid')}, {since}, {heartbeat}"


def _stale_reason(path: epath.Path, raw: bytes, record: dict[str, Any] | None) -> str | None:
    """Why the lock `raw` is stale (its holder is gone), or None while the holder lives."""
    if record is None:
        return "the lock file is empty or unreadable (its writer died while writing it)"
    if record.get("token") in {lock.token for lock in _held.values()}:
        return None  # ours (another thread of this process): not stale, refused
    if record.get("host") == socket.gethostname():
        pid = int(record.get("pid", -1))
        if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
            return "its host has rebooted since"
        if pid == os.getpid():
            return f"pid {pid} is this process, which does not hold it (an earlier process)"
        if not _pid_alive(pid):
            return f"pid {pid} is not running on this host"
        start = _process_start(pid)
        if record.get("pid_start") is not None and start is not None:
            if start != record["pid_start"]:
                return f"pid {pid} is now another process"
        return None
    beat = float(record.get("heartbeat", 0.0))
    if time.time() - beat < STALE_AFTER_S:
        return None
    # Its heartbeat looks old: watch it move, in case the holder's clock is behind ours.
    deadline = time.monotonic() + CONFIRM_S
    while time.monotonic() < deadline:
        time.sleep(min(1.0, CONFIRM_S))
        if _read_raw(path) != raw:
            return None  # it changed: someone is alive (the caller looks again)
    return (
        f"its last heartbeat was {_ago(beat)} (stale after {STALE_AFTER_S:.0f} s) and it did "
        f"not move for {CONFIRM_S:.0f} s: its holder is gone"
    )


def _busy(path: epath.Path, record: dict[str, Any] | None, workdir: epath.Path) -> WorkdirBusy:
    if record is None:
        return WorkdirBusy(f"{workdir} is locked by a lock file that could not be read ({path})")
    mine = record.get("token") in {lock.token for lock in _held.values()}
    who = "this same process (another thread)" if mine else "another run"
    stale_at = _utc(float(record.get("heartbeat", 0.0)) + STALE_AFTER_S)
    return WorkdirBusy(
        f"workdir {workdir} is in use by {who}: {holder_text(record)}; command: "
        f"{record.get('command', '?')!r} (lock file {path}). Two runs on one workdir would "
        "overwrite each other's checkpoints and results. Fix: wait for that run to finish, "
        f"or stop it (Ctrl-C or `kill {record.get('pid')}` on {record.get('host')}: it "
        "saves a checkpoint and releases the lock), then rerun this command; or use another "
        "--workdir. If that run is gone without releasing the lock, the next run takes it "
        f"over by itself: at once on the same host, and from {stale_at} (its heartbeat then "
        f"{STALE_AFTER_S:.0f} s old) from another host; or delete {path} yourself"
    )


@dataclasses.dataclass
class WorkdirLock:
    """A held lock: its heartbeat thread runs until `release()`."""

    path: epath.Path
    record: dict[str, Any]
    lost_to: dict[str, Any] | None = None
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = dataclasses.field(default=None, repr=False)

    @property
    def token(self) -> str:
        return self.record["token"]

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"synthjax lock {self.path}", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self._beat():
                    return
            except Exception as error:  # a network hiccup: try again at the next beat
                logging.warning("lock %s: heartbeat not written: %s", self.path, error)

    def _beat(self) -> bool:
        """Refreshes the heartbeat; False (and says so) once another run has taken over."""
        raw = _read_raw(self.path)
        current = _parse(raw) if raw is not None else None
        if current is None or current.get("token") != self.token:
            self.lost_to = current or {}
            _say(
                f"lock {self.path} was taken over by another run ("
                f"{holder_text(current) if current else 'lock file gone'}): this run was "
                "judged gone (suspended or out of contact for minutes?). Two runs may now "
                "write this workdir: stop one of them"
            )
            return False
        if self._stop.is_set():
            return False
        now = time.time()
        self.record.update(heartbeat=now, heartbeat_utc=_utc(now))
        _replace(self.path, _encode(self.record), self.token)
        return True

    def check(self) -> None:
        """Raises WorkdirBusy when another run has taken this lock over."""
        if self.lost_to is not None:
            raise WorkdirBusy(
                f"lost the lock of {self.path.parent} to another run "
                f"({holder_text(self.lost_to) if self.lost_to else 'lock file removed'}); "
                "stopped before the next stage so the two do not mix their results. Fix: "
                "let the other run finish, or stop it and rerun this command"
            )

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=HEARTBEAT_S + 5)
        _held.pop(os.fspath(self.path), None)
        if self.record["pid"] != os.getpid():
            return  # a forked child: the lock belongs to its parent
        raw = _read_raw(self.path)
        current = _parse(raw) if raw is not None else None
        if current is not None and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        elif raw is not None:
            logging.warning("lock %s belongs to another run now; left in place", self.path)

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(workdir: epath.PathLike) -> WorkdirLock:
    """Takes the lock of `workdir` (which must exist), or raises WorkdirBusy naming its
    holder. A stale lock is taken over, with a printed line saying whose and why."""
    workdir = epath.Path(workdir)
    path = lock_path(workdir)
    token = uuid.uuid4().hex
    record = _record(token, time.time())
    for _ in range(_ATTEMPTS):
        data = _encode(record)
        if _create(path, data, token):
            lock = WorkdirLock(path, record)
            _held[os.fspath(path)] = lock
            lock._start_heartbeat()
            return lock
        raw = _read_raw(path)
        if raw is None:
            continue  # released meanwhile: try again
        current = _parse(raw)
        if current is None and not _is_local(path):
            time.sleep(1.0)  # perhaps being written right now
            raw = _read_raw(path)
            if raw is None:
                continue
            current = _parse(raw)
        reason = _stale_reason(path, raw, current)
        if reason is None:
            now_raw = _read_raw(path)
            now = _parse(now_raw) if now_raw is not None else None
            if now is None or now.get("token") != current.get("token"):
                continue  # released or taken by another run while we looked: look again
            raise _busy(path, now, workdir)
        if _remove_if_unchanged(path, raw, token):
            holder = holder_text(current) if current else "unknown holder"
            _say(f"taking over the stale lock of {workdir} ({holder}): {reason}")
        record = _record(token, record["started"])
    raise WorkdirBusy(
        f"could not take the lock of {workdir} in {_ATTEMPTS} attempts: other runs keep "
        f"taking it ({path}). Fix: make sure one run at a time uses this workdir"
    )
