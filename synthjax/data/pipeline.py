"""grain input pipeline: source -> shuffle -> per-process slice -> augment -> batch.

Training batches come from an infinite, seeded, reshuffled-every-epoch stream of the kept
record indices. Global batch `s` is always records `s*B .. s*B+B-1` of that stream; process
`p` of `P` reads the contiguous slice `[p*B/P, (p+1)*B/P)` of it, so the global batch is the
same whatever the number of processes. The iterator's state is saved with each checkpoint
(grain + orbax), so a resumed run sees exactly the batches an uninterrupted run would.

Images stay uint8 on the host (4x less to move); steps convert them on device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np


class _ProcessSlice(grain.MapDataset):
    """Element i of process p = element (i // b) * B + p * b + i % b of the parent."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
        super().__init__(parent)
        self._b = global_batch // count
        self._offset = index * self._b
        self._global_batch = global_batch

    def __len__(self) -> int:
        return len(self._parents[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        j = (i // self._b) * self._global_batch + self._offset + i % self._b
        return self._parents[0][j]


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
    global_batch: int,
    seed: int,
    hflip: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Infinite training batches for this process: {"image": uint8[b, H, W, C],
    "labels": float32[b, K]} with b = global_batch / process_count."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} not divisible by {process_count} processes")
    ds = grain.MapDataset.source(_Take(source, np.asarray(indices))).shuffle(seed=seed).repeat()
    ds = _ProcessSlice(ds, global_batch, process_index, process_count)
    if hflip:
        ds = ds.random_map(_hflip, seed=seed + 1)
    return ds.batch(global_batch // process_count, drop_remainder=True)


def train_iterator(ds: grain.MapDataset, *, threads: int = 2) -> grain.DatasetIterator:
    """A checkpointable iterator that prefetches batches in background threads."""
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(options))


def eval_batches(
    source: Any, indices: Sequence[int], *, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Every kept record once, in order, in fixed-size batches.

    The last batch is padded by repeating its final record; `mask` (bool[B]) marks the real
    ones, so every batch has one shape and the step compiles once.
    """
    indices = np.asarray(indices, np.int64)
    ds = grain.MapDataset.source(_Take(source, indices))
    for start in range(0, len(indices), batch_size):
        idx = list(range(start, min(start + batch_size, len(indices))))
        n = len(idx)
        idx += [idx[-1]] * (batch_size - n)
        records = [ds[i] for i in idx]
        yield {
            "image": np.stack([r["image"] for r in records]),
            "labels": np.stack([r["labels"] for r in records]),
            "mask": np.arange(batch_size) < n,
        }
