"""The pipeline: check the config (`synthjax.schema`), then run its stages in order, each
idempotent.

prepare -> classifier_real -> gan -> synthesize -> classifier_synthetic -> evaluate ->
report. A stage whose `summary.json` exists is skipped; one that stopped halfway resumes
from its last checkpoint. So the same command, rerun after a preemption, a crash or
Ctrl-C, continues where it stopped. One exception: a finished GAN asked to train longer
(`gan.train_steps` / `gan.train_kimg`) resumes, and the stages after it are moved aside
to `superseded/` and redone.

One run at a time per workdir (`synthjax.core.lock`). A config that differs from the workdir's
`config.json` is checked field by field (`plan_config_change`): a field that changes no
result (`FREE_FIELDS`: where things go, how fast, on how many devices) may change; one that
changes the results of a stage that has started or finished is refused, unless
`rerun_from=<stage>` sets that stage and every later one aside and redoes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
from absl import logging
from etils import epath

from synthjax import schema, stages
from synthjax.core import distributed, lock, parallel
from synthjax.core.errors import ConfigError
from synthjax.core.workdir import Run, read_json, write_json_atomic

STAGE_ORDER = stages.ORDER


# --- a changed config on an existing workdir ------------------------------------------------

# Fields that change no result: where inputs and caches live, how fast and on how many
# devices it runs, how often it logs and checkpoints, evaluation batch sizes (padded
# batches: the same numbers). Resuming on another machine, with other devices, is a feature.
FREE_FIELDS = (
    "stages",
    "mesh.",
    "conv_lowering",  # how convolutions are lowered, not what they compute
    "compilation_cache",
    "dataset.data_dir",  # prepared shards: a cache keyed by source and settings
    "dataset.phantom.dir",  # phantoms: a cache keyed by their settings
    "dataset.prepare_workers",
    "classifier.eval_batch_size",
    "classifier.checkpoint_every",
    "classifier.log_every",
    "gan.checkpoint_every",
    "gan.log_every",
    "gan.sample_every",  # sample grids: pictures of the run, from their own latents
    "gan.sample_rows",
    "gan.sample_cols",
    "gan.fd.batch_size",
)
# A finished GAN asked to train longer resumes and redoes the later stages (see
# `_extend_finished_gan`); an unfinished one trains to the new length.
GAN_LENGTH_FIELDS = ("gan.train_steps", "gan.train_kimg")
# The stages whose results each section (or field) changes; the longest prefix decides. What
# a stage makes feeds every later stage, so those are redone too (`rerun_from`).
FIELD_STAGES = {
    "seed": STAGE_ORDER,
    "dataset.": STAGE_ORDER,
    "classifier.": ("classifier_real", "classifier_synthetic"),
    "gan.": ("gan",),
    "synthesize.": ("synthesize",),
    "privacy.": ("synthesize",),
    "evaluate.": ("evaluate",),
    "report.": ("report",),
}


@dataclasses.dataclass(frozen=True)
class FieldChange:
    """One config field whose value differs from the workdir's config.json."""

    field: str
    old: Any
    new: Any

    @property
    def from_code(self) -> bool:
        """A field on one side only: the code (configs/default.py) gained or lost it since
        the workdir started; no command line can set it, so it is reported, not refused."""
        return self.old is _ABSENT or self.new is _ABSENT

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages whose results it changes; () for a free field (or one from code)."""
        return () if self.from_code else stages_of_field(self.field)

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)}"


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def _matches(field: str, pattern: str) -> bool:
    return field.startswith(pattern) if pattern.endswith(".") else field == pattern


def stages_of_field(field: str) -> tuple[str, ...]:
    """The stages whose results `field` changes: () when free, every stage when unknown."""
    if field in GAN_LENGTH_FIELDS or any(_matches(field, p) for p in FREE_FIELDS):
        return ()
    matches = [p for p in FIELD_STAGES if _matches(field, p)]
    return FIELD_STAGES[max(matches, key=len)] if matches else STAGE_ORDER


def config_changes(old: dict, new: dict, prefix: str = "") -> list[FieldChange]:
    """Every leaf field that differs between two resolved configs (as JSON), sorted."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(FieldChange(f"{prefix}{key}", a, b))
    return changes


