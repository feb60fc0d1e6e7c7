"""The training loop both trainers share: init or restore, compile, loop, periodic work,
final save.

A trainer supplies a jitted pure step `(state, batch) -> (state, metrics)`, a function
that creates the state already sharded, a grain dataset, and hooks (sample grids,
validation). The loop owns what every stage must get right: resuming the state *and* the
data iterator from the last checkpoint, logging metrics one step late (the device never
waits for the host), progress with rate and ETA, and turning SIGTERM/Ctrl-C into a saved
checkpoint and a `Preempted` exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax
from absl import logging
from etils import epath
from jax.sharding import Mesh

from synthjax.core import distributed, parallel
from synthjax.core.checkpoint import Checkpointer, StopRequest
from synthjax.core.errors import Preempted
from synthjax.core.metrics import MetricsWriter
from synthjax.core.progress import Progress, itstime
from synthjax.data import input_pipeline as pipeline

State = Any
Metrics = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Hook:
    """Periodic work: `fn(state, step) -> (state, metrics)` every `every` steps (and last).

    `due(step)`, when given, decides instead (e.g. every N kimg under a changing batch size,
    only once the GAN has grown); `every` is then unused.
    """

    name: str
    every: int
    fn: Callable[[State, int], tuple[State, Metrics]]
    due: Callable[[int], bool] | None = None

    def is_due(self, step: int, total: int) -> bool:
        if self.due is not None:
            return self.due(step)
        return itstime(step, self.every, total=total)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    name: str
    stage_dir: epath.Path
    total_steps: int
    global_batch: int
    checkpoint_every: int
    log_every: int
    images_at: Callable[[int], float] | None = None  # when the batch size changes by phase


@dataclasses.dataclass
class LoopResult:
    state: State
    step: int
    stopped_early: bool
    start_step: int
    throughput: dict[str, float]


def train_loop(
    settings: LoopSettings,
    *,
    mesh: Mesh,
    create_state: Callable[[], State],
    step_fn: Callable[[State, dict[str, jax.Array], int], tuple[State, Metrics]],
    dataset: grain.MapDataset,
    hooks: Sequence[Hook] = (),
    finished: Callable[[State], bool] | None = None,
    state_step: Callable[[State], int] = lambda s: int(jax.device_get(s.step)),
) -> LoopResult:
    """Runs (or resumes) a stage's training to `total_steps` or until `finished(state)`.

    `step_fn(state, batch, step)` runs step number `step` (0-based: the steps done before
    it); trainers whose step depends on the phase (prog-GAN) pick the compiled step by it.
    """
    # --- init or restore ----------------------------------------------------------------
    data_iter = pipeline.train_iterator(dataset)
    ckpt = Checkpointer(settings.stage_dir / "checkpoints")
    abstract = parallel.replicated_abstract(create_state, mesh)
    if ckpt.latest_step() is not None:
        state = restore_state(ckpt, abstract, data_iter)
        logging.info("%s: resumed from step %d", settings.name, ckpt.latest_step())
    else:
        state = create_state()
    start_step = state_step(state)
    is_host0 = jax.process_index() == 0
    writer = MetricsWriter(
        settings.stage_dir, settings.name, enabled=is_host0, resume_step=start_step
    )
    progress = Progress(
        settings.name,
        settings.total_steps,
        start_step=start_step,
        items_per_step=settings.global_batch,
        items_at=settings.images_at,
    )

    # --- loop ---------------------------------------------------------------------------
    pending: tuple[int, Metrics] | None = None  # logged one step late
    # The host runs at most one step ahead of the device. Without a bound, dispatch is
    # asynchronous and unthrottled: the host queues dozens of steps (each holding its
    # batch), progress reports the dispatch rate, and the first read (a log, an
    # evaluation) then waits for the whole queue.
    in_flight: Metrics | None = None
    step = last_saved = start_step
    stopped_early = finished is not None and finished(state)

    def flush(pending):
        if pending is not None:
            s, m = pending
            writer.write(s, {k: float(v) for k, v in jax.device_get(m).items()})

    try:
        with StopRequest(multiprocess=distributed.is_multiprocess()) as stop:
            while step < settings.total_steps and not stopped_early:
                batch = parallel.to_global(next(data_iter), mesh)
                state, metrics = step_fn(state, batch, step)
                if in_flight is not None:
                    jax.block_until_ready(in_flight)
                in_flight = metrics
                step += 1
                flush(pending)
                pending = (
                    (step, metrics)
                    if itstime(step, settings.log_every, total=settings.total_steps)
                    else None
                )
                progress.update(step)
                hooks_ran = False
                for hook in hooks:
                    if hook.is_due(step, settings.total_steps):
                        flush(pending)
                        pending = None
                        state, hook_metrics = hook.fn(state, step)
                        hooks_ran = True
                        if hook_metrics:
                            writer.write(step, hook_metrics)
                # Only hooks change what `finished` looks at; asking after every step would
                # make the host wait for the device.
                if hooks_ran and finished is not None and finished(state):
                    stopped_early = True
                # Several processes: all of them reach the sync point at the same step.
                preempted = stop.requested or distributed.preemption_reached(step)
                if (
                    itstime(step, settings.checkpoint_every)
                    or preempted
                    or stopped_early
                    or step == settings.total_steps
                ):
                    flush(pending)
                    pending = None
                    ckpt.save(step, state, data_iter)
                    last_saved = step
                if preempted:
                    ckpt.wait()
                    who = (
                        f"signal {stop.signal}"
                        if stop.requested
                        else f"SIGTERM to one of the {jax.process_count()} processes"
                    )
                    raise Preempted(
                        f"{settings.name}: stopped by {who} at step {step}; checkpoint saved. "
                        "Rerun the same command"
                        + (" on every host" if distributed.is_multiprocess() else "")
                        + " to continue."
                    )
        # --- final save -----------------------------------------------------------------
        flush(pending)
        if last_saved != step:
            ckpt.save(step, state, data_iter)
    except Exception as error:
        if not isinstance(error, Preempted):
            # Printed under the traceback: where it failed, so a launcher can tell the same
            # failure twice (launch/tpu_vm.py stops retrying then) from a new one.
            error.add_note(f"{settings.name}: failed after step {step}")
        raise
    finally:
        # Also on errors: pending async saves finish (or fail) before the process moves on.
        ckpt.close()
        writer.close()
    return LoopResult(state, step, stopped_early, start_step, progress.summary())


def restore_final_state(stage_dir: epath.Path, abstract_state: State) -> State:
    """The final state a finished training stage saved (for later stages)."""
    with Checkpointer(stage_dir / "checkpoints") as ckpt:
        return restore_state(ckpt, abstract_state)


def restore_state(
    ckpt: Checkpointer, abstract_state: State, data_iter: grain.DatasetIterator | None = None
) -> State:
    """The latest checkpoint's state in the layout of `abstract_state`. A state whose layout
    changed (the GAN's and the classifier's were flat dicts of fields) says how to read
    the old one (`flat_layout()`, `from_flat_layout`): a checkpoint that does not match the
    new tree is read through it, so workdirs written before the change resume."""
    try:
        return ckpt.restore(abstract_state, data_iter)
    except ValueError:  # orbax: the saved tree is not the one asked for
        if not hasattr(abstract_state, "flat_layout"):
            raise
        flat = ckpt.restore(abstract_state.flat_layout(), data_iter)
        return type(abstract_state).from_flat_layout(flat)
