"""grain input pipeline: source -> shuffle -> (flip) -> per-process slice of each batch.

Training batches come from an infinite, seeded, reshuffled-every-epoch stream of the kept
record indices. Global batch `s` is always records `s*B .. s*B+B-1` of that stream (with a
batch plan whose size changes between phases, the records right after batch `s - 1`); process
`p` of `P` reads the contiguous slice `[p*B/P, (p+1)*B/P)` of it, so the global batch is the
same whatever the number of processes. The iterator's state is saved with each checkpoint
(grain + orbax), so a resumed run sees exactly the batches an uninterrupted run would.

Images stay uint8 on the host (4x less to move); steps convert them on device.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8[B, H, W, C] -> float32 in [-1, 1] (on device, inside the train steps)."""
    return images.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def images_to_uint8(images: jax.Array) -> jax.Array:
    """float32 in [-1, 1] (unclipped generator output) -> uint8[B, H, W, C]."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class _ScheduledBatches(grain.MapDataset):
    """Element j = this process's slice of global batch j of the parent record stream.

    Global batches are consecutive: batch j holds records [offset_j, offset_j + B_j) of the
    parent, where B_j is piecewise constant over steps (`plan`: [(first step, B)], sorted);
    process p of P takes the contiguous [p*B_j/P, (p+1)*B_j/P) part of it.
    """

    def __init__(
        self, parent: grain.MapDataset, plan: Sequence[tuple[int, int]], index: int, count: int
    ):
        super().__init__(parent)
        self._starts = [s for s, _ in plan]
        self._sizes = [b for _, b in plan]
        if self._starts[0] != 0 or self._starts != sorted(self._starts):
            raise ValueError(f"batch plan must start at step 0 and be sorted, got {list(plan)}")
        bad = [b for b in self._sizes if b <= 0 or b % count]
        if bad:
            raise ValueError(f"global batch(es) {bad} not divisible by {count} processes")
        # Records before each segment of the plan.
        self._offsets = [0]
        for (s0, b0), (s1, _) in itertools.pairwise(plan):
            self._offsets.append(self._offsets[-1] + (s1 - s0) * b0)
        self._index, self._count = index, count

    def __len__(self) -> int:
        return len(self._parents[0]) // max(self._sizes)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        seg = bisect.bisect_right(self._starts, j) - 1
        global_batch = self._sizes[seg]
        b = global_batch // self._count
        first = self._offsets[seg] + (j - self._starts[seg]) * global_batch + self._index * b
        records = [self._parents[0][first + i] for i in range(b)]
        return {k: np.stack([r[k] for r in records]) for k in records[0]}


class _Take:
    """Maps a kept position to the record at that index of the source."""

    def __init__(self, source: Any, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        r = self.source[int(self.indices[int(i)])]
        return {"image": r["image"], "labels": r["labels"]}


def _hflip(record: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    if rng.random() < 0.5:
        record = dict(record, image=record["image"][:, ::-1])
    return record


def train_dataset(
    source: Any,
    indices: Sequence[int],
    *,
    global_batch: int | Sequence[tuple[int, int]],
    seed: int,
    hflip: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Infinite training batches for this process: {"image": uint8[b, H, W, C],
    "labels": float32[b, K]} with b = global batch / process_count.

    global_batch: one size for every step, or a plan [(first step, size), ...] for
    schedules whose batch changes (prog-GAN's phases); batch j is always the records
    following batch j - 1 in the shuffled stream.
    """
    plan = [(0, global_batch)] if isinstance(global_batch, int) else list(global_batch)
    ds = grain.MapDataset.source(_Take(source, np.asarray(indices))).shuffle(seed=seed).repeat()
    if hflip:
        ds = ds.random_map(_hflip, seed=seed + 1)
    return _ScheduledBatches(ds, plan, process_index, process_count)


def train_iterator(ds: grain.MapDataset, *, threads: int = 2) -> grain.DatasetIterator:
    """A checkpointable iterator that prefetches batches in background threads."""
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(options))


def eval_batches(
    source: Any, indices: Sequence[int], *, batch_size: int, rows: slice = slice(None)
) -> Iterator[dict[str, np.ndarray]]:
    """Every kept record once, in order, in fixed-size batches.

    The last batch is padded by repeating its final record; `mask` (bool[B]) marks the real
    ones, so every batch has one shape and the step compiles once. `rows`: the rows of each
    batch this process reads (its share on several hosts: `parallel.process_rows`); `mask`
    is always the whole batch's.
    """
    indices = np.asarray(indices, np.int64)
    ds = grain.MapDataset.source(_Take(source, indices))
    for start in range(0, len(indices), batch_size):
        idx = list(range(start, min(start + batch_size, len(indices))))
        n = len(idx)
        idx += [idx[-1]] * (batch_size - n)
        records = [ds[i] for i in idx[rows]]
        yield {
            "image": np.stack([r["image"] for r in records]),
            "labels": np.stack([r["labels"] for r in records]),
            "mask": np.arange(batch_size) < n,
        }