def stage_started(workdir: epath.Path, stage: str) -> bool:
    """Whether `stage` has results in `workdir` that a rerun would keep: a summary, a
    checkpoint to resume from, or (synthesize) shards already written."""
    stage_dir = workdir / stage
    if (stage_dir / "summary.json").exists():
        return True
    checkpoints = stage_dir / "checkpoints"
    if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        return True
    synthetic = workdir / "synthetic"
    return stage == "synthesize" and synthetic.exists() and any(synthetic.iterdir())


def stage_outputs(workdir: epath.Path, stage: str) -> list[epath.Path]:
    """What `stage` writes in `workdir` (existing or not): what a rerun moves aside."""
    paths = [workdir / stage]
    if stage == "synthesize":
        paths.append(workdir / "synthetic")
    if stage == "report":
        paths += [workdir / "report.json", workdir / "report.md"]
        paths += sorted(workdir.glob("report_*.png"))
    return paths


def parse_config_change(value: str | None) -> str | None:
    """`--config_change=rerun_from=<stage>` -> the stage (None when not given)."""
    if not value:
        return None
    key, _, stage = value.partition("=")
    if key != "rerun_from" or stage not in STAGE_ORDER:
        raise ConfigError(
            "--config_change",
            f"{value!r} is not a known config change",
            f"use rerun_from=<stage>, with <stage> one of {list(STAGE_ORDER)}",
        )
    return stage


@dataclasses.dataclass(frozen=True)
class ConfigChangePlan:
    """What a changed config does to an existing workdir (see `plan_config_change`)."""

    changes: tuple[FieldChange, ...]  # every changed field, free or not
    rerun_from: str | None  # set aside this stage and every later one, then redo them

    @property
    def rerun(self) -> tuple[str, ...]:
        if self.rerun_from is None:
            return ()
        return STAGE_ORDER[STAGE_ORDER.index(self.rerun_from) :]


def plan_config_change(
    workdir: epath.Path, old: dict, new: dict, rerun_from: str | None = None
) -> ConfigChangePlan:
    """Checks a config `new` against the workdir's `old` one before any compute.

    A changed field that changes the results of a stage that has started or finished would
    leave the workdir with results of both configs (and later stages made from the old
    ones); that is refused with a ConfigError naming each field and stage and the ways on,
    unless `rerun_from` names that stage or an earlier one: then it and every later stage
    are redone. Free fields, and a GAN's length (`_extend_finished_gan`), may change.
    """
    changes = config_changes(old, new)
    binding = [c for c in changes if c.stages]
    touched = {s for c in binding for s in c.stages}
    kept = [s for s in STAGE_ORDER if s in touched and stage_started(workdir, s)]
    if not kept:  # nothing made with the old values yet (later stages are made from these)
        return ConfigChangePlan(tuple(changes), None)
    listed = "; ".join(f"{c} (changes {', '.join(c.stages)})" for c in binding)
    if rerun_from is None:
        raise ConfigError(
            ", ".join(c.field for c in binding),
            f"the config differs from the one {workdir} was started with: {listed}; and "
            f"{', '.join(kept)} {'has' if len(kept) == 1 else 'have'} results made with the "
            "old values there, which a resumed run would keep beside results of the new ones",
            "rerun with the old values ("
            + " ".join(f"--config.{c.field}={_show(c.old)}" for c in binding)
            + f"), or use a new --workdir, or pass --config_change=rerun_from={kept[0]} to "
            f"set {kept[0]} and every later stage aside (to {workdir / 'superseded'}/) and "
            "redo them with the new values",
        )
    if STAGE_ORDER.index(rerun_from) > STAGE_ORDER.index(kept[0]):
        raise ConfigError(
            "--config_change",
            f"rerun_from={rerun_from} would keep {kept[0]}, whose results were made with the "
            f"old values of {listed}",
            f"use --config_change=rerun_from={kept[0]} (or an earlier stage)",
        )
    return ConfigChangePlan(tuple(changes), rerun_from)


