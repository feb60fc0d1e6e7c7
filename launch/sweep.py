r"""Sweeps: one config, a list of overrides, one run (and workdir) per entry.

A sweep is defined next to its config: the config file gets a `get_sweep(arg)` that returns
a list of {field: value} dicts, each a run. `python -m launch.sweep` expands it, gives each
run a workdir named after its overrides under `--workdir`, skips runs that have finished
(every stage wrote its summary), and then either runs the rest here one after another,
prints their commands, or hands each to the SLURM or TPU launcher:

  python -m launch.sweep --config=configs/quickstart.py --workdir=runs/spc --dry-run
  python -m launch.sweep --config=configs/quickstart.py --workdir=runs/spc           # local
  python -m launch.sweep --config=configs/cxr_256.py --workdir=gs://b/spc --via=slurm \
      -- --nodes=2 --gpus-per-node=8

Everything after `--` goes to the launcher named by `--via`. `--only` picks runs by name.
`sweep.json` in `--workdir` lists the runs, their overrides and workdirs (for notebooks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch import common
from synthjax import config_files

VIA = ("local", "print", "slurm", "tpu_vm")


def load_sweep(config: str) -> list[dict[str, Any]]:
    """The config file's `get_sweep(arg)`: a list of {dotted field: value}, one per run."""
    file, arg = config_files.split(common.check_config(config))
    path = common.REPO / file if (common.REPO / file).is_file() else Path(file)
    module = config_files.load_module(path)
    if not hasattr(module, "get_sweep"):
        raise common.LaunchError(
            f"{file} defines no get_sweep(arg); add one returning a list of override dicts"
        )
    sweep = module.get_sweep(arg)
    if not sweep or not all(isinstance(run, dict) for run in sweep):
        raise common.LaunchError(f"{file}: get_sweep must return a non-empty list of dicts")
    return sweep


def override_text(field: str, value: Any) -> str:
    """One override as `synthjax.main` takes it after `--config.`: strings bare, the rest
    as Python literals (tuples, floats, bools)."""
    return f"{field}={value}" if isinstance(value, str) else f"{field}={value!r}"


def run_name(overrides: dict[str, Any]) -> str:
    """A readable, filesystem-safe name: `samples_per_class-200_arch-prog`."""
    parts = []
    for field, value in overrides.items():
        text = "-".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
        parts.append(f"{field.rsplit('.', 1)[-1]}-{text}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)) or "base"


def expand(config: str, workdir: str) -> list[dict[str, Any]]:
    """[{name, workdir, overrides: [field=value, ...], values: {field: value}}] in order."""
    runs, names = [], set()
    for values in load_sweep(config):
        name = run_name(values)
        if name in names:
            raise common.LaunchError(f"two runs of the sweep are both named {name!r}")
        names.add(name)
        runs.append(
            {
                "name": name,
                "workdir": f"{workdir.rstrip('/')}/{name}",
                "overrides": [override_text(f, v) for f, v in values.items()],
                "values": values,
            }
        )
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    launcher_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, launcher_args = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True, help="parent of the runs' workdirs")
    parser.add_argument("--via", choices=VIA, default="local")
    parser.add_argument("--only", default="", help="comma-separated run names")
    parser.add_argument("--dry-run", action="store_true", help="say what would run; run nothing")
    args = parser.parse_args(argv)

    runs = expand(args.config, args.workdir)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {r["name"] for r in runs}
        if unknown:
            raise common.LaunchError(f"--only: no runs named {sorted(unknown)}")
        runs = [r for r in runs if r["name"] in wanted]
    local = "://" not in args.workdir
    if local and not args.dry_run:
        os.makedirs(args.workdir, exist_ok=True)
        with open(os.path.join(args.workdir, "sweep.json"), "w") as f:
            json.dump({"config": args.config, "runs": runs}, f, indent=2, default=str)

    print(f"sweep {args.config}: {len(runs)} runs under {args.workdir} (via {args.via})")
    todo = []
    for run in runs:
        done = common.finished(run["workdir"], common.stages_of(args.config, run["overrides"]))
        print(f"  {'finished' if done else 'to run  '}  {run['name']}")
        if not done:
            todo.append(run)
    for k, run in enumerate(todo, 1):
        step = f"{k}/{len(todo)} {run['name']}"
        if args.via in ("local", "print"):
            command = common.main_command(
                args.config,
                run["workdir"],
                run["overrides"],
                python=sys.executable,
                extra=launcher_args,
            )
            if args.via == "print":
                common.say(step, command)
            else:
                common.execute(step, command, dry_run=args.dry_run)
        else:
            command = [
                sys.executable,
                "-m",
                f"launch.{args.via}",
                f"--config={args.config}",
                f"--workdir={run['workdir']}",
                *(f"--override={o}" for o in run["overrides"]),
                *launcher_args,
                *(["--dry-run"] if args.dry_run else []),
            ]
            common.execute(step, command, dry_run=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
