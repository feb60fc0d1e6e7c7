"""The pipeline: validate the config, then run its stages in order, each idempotent.

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

from synthjax import stages
from synthjax.core import distributed, lock, parallel
from synthjax.core.errors import ConfigError
from synthjax.core.workdir import Run, read_json, write_json_atomic
from synthjax.data.registry import DATASETS, PHANTOM_DATASETS

STAGE_ORDER = stages.ORDER
GAN_ARCHS = ("cpd", "prog", "dcgan")
FD_FEATURES = ("classifier", "inception")
CLASSIFIER_ARCHS = ("densenet121", "densenet_narrow")
CONV_LOWERINGS = ("auto", "native", "im2col", "hybrid")


def _require(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Refuses impossible settings before any compute, naming the field and the fix."""
    stages = tuple(config.stages)
    unknown = [s for s in stages if s not in STAGE_ORDER]
    _require(
        not unknown, "stages", f"unknown stage(s) {unknown}", f"choose from {list(STAGE_ORDER)}"
    )
    order = [STAGE_ORDER.index(s) for s in stages]
    _require(
        order == sorted(order) and len(set(order)) == len(order),
        "stages",
        f"{list(stages)} is out of order or repeats a stage",
        f"list them in pipeline order: {list(STAGE_ORDER)}",
    )
    ds = config.dataset
    _require(
        ds.name in DATASETS,
        "dataset.name",
        f"{ds.name!r} is not a dataset here",
        f"use one of {list(DATASETS)}",
    )
    for field, value in (
        ("dataset.resolution", ds.resolution),
        ("dataset.base_resolution", ds.base_resolution),
    ):
        _require(
            isinstance(value, int) and 4 <= value <= 1024 and value & (value - 1) == 0,
            field,
            f"{value} is not a power of two between 4 and 1024",
            "use 32, 64, 128, 256, 512 or 1024",
        )
    _require(
        ds.resolution <= ds.base_resolution,
        "dataset.resolution",
        f"{ds.resolution} is above base_resolution {ds.base_resolution}",
        f"set dataset.base_resolution >= {ds.resolution}",
    )
    _require(
        ds.uncertain_policy in ("u_ones", "u_zeros"),
        "dataset.uncertain_policy",
        f"{ds.uncertain_policy!r} is not a policy",
        "use 'u_ones' (the study) or 'u_zeros'",
    )
    if ds.name == "rsna_ich":
        from synthjax.data.dicom import parse_windows  # numpy + pydicom only

        try:
            parse_windows(ds.ct.windows)
        except ValueError as error:
            raise ConfigError(
                "dataset.ct.windows", str(error), "e.g. 'brain,subdural,bone'"
            ) from None
        _require(
            ds.ct.context in (0, 1, 2),
            "dataset.ct.context",
            f"{ds.ct.context} is not 0, 1 or 2",
            "use 0 (the slice alone) or 1 (with the slices above and below)",
        )
    _require(
        not ds.phantom.enabled or ds.manual_dir or ds.name in PHANTOM_DATASETS,
        "dataset.phantom.enabled",
        f"there is no built-in phantom for {ds.name!r}",
        f"pass --config.dataset.manual_dir, or use a dataset among {list(PHANTOM_DATASETS)}",
    )
    _require(
        1 <= ds.phantom.min_slices <= ds.phantom.max_slices,
        "dataset.phantom.min_slices",
        f"{ds.phantom.min_slices}..{ds.phantom.max_slices} is not a range of slices",
        "use 1 <= min_slices <= max_slices",
    )
    for field in (
        "num_classes",
        "samples_per_class",
        "validation_per_class",
        "test_per_class",
        "min_class_count",
    ):
        _require(ds[field] >= 0, f"dataset.{field}", f"{ds[field]} is negative", "use 0 or more")
    _require(
        config.classifier.arch in CLASSIFIER_ARCHS,
        "classifier.arch",
        f"{config.classifier.arch!r} is unknown",
        f"use one of {list(CLASSIFIER_ARCHS)}",
    )
    _require(
        config.conv_lowering in CONV_LOWERINGS,
        "conv_lowering",
        f"{config.conv_lowering!r} is unknown",
        f"use one of {list(CONV_LOWERINGS)}",
    )
    data = config.mesh.data if config.mesh.data != -1 else num_devices
    _require(
        data > 0 and num_devices % data == 0,
        "mesh.data",
        f"{config.mesh.data} does not divide the {num_devices} devices",
        f"use -1 (all) or a divisor of {num_devices}",
    )
    for field in ("classifier.batch_size", "classifier.eval_batch_size", "synthesize.batch_size"):
        section, name = field.split(".")
        value = config[section][name]
        _require(
            value > 0 and value % data == 0,
            field,
            f"global batch {value} is not divisible by the {data} devices on the data axis",
            f"use a multiple of {data}",
        )
    _require(
        config.classifier.train_steps > 0,
        "classifier.train_steps",
        "must be positive",
        "use a step count > 0",
    )
    _validate_gan(config.gan, ds.resolution, data)
    _validate_evaluation(config, ds.resolution)