def _apply_config_change(run_: Run, plan: ConfigChangePlan, old: dict) -> None:
    """Moves the outputs of the stages to redo to `superseded/config_change_<time>/`, with
    the old config beside them as `config.old.json` (not `config.json`: that would make the
    folder look like a workdir to `analysis.find_workdirs`). Process 0; the caller writes
    the new config.json."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    superseded = run_.workdir / "superseded" / f"config_change_{stamp}"
    _log(
        logging.INFO,
        f"config change: redoing {', '.join(plan.rerun)} with the new values; their earlier "
        f"results move to {superseded}",
    )
    if not run_.is_host0:
        return
    write_json_atomic(superseded / "config.old.json", old)
    # The latest stage first: a run stopped halfway through still finds the earliest one
    # started, and is refused (or moves the rest) next time.
    for stage in reversed(plan.rerun):
        for path in stage_outputs(run_.workdir, stage):
            if path.exists():
                _move_aside(path, superseded / path.name, "config change")


def upgrade_old_config(old: dict) -> dict:
    """An older workdir's config.json in today's field names, so its values are compared
    (and a changed one refused) rather than reported as fields the code renamed.

    The GAN's batch, learning rate and widths moved from `gan.*` (cpD's, also DCGAN's batch
    and fallback rate, and prog's fmap_max) into `gan.cpd`, `gan.dcgan` and `gan.prog`.
    """
    gan = old.get("gan")
    if not isinstance(gan, dict) or "batch_size" not in gan:
        return old
    gan = dict(gan)
    cpd, dcgan, prog = ({**gan.get(k, {})} for k in ("cpd", "dcgan", "prog"))
    batch, rate = gan.pop("batch_size"), gan.pop("learning_rate", None)
    fmap_base, fmap_max = gan.pop("fmap_base", None), gan.pop("fmap_max", None)
    cpd.update(batch_size=batch, learning_rate=rate, fmap_base=fmap_base, fmap_max=fmap_max)
    dcgan["batch_size"] = batch
    if not dcgan.get("learning_rate"):  # 0 meant "gan.learning_rate"
        dcgan["learning_rate"] = rate
    prog["fmap_max"] = fmap_max
    return {**old, "gan": {**gan, "cpd": cpd, "dcgan": dcgan, "prog": prog}}


def _read_old_config(run_: Run) -> dict | None:
    """The workdir's config.json, or None (absent, or unreadable: said, and rewritten)."""
    config_path = run_.workdir / "config.json"
    if not config_path.exists():
        return None
    try:
        return upgrade_old_config(read_json(config_path))
    except ValueError:
        _log(
            logging.WARNING,
            f"{config_path} is unreadable (a crash while it was written?): the config cannot "
            "be compared with the one this workdir was started with; it is rewritten",
        )
        return None


def _say_plan(plan: ConfigChangePlan, rerun_from: str | None) -> None:
    from_code = [c for c in plan.changes if c.from_code]
    if from_code:
        listed = "\n  ".join(map(str, from_code))
        _log(
            logging.WARNING,
            "config fields added or removed by a code update since this workdir was started; "
            "finished stages keep what the earlier code made (a new workdir redoes everything "
            f"with this code):\n  {listed}",
        )
    free = [
        c
        for c in plan.changes
        if not c.stages and not c.from_code and c.field not in GAN_LENGTH_FIELDS
    ]
    if free:
        listed = "\n  ".join(map(str, free))
        _log(
            logging.INFO,
            "config differs from the one this workdir was started with in fields that change "
            f"no result (config.json now records the new values):\n  {listed}",
        )
    if rerun_from and plan.rerun_from is None:
        _log(
            logging.INFO,
            f"--config_change=rerun_from={rerun_from}: no changed field needs a rerun "
            "(the config is unchanged, or its changes touch no started stage); nothing moved",
        )


@contextlib.contextmanager
def _workdir_lock(run_: Run) -> Iterator[lock.WorkdirLock | None]:
    """Holds the workdir's lock while the run works (process 0 takes it for every process,
    and all of them refuse together when it is taken)."""
    held, refusal, error = None, None, None
    if run_.is_host0:
        try:
            held = lock.acquire(run_.workdir)
        except lock.WorkdirBusy as e:
            refusal, error = str(e), e
        except Exception as e:
            refusal, error = f"process 0 could not take the lock of {run_.workdir}: {e}", e
    refusal = _agree_on_lock(refusal)
    if error is not None:
        raise error
    if refusal is not None:
        raise lock.WorkdirBusy(refusal)
    try:
        yield held
    finally:
        if held is not None:
            try:
                held.release()
            except Exception as e:  # never hide the run's own error behind this one
                _log(logging.WARNING, f"could not release {held.path}: {e}; delete it by hand")


