"""Decoding source files on every core, in order, with a bounded amount in flight.

Dataset builders decode thousands of JPEGs, PNGs or DICOMs; one process would leave the other
cores idle. `ordered_map` runs a picklable function over items in a process pool and yields
the results in input order, holding at most two chunks of results in memory at once, so
preparation memory does not grow with the dataset.

A failure inside the function is returned, not raised: the builder decides which failures are
a skipped file (counted in its report) and which are bugs. `BadInput` carries a reason name
for the report.

A worker process that dies (the out-of-memory killer, a decoder crashing on one file) is
different: its results are lost, so the map stops with `WorkerDied`. The pool is a
`concurrent.futures.ProcessPoolExecutor`, which notices a dead child at once;
`multiprocessing.Pool` would replace it and wait forever for the lost results.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from synthjax.core.errors import SynthjaxError

T = TypeVar("T")
R = TypeVar("R")


class BadInput(Exception):
    """A source file that cannot be used; `reason` names the report's counter."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)  # both in args, so it survives pickling
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class WorkerDied(SynthjaxError):
    """A decoding process died mid-build (killed by a signal or exited): the build stops."""


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """0 (or less) means every available core."""
    return workers if workers > 0 else available_cores()


def _start_method() -> str:
    """fork where the platform has it, else spawn.

    forkserver and spawn re-run the main program's top level in every worker, so a script
    that builds a dataset without an `if __name__ == "__main__":` guard would start pools
    recursively. Forked workers inherit the parent as it is and only run numpy, Pillow and
    pydicom code, never JAX, so the parent's JAX threads cannot deadlock them.
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_signals() -> None:
    """A worker dies on SIGTERM and leaves Ctrl-C to the parent.

    A forked worker inherits the parent's handlers. In a multi-process run the parent's
    SIGTERM handler is JAX's preemption notifier, which only records the signal; a worker
    keeping it would outlive the pool's `terminate()` and hang the parent's join forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(fn: Callable[[T], R], item: T) -> tuple[bool, Any]:
    try:
        return True, fn(item)
    except Exception as error:  # returned to the parent, which decides what it means
        return False, _picklable(error)


def _picklable(error: Exception) -> Exception:
    """`error`, or a RuntimeError with its text when it cannot travel back from a worker.

    An exception class whose constructor takes other arguments than its message fails to
    unpickle in the parent, which would stop the whole map instead of skipping one file.
    """
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _call_chunk(fn: Callable[[T], R], items: list[T]) -> list[tuple[bool, Any]]:
    return [_call(fn, item) for item in items]


@dataclasses.dataclass
class Pool:
    """A `process_pool`: the executor and how many processes it runs."""

    executor: ProcessPoolExecutor
    workers: int
    # Every child seen so far: a broken executor drops the dead one from its own list, which
    # left only the survivors it SIGTERMs to report ("killed by SIGTERM", not the SIGKILL).
    seen: dict[int, multiprocessing.Process] = dataclasses.field(default_factory=dict)

    def processes(self) -> list[multiprocessing.Process]:
        # The executor keeps its children in a private dict; there is no public accessor
        # (Python 3.14 adds terminate_workers()). Empty once the executor is shut down.
        for pid, process in list((getattr(self.executor, "_processes", None) or {}).items()):
            self.seen.setdefault(pid, process)
        return list(self.seen.values())

    def terminate(self) -> None:
        """Abandons queued work and stops every worker now (SIGTERM; see `_worker_signals`)."""
        processes = self.processes()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


@contextlib.contextmanager
def process_pool(workers: int = 0) -> Iterator[Pool | None]:
    """A pool of `workers` processes (0 = every core) for `ordered_map`, or None for one.

    Starting workers costs seconds (each imports the decoders and TFDS), so a build opens one
    pool and passes it to every `ordered_map` call: header reading and every split.
    """
    workers = resolve_workers(workers)
    if workers == 1:
        yield None
        return
    context = multiprocessing.get_context(_start_method())
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_signals)
    pool = Pool(executor, workers)
    try:
        yield pool
    except BaseException:
        pool.terminate()  # an error or Ctrl-C: queued work is abandoned
        raise
    else:
        executor.shutdown(wait=True)  # workers finish and exit on their own


