"""The one module that talks to orbax: stage checkpoints, fingerprints, stop requests.

A stage checkpoint holds the train state pytree and, when the stage reads a training stream,
the grain iterator state, saved together (atomic finalisation: a half-written step directory
is never restored). Saves are asynchronous: the device->host copy blocks, the writing does
not. `StopRequest` turns SIGTERM (preemptible VMs) and Ctrl-C into a flag the training loop
checks at each step boundary, so a stop always saves first.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers


class Checkpointer:
    """Checkpoints of one stage in `<stage_dir>/checkpoints/<step>/{state,data}`."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, async_save: bool = True):
        self.directory = epath.Path(directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None = None):
        """Starts an async save of `state` (+ the iterator position) at `step`."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self,
        abstract_state: Any,
        data_iterator: grain.DatasetIterator | None = None,
        step: int | None = None,
    ) -> Any:
        """Restores the state into the shardings of `abstract_state` (and the iterator).

        abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings, e.g. from
            `jax.eval_shape` plus the stage's state shardings.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def wait(self) -> None:
        """Blocks until every pending async save is finalised."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete or abstract state pytree."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state,
    )


def state_sha256(state: Any) -> str:
    """Fingerprint of a state pytree: sha256 over (path, dtype, shape, bytes) of every leaf,
    in tree order. Equal configs and seeds give equal fingerprints, interrupted or not."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    for path, leaf in leaves:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(jax.device_get(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class StopRequest:
    """Turns SIGTERM, SIGINT and SIGHUP into a flag checked at step boundaries.

    SIGHUP is what a job in the foreground of an SSH session gets when the connection drops
    (a laptop closed on `gcloud ... ssh`): it saves and stops like a preemption instead of
    dying mid-step. Use as a context manager around a training loop; the previous handlers
    come back on exit. A second Ctrl-C while a save is under way is ignored: the save
    finishes first.

    In a multi-process run (`multiprocess=True`) one process must not stop alone: SIGTERM is
    left to JAX's preemption notifier (see `distributed.preemption_reached`), and Ctrl-C and
    SIGHUP are passed on to it as SIGTERM, so every process stops at the same step.
    """

    def __init__(self, multiprocess: bool = False):
        self.signal: int | None = None
        self._multiprocess = multiprocess
        self._previous: dict[int, Any] = {}

    @property
    def SIGNALS(self) -> tuple[int, ...]:
        forwarded = (signal.SIGINT, signal.SIGHUP)
        return forwarded if self._multiprocess else (signal.SIGTERM, *forwarded)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        del frame
        if self._multiprocess:
            os.kill(os.getpid(), signal.SIGTERM)  # to the preemption notifier
        else:
            self.signal = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