_lock_rounds = 0


def _agree_on_lock(refusal: str | None) -> str | None:
    """Process 0's lock outcome, on every process (the coordination service's key-value
    store: no device work before the run is known to be alone in its workdir)."""
    global _lock_rounds
    if not distributed.is_multiprocess():
        return refusal
    _lock_rounds += 1
    key = f"synthjax/workdir_lock/{_lock_rounds}"
    client = distributed._client()
    if jax.process_index() == 0:
        client.key_value_set(key, "ok" if refusal is None else f"refused:{refusal}")
        return refusal
    value = client.blocking_key_value_get(key, int(distributed.BARRIER_TIMEOUT_S * 1000))
    return None if value == "ok" else value.removeprefix("refused:")


def run(
    config: ml_collections.ConfigDict, workdir: str, *, rerun_from: str | None = None
) -> dict[str, dict[str, Any]]:
    """Runs (or resumes) every stage in `config.stages`; returns their summaries.

    Holds the workdir's lock throughout (released on return, on errors and on Ctrl-C).
    `rerun_from`: when the config changed in a way that touches stages already run, set that
    stage and every later one aside and redo them (`--config_change=rerun_from=<stage>`).
    """
    schema.validate(config, jax.device_count())
    if rerun_from is not None and rerun_from not in STAGE_ORDER:
        parse_config_change(f"rerun_from={rerun_from}")  # raises, naming the stages
    mesh = parallel.make_mesh(config.mesh.data)
    if "://" not in workdir:
        workdir = os.path.abspath(workdir)  # orbax needs absolute paths
    run_ = Run(config=config, workdir=epath.Path(workdir), mesh=mesh)
    run_.workdir.mkdir(parents=True, exist_ok=True)
    with _workdir_lock(run_) as held:
        return _run_locked(run_, config, rerun_from, held)


def _run_locked(
    run_: Run,
    config: ml_collections.ConfigDict,
    rerun_from: str | None,
    held: lock.WorkdirLock | None,
) -> dict[str, dict[str, Any]]:
    if config.compilation_cache:
        cache = (
            run_.workdir / "compilation_cache"
            if config.compilation_cache == "workdir"
            else epath.Path(config.compilation_cache)
        )
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    resolved = json.loads(config.to_json_best_effort())
    # Every process reads the same files and decides the same, before anything moves.
    old = _read_old_config(run_)
    plan = ConfigChangePlan((), None)
    if old is not None:
        plan = plan_config_change(run_.workdir, old, resolved, rerun_from)
    schema.check_selection_inputs(
        config,
        run_.finished("classifier_real") and "classifier_real" not in plan.rerun,
        run_.workdir,
    )
    _say_plan(plan, rerun_from)
    if plan.rerun_from is not None:
        distributed.barrier("config change checked")
        _apply_config_change(run_, plan, old)
    if run_.is_host0:
        write_json_atomic(run_.workdir / "config.json", resolved)
    distributed.barrier("config written")

    _extend_finished_gan(run_, config)
    stage_fns = {name: stages.stage_fn(name) for name in STAGE_ORDER}
    summaries = {}
    for stage in config.stages:
        if held is not None and not distributed.is_multiprocess():
            held.check()  # one process: stop here if another run took the workdir over
        if run_.finished(stage):
            logging.info("%s: finished earlier, skipped", stage)
            summaries[stage] = run_.summary(stage)
            continue
        summaries[stage] = _run_stage(run_, stage, stage_fns[stage])
    return summaries


