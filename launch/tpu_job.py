r"""What runs on each Cloud TPU VM worker: the install command and the job script.

`launch/tpu_vm.py` copies the checkout (`ARCHIVE`) and the job script (`SCRIPT`) to every
worker, installs synthjax with `install_command`, and starts, asks about and stops the job
with the script's `start`, `status` and `stop` (`job_script`; its header says what each
does). The script copies the job's log to the bucket, so the launcher can read how an
attempt ended (`launch/tpu_endings.py`) after the VM is gone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from launch import common

PYTHON_VERSION = "3.11"
VENV = "~/synthjax-venv"
SCRIPT = "synthjax-job.sh"
ARCHIVE = "synthjax.tar.gz"


def install_command() -> str:
    """Unpacks the checkout and installs it into a Python 3.11 venv made by uv, as this user.

    uv comes from the image's pip (`--user`: no root needed) and downloads a CPython 3.11 it
    manages; a venv that already has Python 3.11 or later is kept. `constraints.txt` pins the
    versions when the checkout has one.
    """
    uv = "~/.local/bin/uv"
    python = f"{VENV}/bin/python"
    has_python = f"{python} -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null"
    return " && ".join(
        [
            "rm -rf ~/synthjax",
            "mkdir -p ~/synthjax",
            f"tar -xzf ~/{ARCHIVE} -C ~/synthjax",
            "cd ~/synthjax",
            "python3 -m pip install --user --quiet uv",
            f"{{ {has_python} || {{ rm -rf {VENV} && "
            f"{uv} venv --python {PYTHON_VERSION} {VENV}; }}; }}",
            f"{uv} pip install --python {python} -e '.[tpu,gcs]'"
            " $( [ -f constraints.txt ] && echo -c constraints.txt )",
            f"{python} --version",
        ]
    )


JOB_SCRIPT = r"""#!/bin/bash
# The synthjax job on one TPU VM worker, detached from the SSH session that starts it.
#   bash synthjax-job.sh start K   start attempt K in the background and return at once
#   bash synthjax-job.sh status    one line: state=none|running|exited|lost, exit code, attempt
#   bash synthjax-job.sh stop      SIGTERM to the job (it saves a checkpoint), wait for its end
# Its output goes to $RUN/job.log, copied to LOGS/attemptK/WORKER.log every EVERY seconds and
# when it ends, with WORKER.tail (its last lines) and WORKER.exit (its exit status).
set -u
LOGS=@LOGS@
EVERY=@EVERY@
RUN="$HOME/synthjax-run"
host=$(hostname)
case "$host" in
  *-w-[0-9]*) WORKER="worker${host##*-w-}" ;;
  *) WORKER="$host" ;;
esac

say() { echo "synthjax-job $WORKER $*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
upload() { gcloud storage cp "$1" "$2" >/dev/null 2>&1 || echo "could not copy $1 to $2" >&2; }

copy_log() {  # every $EVERY seconds until the job has ended
  while :; do
    for ((i = 0; i < EVERY; i++)); do
      [ -f "$RUN/ended" ] && return
      sleep 1
    done
    upload "$RUN/job.log" "$1.log"
  done
}

run() {  # detached: the job, its log copied while it runs, then its log, tail and exit status
  local dest="$LOGS/attempt$1/$WORKER" job code copier
  cd "$HOME/synthjax" || exit 1
  PYTHONUNBUFFERED=1 @JOB@ < /dev/null > "$RUN/job.log" 2>&1 &
  job=$!
  echo "$job" > "$RUN/job.pid"
  trap 'kill -TERM "$job" 2>/dev/null' TERM HUP INT
  copy_log "$dest" &
  copier=$!
  wait "$job"
  code=$?
  while kill -0 "$job" 2>/dev/null; do  # a signal ended the wait, not the job
    wait "$job"
    code=$?
  done
  touch "$RUN/ended"
  wait "$copier"
  tail -n @TAIL@ "$RUN/job.log" > "$RUN/job.tail"
  echo "$code" > "$RUN/job.exit"
  upload "$RUN/job.log" "$dest.log"
  upload "$RUN/job.tail" "$dest.tail"
  upload "$RUN/job.exit" "$dest.exit"
  mv "$RUN/job.exit" "$RUN/exit"  # last: `status` says exited once the copies are made
}

start() {
  if alive "$RUN/wrapper.pid" && [ ! -f "$RUN/exit" ]; then
    say "state=running attempt=$(cat "$RUN/attempt") (already running: not started again)"
    return 0
  fi
  rm -rf "$RUN" && mkdir -p "$RUN" || exit 1
  echo "$1" > "$RUN/attempt"
  echo "$LOGS" > "$RUN/logs"
  nohup setsid -w bash "$0" run "$1" < /dev/null > "$RUN/wrapper.log" 2>&1 &
  echo "$!" > "$RUN/wrapper.pid"
  say "state=started attempt=$1"
}

status() {
  if [ ! -f "$RUN/attempt" ]; then
    say "state=none"
    return 0
  fi
  local about="attempt=$(cat "$RUN/attempt") logs=$(cat "$RUN/logs")"
  if [ -f "$RUN/exit" ]; then
    say "state=exited code=$(cat "$RUN/exit") $about"
  elif alive "$RUN/wrapper.pid"; then
    say "state=running $about"
  else
    say "state=lost $about"  # ended without a word: the VM restarted, or it was killed
  fi
}

stop() {
  alive "$RUN/job.pid" && kill -TERM "$(cat "$RUN/job.pid")"
  for ((i = 0; i < 600; i++)); do
    alive "$RUN/wrapper.pid" || break
    sleep 1
  done
  status
}

case "${1:-}" in
  start) start "$2" ;;
  run) run "$2" ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start ATTEMPT | status | stop" >&2; exit 2 ;;
esac
"""


def job_script(
    job: Sequence[str],
    logs: str,
    *,
    python: str = '"$HOME/synthjax-venv/bin/python"',
    every: int = 60,
    tail_lines: int = 200,
) -> str:
    """The script each worker runs the job with (`start`, `status`, `stop`; see its header).

    Args:
      job: the job's arguments after the interpreter (`-m synthjax.main ...`).
      logs: where the logs go, `WORKDIR/logs`.
      python: the interpreter, as shell text (the default expands on the worker).
      every: seconds between copies of the log while the job runs.
      tail_lines: the log's last lines kept apart, for the launcher's failure test.
    """
    return (
        JOB_SCRIPT.replace("@LOGS@", common.shell([logs]))
        .replace("@EVERY@", str(int(every)))
        .replace("@TAIL@", str(int(tail_lines)))
        .replace("@JOB@", f"{python} {common.shell(job)}")
    )


def job_arguments(args: argparse.Namespace) -> list[str]:
    """`-m synthjax.main --config=... --workdir=gs://... --distributed=on`."""
    command = common.main_command(
        args.config, args.workdir, args.override, extra=["--distributed=on"]
    )
    return command[1:]
