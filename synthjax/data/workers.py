"""Decoding source files on every core, in order, with a bounded amount in flight.

Dataset builders decode thousands of JPEGs, PNGs or DICOMs; one process would leave the other
cores idle. `ordered_map` runs a picklable function over items in a process pool and yields
the results in input order, holding at most two chunks of results in memory at once, so
preparation memory does not grow with the dataset.

A failure inside the function is returned, not raised: the builder decides which failures are
a skipped file (counted in its report) and which are bugs. `BadInput` carries a reason name
for the report.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

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
        return False, error


def _call_chunk(fn: Callable[[T], R], items: list[T]) -> list[tuple[bool, Any]]:
    return [_call(fn, item) for item in items]


@contextlib.contextmanager
def process_pool(workers: int = 0) -> Iterator[Any]:
    """A pool of `workers` processes (0 = every core) for `ordered_map`, or None for one.

    Starting workers costs seconds (each imports the decoders and TFDS), so a build opens one
    pool and passes it to every `ordered_map` call: header reading and every split.
    """
    workers = resolve_workers(workers)
    if workers == 1:
        yield None
        return
    context = multiprocessing.get_context(_start_method())
    pool = context.Pool(workers, initializer=_worker_signals)
    try:
        yield pool
    except BaseException:
        pool.terminate()  # an error or Ctrl-C: queued work is abandoned
        raise
    else:
        pool.close()  # workers finish and exit on their own
    finally:
        pool.join()


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 0,
    pool: Any = None,
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
    in_flight = 2 * pool._processes
    pending: list[tuple[list[T], Any]] = []
    iterator = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < in_flight:
            chunk = list(itertools.islice(iterator, chunk_size))
            if not chunk:
                exhausted = True
                break
            pending.append((chunk, pool.apply_async(_call_chunk, (fn, chunk))))
        if not pending:
            return
        chunk, result = pending.pop(0)
        for item, (_, value) in zip(chunk, result.get(), strict=True):
            yield item, value