def _describe(item: Any) -> str:
    """A short name of an item for a message: its CSV path or file, else its repr."""
    name = getattr(item, "csv_path", None) or getattr(item, "file", None)
    text = str(name) if name is not None else repr(item)
    return text if len(text) <= 120 else text[:117] + "..."


def _death_message(pool: Pool, in_flight: list[Any]) -> str:
    """What `WorkerDied` says: which process died how, around which items, and what to do."""
    # The executor is terminating the others, and its thread reaps them too: whichever of two
    # threads waits second sees no status, so an exit code can read None for a moment.
    processes = pool.processes()
    deadline = time.monotonic() + 5.0
    for process in processes:
        process.join(timeout=1.0)
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, 0)})
    if len(codes) > 1:  # the executor SIGTERMs the survivors: name the first death only
        codes = [c for c in codes if c != -signal.SIGTERM]
    how = []
    for code in codes:
        if code < 0:
            try:
                how.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                how.append(f"killed by signal {-code}")
        else:
            how.append(f"exited with code {code}")
    where = ""
    if in_flight:
        where = (
            f" while {len(in_flight)} item(s) were being decoded, from "
            f"{_describe(in_flight[0])} to {_describe(in_flight[-1])}"
        )
    return (
        f"a decoding worker process died ({', '.join(how) or 'terminated abruptly'}){where}. "
        "Its results are lost, so the build stopped; the partial build is removed by the next "
        "run. Usual causes: the out-of-memory killer (check `dmesg` or the job's memory limit) "
        "or a decoder crashing on one file. Fix: give the job more memory or lower "
        "--config.dataset.prepare_workers (1 decodes in the main process, where a crash shows "
        "its file), then run prepare again."
    )


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 0,
    pool: Pool | None = None,
    chunk_size: int = 16,
) -> Iterator[tuple[T, R | Exception]]:
    """Yields `(item, fn(item))` in input order, or `(item, exception)` where fn raised.

    Args:
      fn: a picklable callable (a module-level function or a `functools.partial` of one).
      items: picklable inputs; consumed lazily.
      workers: processes (0 = every available core; 1 = run here, no pool); used when no
        `pool` is given.
      pool: a `process_pool` to run in (its size overrides `workers`).
      chunk_size: items per task sent to a worker. At most `2 * workers` chunks are in
        flight, which bounds memory to about `2 * workers * chunk_size` results.

    Raises:
      WorkerDied: a worker process died (its results cannot be recovered); raised as soon as
        the pool notices, not after a timeout.
    """
    if pool is None:
        with process_pool(workers) as own:
            if own is None:
                for item in items:
                    _, value = _call(fn, item)
                    yield item, value
            else:
                yield from ordered_map(fn, items, pool=own, chunk_size=chunk_size)
        return
    in_flight = 2 * pool.workers
    pending: collections.deque[tuple[list[T], Future]] = collections.deque()
    iterator = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < in_flight:
            chunk = list(itertools.islice(iterator, chunk_size))
            if not chunk:
                exhausted = True
                break
            try:
                pending.append((chunk, pool.executor.submit(_call_chunk, fn, chunk)))
            except BrokenProcessPool:
                raise WorkerDied(_death_message(pool, chunk)) from None
            pool.processes()  # remember the children while they are all listed
        if not pending:
            return
        chunk, future = pending.popleft()
        try:
            results = future.result()
        except BrokenProcessPool:
            lost = chunk + [item for rest, _ in pending for item in rest]
            raise WorkerDied(_death_message(pool, lost)) from None
        for item, (_, value) in zip(chunk, results, strict=True):
            yield item, value