def _validate_evaluation(config: ml_collections.ConfigDict, resolution: int) -> None:
    p = config.privacy
    _require(
        0.0 < p.percentile < 50.0,
        "privacy.percentile",
        f"{p.percentile} is not a percentile in (0, 50)",
        "use 1.0 (the 1st percentile of held-out distances)",
    )
    _require(
        0.0 < p.alpha < 1.0,
        "privacy.alpha",
        f"{p.alpha} is not a significance level in (0, 1)",
        "use e.g. 0.01",
    )
    _require(
        0.5 <= p.floor_quantile <= 1.0 and p.floor_images >= 16,
        "privacy.floor_quantile",
        f"quantile {p.floor_quantile} of {p.floor_images} near copies cannot place the floor",
        "use floor_quantile 0.5 and floor_images 512",
    )
    _require(
        p.replace_attempts >= 0,
        "privacy.replace_attempts",
        f"{p.replace_attempts} is negative",
        "use 0 (drop close images) or more (draw them again first)",
    )
    _require(
        p.pixel_resolution >= 4 and p.pixel_resolution & (p.pixel_resolution - 1) == 0,
        "privacy.pixel_resolution",
        f"{p.pixel_resolution} is not a power of two >= 4",
        "use 32 or 64",
    )
    ev = config.evaluate
    _require(ev.prdc_k >= 1, "evaluate.prdc_k", f"{ev.prdc_k} < 1", "use 5 (the papers')")
    _require(
        ev.inception_weights == "" or os.path.isfile(ev.inception_weights),
        "evaluate.inception_weights",
        f"{ev.inception_weights!r} is not a file",
        "convert pytorch-fid's weights once with scripts/convert_fid_inception.py and pass "
        "the .npz, or leave it empty (domain features only)",
    )
    from synthjax.eval.discrimination import resolutions_for

    try:
        resolutions_for(resolution, tuple(ev.c2st.resolutions))
    except ValueError as error:
        raise ConfigError(
            "evaluate.c2st.resolutions", str(error), "use () or divisors of the resolution"
        ) from None
    _require(
        ev.c2st.train_steps > 0 and ev.c2st.batch_size > 0,
        "evaluate.c2st.train_steps",
        "the two-sample test needs positive train_steps and batch_size",
        "e.g. train_steps=600, batch_size=64",
    )


