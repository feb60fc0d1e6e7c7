"""How a TPU VM job attempt ended, from the workers' status lines and their logs' tails.

`parse_status` reads the job script's `status` lines (`launch/tpu_job.py`) into `Worker`s;
`classify` tells a preempted attempt (relaunch) from a failed one (relaunch unless the same
error comes again at the same step: `failure_signature`) and from a refused config (stop).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# What the job prints when it saved and exited for a signal: the attempt was preempted.
PREEMPTED_MESSAGE = "rerun the same command"


@dataclass(frozen=True)
class Worker:
    """One worker's line of `synthjax-job.sh status`."""

    name: str
    state: str  # none, running, exited (with `code`), lost (ended without an exit status)
    attempt: int = 0
    code: int | None = None
    logs: str | None = None


def parse_status(text: str) -> list[Worker]:
    """The workers' status lines (`synthjax-job worker0 state=running attempt=2 logs=...`),
    one per worker; other output (gcloud's own messages) is ignored."""
    workers = {}
    for line in text.splitlines():
        match = re.match(r"synthjax-job (\S+) (.*)", line.strip())
        if not match:
            continue
        fields = dict(f.split("=", 1) for f in match[2].split() if "=" in f)
        workers[match[1]] = Worker(
            name=match[1],
            state=fields.get("state", "none"),
            attempt=_integer(fields.get("attempt")) or 0,
            code=_integer(fields.get("code")),
            logs=fields.get("logs"),
        )
    return [workers[name] for name in sorted(workers)]


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def failure_signature(log_tail: str) -> tuple[str, int | None]:
    """(the error, the step) of a failed job, from the end of its log.

    The error is the final line of the last traceback (`ValueError: ...`), else the last
    `error: ...` line synthjax prints, else the last line; memory addresses are blanked so
    that the same error compares equal. The step is the last one the log names (`step N`,
    or a progress line's `N/total (x%)`), None if none.
    """
    lines = [line.rstrip() for line in log_tail.splitlines()]
    return _normalise(_error_line(lines)), _last_step(lines)


def _error_line(lines: list[str]) -> str:
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        for line in lines[starts[-1] + 1 :]:
            if line and not line[0].isspace():
                return line
    pattern = re.compile(r"(error: |[A-Za-z_][\w.]*(Error|Exception): )")
    flagged = [line.strip() for line in lines if pattern.match(line.strip())]
    if flagged:
        return flagged[-1]
    filled = [line.strip() for line in lines if line.strip()]
    return filled[-1] if filled else "(an empty log)"


def _normalise(error: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", error).strip()


def _last_step(lines: list[str]) -> int | None:
    pattern = re.compile(r"\bstep (\d+)\b|\b(\d+)/\d+ \(\d+(?:\.\d+)?%\)")
    for line in reversed(lines):
        found = pattern.findall(line)
        if found:
            named, progress = found[-1]
            return int(named or progress)
    return None


@dataclass(frozen=True)
class Ending:
    """How an attempt ended: preempted (relaunch), failed (relaunch unless it repeats), or
    refused (the job refused its config: stop)."""

    kind: str
    worker: str | None = None
    signature: tuple[str, int | None] | None = None


def classify(ended: Sequence[Worker], tail_of: Callable[[Worker], str]) -> Ending:
    """How an attempt ended, from its workers' exit statuses and (for failures) log tails.

    Exit status 2 (config refused) on any worker: refused. Another exit status from 1 to 127
    on any worker: failed, with that worker's signature. Every worker exited 0 and the log
    does not say to rerun: failed too (it stopped without finishing, and not for a signal).
    Otherwise (killed by a signal, saved after SIGTERM or SIGHUP, lost with the VM):
    preempted.
    """
    refused = [w for w in ended if w.code == 2]
    if refused:
        return Ending("refused", refused[0].name, failure_signature(tail_of(refused[0])))
    failed = [w for w in ended if w.code is not None and 0 < w.code < 128]
    if failed:
        return Ending("failed", failed[0].name, failure_signature(tail_of(failed[0])))
    if ended and all(w.code == 0 for w in ended):
        tail = tail_of(ended[0])
        if PREEMPTED_MESSAGE not in tail.lower():
            step = failure_signature(tail)[1]
            return Ending("failed", ended[0].name, ("exited 0 before the run finished", step))
    return Ending("preempted")


def describe(signature: tuple[str, int | None]) -> str:
    error, step = signature
    return f"{error} (at step {step})" if step is not None else f"{error} (no step logged)"
