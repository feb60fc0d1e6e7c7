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

Runs share what they can: unless the config sets them, every run's prepared shards go to
`--workdir`/data and its phantom to `--workdir`/phantoms, so data are prepared once per
setting, not once per run (builds and phantoms are keyed by their settings and locked).
Run here (`--via=local`), a run whose overrides differ from a finished run's only in the
generator and later stages (`gan.*`, `synthesize.*`, `privacy.*`, `evaluate.*`) starts
from a copy of that run's `prepare` and `classifier_real`: the same data, seed and
classifier give the same real classifier, so it is trained once per setting. So does a run
beside a finished workdir of another sweep (run into the same `--workdir`, e.g.
`configs/sweeps/reproduction.py:dcgan` beside the cpd/prog one) whose config.json differs
from the run's only in fields no real stage reads.

Every sweep has a seed axis: each `get_sweep` entry is a setting, run once per seed (the
config file's `SEEDS`, else `DEFAULT_SEEDS`, three; `--seeds=0,1,2,3,4` chooses others), so
the runs of one setting differ only in `seed` and `synthjax.analysis.aggregate_seeds` can
give the setting an interval that covers training randomness, not only the test sample. An
entry that sets `seed` itself is refused. Seeds are the outer loop: the first pass over the
settings is a whole one-seed sweep, the next seeds add to it.

A `get_sweep` entry may carry a `name` for its setting; otherwise the name is made from the
overrides. A run is named `<setting>_seed-<seed>`.

Everything after `--` goes to the launcher named by `--via`. `--only` picks runs by name.
`sweep.json` in `--workdir` lists the runs, their overrides, workdirs and config (for
notebooks); a second sweep into the same `--workdir` adds its runs to it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch import common
from synthjax.core import config_files

VIA = ("local", "print", "slurm", "tpu_vm")
# Seeds per setting when the config file names none (`SEEDS`): one seed gives an interval
# over the test sample only; a setting's seed interval needs at least two.
DEFAULT_SEEDS = (0, 1, 2)


def load_sweep(config: str) -> list[dict[str, Any]]:
    """The config file's `get_sweep(arg)`: a list of {dotted field: value}, one per run."""
    file, arg = config_files.split(common.check_config(config))
    module = config_files.load_module(_config_path(config))
    if not hasattr(module, "get_sweep"):
        raise common.LaunchError(
            f"{file} defines no get_sweep(arg); add one returning a list of override dicts"
        )
    sweep = module.get_sweep(arg)
    if not sweep or not all(isinstance(run, dict) for run in sweep):
        raise common.LaunchError(f"{file}: get_sweep must return a non-empty list of dicts")
    return sweep


def sweep_seeds(config: str) -> tuple[int, ...]:
    """The seeds each setting of the sweep runs with: the config file's `SEEDS`, else
    `DEFAULT_SEEDS`."""
    module = config_files.load_module(_config_path(config))
    return parse_seeds(getattr(module, "SEEDS", DEFAULT_SEEDS))


def parse_seeds(seeds: str | Sequence[int]) -> tuple[int, ...]:
    """`0,1,2` (or a sequence of ints) as distinct integer seeds, in the order given."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    try:
        out = tuple(int(str(s).strip()) for s in items if str(s).strip())
    except ValueError:
        raise common.LaunchError(f"seeds {seeds!r}: give whole numbers, e.g. 0,1,2") from None
    if not out or len(set(out)) != len(out):
        raise common.LaunchError(f"seeds {seeds!r}: give at least one seed, each once")
    return out


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


SHARED_DIRS = {"dataset.data_dir": "data", "dataset.phantom.dir": "phantoms"}


def shared_dirs(config: str, workdir: str) -> dict[str, str]:
    """The directories every run of the sweep shares, for the fields the config leaves
    empty: {dotted field: path under the sweep's workdir}."""
    _, arg = config_files.split(config)
    base = config_files.load_module(_config_path(config)).get_config(arg)
    out = {}
    for field, folder in SHARED_DIRS.items():
        section, _, name = field.rpartition(".")
        node = base
        for part in section.split("."):
            node = node[part]
        if not node.get(name, ""):
            out[field] = f"{workdir.rstrip('/')}/{folder}"
    return out


def _config_path(config: str) -> Path:
    file, _ = config_files.split(common.check_config(config))
    return common.REPO / file if (common.REPO / file).is_file() else Path(file)


def expand(
    config: str, workdir: str, seeds: str | Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """[{name, setting, seed, workdir, overrides: [field=value, ...], values: {field: value}}]
    in order: every setting of `get_sweep` once per seed (`seeds`, else `sweep_seeds`), seeds
    outermost. `values` are the setting's overrides and the seed (the run's name); `overrides`
    add the shared directories."""
    seeds = sweep_seeds(config) if seeds is None else parse_seeds(seeds)
    settings, names = [], set()
    for entry in load_sweep(config):
        if "seed" in entry:
            raise common.LaunchError(
                f"a get_sweep entry sets seed ({entry}): seeds are the sweep's own axis "
                "(the config file's SEEDS, or --seeds)"
            )
        values = {f: v for f, v in entry.items() if f != "name"}
        setting = entry.get("name") or run_name(values)
        if setting in names:
            raise common.LaunchError(f"two settings of the sweep are both named {setting!r}")
        names.add(setting)
        settings.append((setting, values))
    shared = shared_dirs(config, workdir)
    runs = []
    for seed in seeds:
        for setting, values in settings:
            values = {**values, "seed": seed}
            name = f"{setting}_seed-{seed}"
            runs.append(
                {
                    "name": name,
                    "setting": setting,
                    "seed": seed,
                    "workdir": f"{workdir.rstrip('/')}/{name}",
                    "overrides": [override_text(f, v) for f, v in {**shared, **values}.items()],
                    "values": values,
                    "real_key": real_key(values),
                }
            )
    return runs


# What only the generator and what follows it read: runs of one sweep that agree on every
# other override train the same real-data classifier on the same data.
GENERATOR_SECTIONS = ("gan.", "synthesize.", "privacy.", "evaluate.")
REAL_STAGES = ("prepare", "classifier_real")


def real_key(values: dict[str, Any]) -> str:
    """The run's settings that `prepare` and `classifier_real` depend on, as text."""
    kept = {f: v for f, v in values.items() if not f.startswith(GENERATOR_SECTIONS)}
    return json.dumps(kept, sort_keys=True, default=str)


def resolve_config(config: str, overrides: Sequence[str]) -> Any:
    """The run's ConfigDict as `synthjax.main` resolves it: get_config(arg) plus the
    overrides (`field=value`, the value read as a Python literal where it is one)."""
    c = config_files.load(common.check_config(config))
    for override in overrides:
        field, _, text = override.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        config_files.set_field(c, field, value)
    return c


def resolve(config: str, overrides: Sequence[str]) -> dict[str, Any]:
    """`resolve_config` as the JSON a run's config.json holds."""
    return json.loads(json.dumps(resolve_config(config, overrides).to_dict(), default=str))


def _same_real_side(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether two resolved configs differ only in fields no real stage reads."""
    from synthjax import experiment  # jax and the library: only when a run is started here

    return not any(
        set(experiment.stages_of_field(change.field)) & set(REAL_STAGES)
        for change in experiment.config_changes(theirs, mine)
    )


def _copy_real_stages(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for stage in REAL_STAGES:
        shutil.copytree(source / stage, target / f".{stage}.copying")
        os.replace(target / f".{stage}.copying", target / stage)


def share_real_stages(
    run: dict[str, Any], runs: Sequence[dict[str, Any]], config: str | None = None
) -> str | None:
    """Copies `prepare` and `classifier_real` from a run that finished them with the same
    real-side settings (the same data, classifier and seed: the same fingerprints), so
    crossing a setting with both generators trains one real classifier. The donor is a run
    of this sweep, or, given the sweep's `config`, any workdir beside the run (another
    sweep's, e.g. the same settings with another generator) whose config.json differs from
    the run's resolved config only in fields no real stage reads. Returns the donor's name,
    or None when there is none or the run has its own."""
    target = Path(run["workdir"])
    if any((target / s).exists() for s in REAL_STAGES):
        return None
    done = lambda path: all((path / s / "summary.json").exists() for s in REAL_STAGES)
    for other in runs:
        source = Path(other["workdir"])
        if other is run or other["real_key"] != run["real_key"]:
            continue
        if done(source):
            _copy_real_stages(source, target)
            return other["name"]
    if config is None or not target.parent.is_dir():
        return None
    mine = None
    for source in sorted(target.parent.iterdir()):
        if source == target or not (source / "config.json").is_file() or not done(source):
            continue
        mine = mine if mine is not None else resolve(config, run["overrides"])
        if _same_real_side(mine, json.loads((source / "config.json").read_text())):
            _copy_real_stages(source, target)
            return source.name
    return None


def write_index(root: str, config: str, runs: Sequence[dict[str, Any]]) -> None:
    """`root`/sweep.json: {"config": the latest sweep's config, "runs": [...]}, each run
    with its `config`. Another sweep run into the same root (a variant beside the main
    one) adds its runs; this config's earlier runs are replaced."""
    path = Path(root) / "sweep.json"
    kept = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            kept = [
                r
                for r in old.get("runs", [])
                if r.get("config", old.get("config")) != config and "workdir" in r
            ]
            for r in kept:
                r.setdefault("config", old.get("config"))
        except (json.JSONDecodeError, AttributeError):
            kept = []  # a damaged index is rewritten from what this sweep knows
    index = {"config": config, "runs": [*kept, *({**r, "config": config} for r in runs)]}
    tmp = path.with_name(".sweep.json.tmp")
    tmp.write_text(json.dumps(index, indent=2, default=str))
    os.replace(tmp, path)


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
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds each setting runs with (default: the config file's SEEDS, "
        f"else {','.join(map(str, DEFAULT_SEEDS))})",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would run; run nothing")
    args = parser.parse_args(argv)

    runs = expand(args.config, args.workdir, args.seeds)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {r["name"] for r in runs}
        if unknown:
            raise common.LaunchError(f"--only: no runs named {sorted(unknown)}")
        runs = [r for r in runs if r["name"] in wanted]
    local = "://" not in args.workdir
    if local and not args.dry_run:
        os.makedirs(args.workdir, exist_ok=True)
        write_index(args.workdir, args.config, runs)

    settings = len({r["setting"] for r in runs})
    seeds = ",".join(str(s) for s in dict.fromkeys(r["seed"] for r in runs))
    print(
        f"sweep {args.config}: {len(runs)} runs ({settings} settings x seeds {seeds}) "
        f"under {args.workdir} (via {args.via})"
    )
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
                donor = None if args.dry_run else share_real_stages(run, runs, args.config)
                if donor:
                    print(f"[{step}] prepare and classifier_real copied from {donor}")
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