def _validate_gan(gan: ml_collections.ConfigDict, resolution: int, data: int) -> None:
    """The GAN's fields: architecture, schedule, losses, augmentation, FD selection."""
    from synthjax.train.augment import parse_augmentations  # jax.numpy only
    from synthjax.train.schedule import build_schedule  # pure Python

    _require(
        gan.arch in GAN_ARCHS, "gan.arch", f"{gan.arch!r} is not available", f"use {GAN_ARCHS}"
    )
    from synthjax.train import recipes  # pure Python

    _require(
        gan.recipe in recipes.RECIPES,
        "gan.recipe",
        f"{gan.recipe!r} is not a recipe",
        f"use one of {list(recipes.RECIPES)}",
    )
    try:
        recipes.resolve(gan)
    except ValueError as error:
        field = str(error).split("=")[0]
        raise ConfigError(field, str(error), "leave it '' for the recipe's choice") from None
    _require(
        gan.train_steps > 0 or gan.train_kimg > 0,
        "gan.train_kimg",
        "the GAN would train for no images",
        "set gan.train_kimg (thousands of images) or gan.train_steps > 0",
    )
    if gan.arch == "prog":
        start = gan.prog.start_resolution
        _require(
            start >= 4 and start & (start - 1) == 0 and start <= resolution,
            "gan.prog.start_resolution",
            f"{start} is not a power of two between 4 and the resolution {resolution}",
            "use 8 (the study) or another power of two <= dataset.resolution",
        )
    field = "gan.prog.batch_sizes" if gan.arch == "prog" else "gan.batch_size"
    try:
        schedule = build_schedule(gan, resolution)
    except ValueError as error:
        raise ConfigError(
            field if "batch" in str(error) else "gan.train_kimg",
            str(error),
            "see configs/default.py for the study's schedule",
        ) from None
    for phase in schedule.phases:
        b = phase.batch_size
        where = f" (at {phase.resolution}x{phase.resolution})" if gan.arch == "prog" else ""
        _require(
            b > 0 and b % data == 0,
            field,
            f"global batch {b}{where} is not divisible by the {data} devices on the data axis",
            f"use a multiple of {data}",
        )
        group = min(gan.mbstd_group_size, b // data)
        _require(
            group > 0 and (b // data) % group == 0,
            "gan.mbstd_group_size",
            f"group {gan.mbstd_group_size} does not divide the per-device batch {b // data}{where}",
            "use a per-device GAN batch that is a multiple of the group size",
        )
    _require(
        gan.bf16_resolution == 0
        or (gan.bf16_resolution >= 4 and gan.bf16_resolution & (gan.bf16_resolution - 1) == 0),
        "gan.bf16_resolution",
        f"{gan.bf16_resolution} is not 0 or a power of two",
        "use 0 (float32 throughout) or e.g. 64 (bfloat16 convolutions from 64x64 up)",
    )
    _require(gan.r1_interval > 0, "gan.r1_interval", "must be positive", "use e.g. 16")
    try:
        parse_augmentations(gan.ada.augmentations)
    except ValueError as error:
        raise ConfigError("gan.ada.augmentations", str(error), "e.g. 'translate,cutout'") from None
    ada = gan.ada
    _require(
        0.0 < ada.target < 1.0,
        "gan.ada.target",
        f"{ada.target} is not a usable ADA target",
        "use 0 < target < 1 (0.6 is ADA's)",
    )
    _require(
        ada.center in ("auto", "zero", "midpoint"),
        "gan.ada.center",
        f"{ada.center!r} is not a known centre for ADA's sign",
        "use 'auto', 'zero' or 'midpoint'",
    )
    _require(
        0.0 <= ada.start_p <= 1.0,
        "gan.ada.start_p",
        f"{ada.start_p} is not a probability",
        "use 0 (ADA's) up to about 0.5",
    )
    for field, value in (("interval", ada.interval), ("speed_kimg", ada.speed_kimg)):
        _require(
            value > 0,
            f"gan.ada.{field}",
            f"{value} is not a usable ADA setting",
            "use a positive value (ADA: interval 4, speed_kimg 500)",
        )
    _require(
        gan.select in ("fd", "label_fidelity", "combined"),
        "gan.select",
        f"{gan.select!r} is not a selection rule",
        "use 'fd', 'label_fidelity' or 'combined'",
    )
    _require(
        gan.select_fd_guard >= 1.0,
        "gan.select_fd_guard",
        f"{gan.select_fd_guard} < 1 would refuse the lowest FD itself",
        "use a factor >= 1, e.g. 1.5",
    )
    fd = gan.fd
    if fd.every_kimg > 0:
        _require(
            fd.features in FD_FEATURES,
            "gan.fd.features",
            f"{fd.features!r} is unknown",
            f"use {FD_FEATURES}",
        )
        _require(
            fd.reference_split in ("train", "validation", "test"),
            "gan.fd.reference_split",
            f"{fd.reference_split!r} is not a split",
            "use 'validation' (default) or 'train' (the study's choice)",
        )
        _require(
            fd.num_images >= 2 and fd.batch_size > 0 and fd.batch_size % data == 0,
            "gan.fd.batch_size",
            f"{fd.num_images} images in batches of {fd.batch_size} on {data} devices",
            f"use num_images >= 2 and a batch that is a multiple of {data}",
        )
        if fd.features == "inception":
            _require(
                bool(fd.inception_weights) and os.path.isfile(fd.inception_weights),
                "gan.fd.inception_weights",
                f"{fd.inception_weights!r} is not a file",
                "convert pytorch-fid's pt_inception-2015-12-05 weights once with "
                "scripts/convert_fid_inception.py and pass the .npz, or use "
                "gan.fd.features=classifier",
            )


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


def _read_old_config(run_: Run) -> dict | None:
    """The workdir's config.json, or None (absent, or unreadable: said, and rewritten)."""
    config_path = run_.workdir / "config.json"
    if not config_path.exists():
        return None
    try:
        return read_json(config_path)
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
    validate_config(config, jax.device_count())
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
    fd = config.gan.fd
    if (
        "gan" in config.stages
        and fd.every_kimg > 0
        and (fd.features == "classifier" or config.gan.select != "fd")
        and "classifier_real" not in config.stages
        and not (run_.finished("classifier_real") and "classifier_real" not in plan.rerun)
    ):
        raise ConfigError(
            "gan.fd.features",
            "GAN model selection measures Fréchet distances and label fidelity with the "
            f"real-data classifier, and classifier_real has not run in {run_.workdir}",
            "add 'classifier_real' to `stages`, or set gan.fd.every_kimg=0 (no selection)",
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
