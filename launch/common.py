"""What every launcher shares: building the `synthjax.main` command, saying what will run,
running it (or only printing it: `--dry-run`), and telling whether a run has finished."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from synthjax.core import config_files

REPO = Path(__file__).resolve().parents[1]


class LaunchError(SystemExit):
    """A launcher's input is unusable: the message says what to change (exit status 2)."""

    def __init__(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(2)


def check_config(path: str) -> str:
    """`configs/x.py[:variant]` -> the same string, once the file is known to exist."""
    file = path.split(":", 1)[0]
    if not (REPO / file).is_file() and not Path(file).is_file():
        raise LaunchError(f"--config: no config file {file!r} (give e.g. configs/cxr_256.py)")
    return path


def main_command(
    config: str, workdir: str, overrides: Sequence[str] = (), *, python: str = "python", extra=()
) -> list[str]:
    """The job every launcher runs, on every process: `python -m synthjax.main ...`."""
    return [
        python,
        "-m",
        "synthjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        *(f"--config.{o}" if not o.startswith("--") else o for o in overrides),
        *extra,
    ]


def shell(command: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in command)


def say(step: str, command: Sequence[str] | str) -> None:
    text = command if isinstance(command, str) else shell(command)
    print(f"[{step}] {text}", flush=True)


def execute(step: str, command: Sequence[str], *, dry_run: bool, check: bool = True) -> int:
    """Prints the command and, unless `dry_run`, runs it; returns its exit status."""
    say(step, command)
    if dry_run:
        return 0
    status = subprocess.call(list(command))
    if check and status != 0:
        raise SystemExit(f"[{step}] failed with exit status {status}")
    return status


def stages_of(config: str, overrides: Sequence[str] = ()) -> list[str]:
    """The stages a config (with overrides) runs, read by loading it as synthjax does."""
    for o in overrides:
        if o.startswith("stages="):
            return list(ast.literal_eval(o.split("=", 1)[1]))
    file, arg = config_files.split(config)
    path = REPO / file if (REPO / file).is_file() else Path(file)
    return list(config_files.load_module(path).get_config(arg).stages)


def finished(workdir: str, stages: Sequence[str]) -> bool:
    """Whether every stage wrote its summary.json: the run is done.

    Local (and mounted) paths are read directly; `gs://` through `gcloud storage`.
    """
    paths = [f"{workdir.rstrip('/')}/{s}/summary.json" for s in stages]
    if workdir.startswith("gs://"):
        probe = subprocess.run(
            ["gcloud", "storage", "ls", *paths], capture_output=True, text=True, check=False
        )
        return probe.returncode == 0 and len(probe.stdout.split()) == len(paths)
    return all(_readable_json(p) for p in paths)


def _readable_json(path: str) -> bool:
    """A summary that exists and parses: an empty file left by a crash is not finished."""
    try:
        with open(path) as f:
            return isinstance(json.load(f), dict)
    except (OSError, ValueError):
        return False


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def _cli(argv: Sequence[str]) -> int:
    """`python -m launch.common finished WORKDIR STAGE...`: exit 0 when the run is done, 1
    when not (what batch scripts test before requeueing themselves)."""
    if len(argv) < 3 or argv[0] != "finished":
        print("usage: python -m launch.common finished WORKDIR STAGE...", file=sys.stderr)
        return 2
    return 0 if finished(argv[1], argv[2:]) else 1


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
