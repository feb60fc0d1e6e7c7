"""Several processes, one run: starting JAX's multi-controller runtime, barriers, and the
preemption sync point.

Every process runs the same program (`python -m synthjax.main ...` on every host). JAX's
distributed runtime connects them through a coordinator (process 0); after that
`jax.devices()` lists every device of every host and the mesh spans them all. What this
module adds is the decision *whether* to connect, and the few host-level primitives the
stages need:

- `initialize(...)`: explicit flags (`--coordinator_address/--num_processes/--process_id`),
  else a SLURM job step with several tasks, else a multi-worker TPU slice; on one machine
  with none of these, nothing happens and the run is single-process.
- `barrier(name)`: every process waits here until all have arrived (the coordination
  service's barrier, not a device collective, so it may wait for hours: prepare).
- `preemption_reached(step)`: True on every process at the same step once any process got
  SIGTERM (JAX's preemption sync manager), so all save the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

from synthjax.core.errors import ConfigError

MODES = ("auto", "on", "off")
# Long enough for `prepare` on a large dataset while the other hosts wait for it.
BARRIER_TIMEOUT_S = 24 * 3600


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process was asked to start: the flags of `synthjax.main`."""

    mode: str = "auto"  # auto | on | off
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    # The devices this process drives. Unset under SLURM, JAX gives each task the one GPU
    # of its local rank (one process per GPU); a process driving every GPU of its node
    # lists them all.
    local_device_ids: tuple[int, ...] | None = None


def _slurm_tasks() -> int:
    if "SLURM_JOB_ID" not in os.environ or "SLURM_STEP_NODELIST" not in os.environ:
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1"))


def _tpu_workers() -> int:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES")
    return len(hosts.split(",")) if hosts else 1


def reason_to_connect(launch: Launch) -> str | None:
    """Why this process should join a multi-process run, or None to run alone."""
    explicit = (launch.coordinator_address, launch.num_processes, launch.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ConfigError(
                "--coordinator_address/--num_processes/--process_id",
                "give all three or none",
                "e.g. --coordinator_address=10.0.0.2:8476 --num_processes=2 --process_id=0",
            )
        if not 0 <= launch.process_id < launch.num_processes:
            raise ConfigError(
                "--process_id",
                f"{launch.process_id} is not in [0, {launch.num_processes})",
                "number the processes 0 .. num_processes-1",
            )
        return "flags"
    if launch.mode == "off":
        return None
    if launch.mode == "on":
        return "asked (--distributed=on): JAX detects the cluster"
    if _slurm_tasks() > 1:
        return f"SLURM job step with {_slurm_tasks()} tasks"
    if _tpu_workers() > 1:
        return f"TPU slice with {_tpu_workers()} workers"
    return None


def initialize(launch: Launch = Launch()) -> bool:
    """Connects to the other processes when `launch` or the environment says so.

    Must run before anything touches a JAX backend. Returns whether it connected.
    """
    if launch.mode not in MODES:
        raise ConfigError("--distributed", f"unknown mode {launch.mode!r}", f"use one of {MODES}")
    reason = reason_to_connect(launch)
    if reason is None:
        return False
    # Cross-process collectives on CPU need gloo; GPU and TPU ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", True)
    try:
        jax.distributed.initialize(
            coordinator_address=launch.coordinator_address,
            num_processes=launch.num_processes,
            process_id=launch.process_id,
            local_device_ids=launch.local_device_ids,
        )
    except ValueError as error:  # --distributed=on where JAX detects no cluster
        raise ConfigError(
            "--distributed",
            f"asked to join a multi-process run, but {error}",
            "pass --coordinator_address, --num_processes and --process_id, or run alone "
            "with --distributed=auto",
        ) from None
    logging.info(
        "joined a %d-process run as process %d (%s)",
        jax.process_count(),
        jax.process_index(),
        reason,
    )
    return True


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def _client():
    from jax._src import distributed as jax_distributed  # the runtime's coordination client

    return jax_distributed.global_state.client


_barriers = 0  # every process passes the same barriers in the same order


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Blocks until every process has called `barrier(name)`; a no-op on one process.

    Every process must pass the same barriers in the same order (the name is for the error
    message when one does not arrive).
    """
    global _barriers
    if not is_multiprocess():
        return
    _barriers += 1
    _client().wait_at_barrier(f"synthjax/{_barriers}/{name}", int(timeout_s * 1000))


def preemption_reached(step: int) -> bool:
    """True on every process at the same `step` once any of them got SIGTERM.

    Call it at every step with the same step numbers on all processes. Always False on one
    process (there, `checkpoint.StopRequest` sees the signal directly).
    """
    if not is_multiprocess():
        return False
    return multihost_utils.reached_preemption_sync_point(step)


class CompiledEverywhere:
    """A jitted function that, on several processes, is compiled ahead of its first run for
    each new argument signature, then waits at a barrier before running it.

    The first collective of a program must not wait for another process that is still
    compiling (its compile may take a minute longer: a cache hit here, a miss there), or the
    collectives' setup times out. On one process this is the jitted function itself.
    """

    def __init__(self, jitted, name: str):
        self._jitted = jitted
        self._name = name
        self._compiled: dict[Any, Any] = {}

    def __call__(self, *args):
        if not is_multiprocess():
            return self._jitted(*args)
        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))
        if key not in self._compiled:
            self._compiled[key] = self._jitted.lower(*args).compile()
            barrier(f"{self._name}: compiled")
        return self._compiled[key](*args)