def _extend_finished_gan(run_: Run, config: ml_collections.ConfigDict) -> None:
    """Reopens a finished `gan` stage whose config now asks for more steps than it trained.

    The GAN then resumes from its last checkpoint, and every stage after it runs again on
    the longer-trained generator. Nothing is deleted: the finished GAN's summary becomes
    `gan/summary.step_<N>.json`, and the later stages' outputs (their stage directories,
    `synthetic/`, `report.json`, `report.md`, `report_*.png`) move to
    `superseded/gan_step_<N>/`. An early-stopped GAN stays finished (a longer run would stop
    at the same step), and so does one already longer than asked (with a warning).
    """
    if "gan" not in config.stages or not run_.finished("gan"):
        return
    from synthjax.train.schedule import build_schedule  # pure Python

    asked = build_schedule(config.gan, config.dataset.resolution).total_steps
    summary = run_.summary("gan")
    trained = int(summary["step"])
    if asked == trained:
        return
    if asked < trained:
        _log(
            logging.WARNING,
            f"gan: finished at {trained} steps, longer than the {asked} steps the config asks "
            "for; kept as it is (a GAN is never shortened: its later stages use the "
            f"{trained}-step GAN)",
        )
        return
    if summary.get("early_stopped"):
        _log(
            logging.INFO,
            f"gan: the config asks for {asked} steps, but the finished GAN stopped early at "
            f"step {trained} (model selection saw no improvement); training longer changes "
            "nothing, so it stays finished",
        )
        return
    checkpoints = run_.stage_dir("gan") / "checkpoints"
    if not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        raise ConfigError(
            "gan.train_steps",
            f"the config asks for {asked} GAN steps, the finished GAN trained {trained}, and "
            f"{checkpoints} holds no checkpoint to resume it from",
            f"ask for its {trained} steps again, or move {run_.stage_dir('gan')} away to "
            "train a new GAN from scratch",
        )
    # Every process has decided (from the same summary) before process 0 moves anything.
    distributed.barrier("gan: length checked")
    superseded = run_.workdir / "superseded" / f"gan_step_{trained}"
    _log(
        logging.INFO,
        f"gan: the config asks for {asked} steps and the finished GAN trained {trained}: "
        f"resuming it from its last checkpoint and redoing every later stage; their "
        f"{trained}-step results move to {superseded}",
    )
    if run_.is_host0:
        later = STAGE_ORDER[STAGE_ORDER.index("gan") + 1 :]
        stale = [path for s in later for path in stage_outputs(run_.workdir, s)]
        # The gan summary moves last: a run stopped halfway through finds the GAN still
        # finished and moves the rest next time.
        for path in stale:
            if path.exists():
                _move_aside(path, superseded / path.name)
        _move_aside(
            run_.summary_path("gan"), run_.stage_dir("gan") / f"summary.step_{trained}.json"
        )
    distributed.barrier("gan: earlier results moved aside")


def _move_aside(path: epath.Path, target: epath.Path, why: str = "gan") -> None:
    """Renames `path` to `target` (or `target.1`, `target.2`... if taken), and says so."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free, n = target, 0
    while free.exists():
        n += 1
        free = target.parent / f"{target.name}.{n}"
    path.rename(free)
    _log(logging.INFO, f"{why}: moved {path} -> {free}")


def _log(level: int, message: str) -> None:
    logging.log(level, "%s", message)
    print(f"== {message}", flush=True)


# Stages that only write files, no device work: process 0 runs them for everyone (on a
# workdir every host sees), the others wait for it and read its summary.
HOST0_STAGES = ("prepare",)


def _run_stage(run_: Run, stage: str, fn: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    stage_dir = run_.stage_dir(stage)
    if run_.is_host0:
        stage_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(f"{stage}: start")
    if stage in HOST0_STAGES and not run_.is_host0:
        distributed.barrier(f"{stage}: written")
        print(f"== {stage}: done by process 0", flush=True)
        return run_.summary(stage)
    elapsed_path = stage_dir / "elapsed.json"
    earlier = read_json(elapsed_path)["wall_s"] if elapsed_path.exists() else 0.0
    logging.info("%s: %s", stage, "resuming" if earlier else "starting")
    print(f"== {stage}", flush=True)
    start = time.perf_counter()
    try:
        result = fn(run_)
    finally:
        # Time spent in runs that were stopped counts too (SIGKILL loses only its own).
        if run_.is_host0:
            write_json_atomic(elapsed_path, {"wall_s": earlier + time.perf_counter() - start})
    summary = {
        "stage": stage,
        "step": result.pop("step", 0),
        "wall_s": round(earlier + time.perf_counter() - start, 3),
        "state_sha256": result.pop("state_sha256", None),
        **result,
    }
    if stage not in HOST0_STAGES:
        distributed.barrier(f"{stage}: every process done")
    if run_.is_host0:
        write_json_atomic(run_.summary_path(stage), summary)
    distributed.barrier(f"{stage}: written")
    print(f"== {stage}: done in {summary['wall_s']:.1f} s", flush=True)
    return summary
