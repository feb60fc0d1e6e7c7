"""Devices: the mesh, shardings, and host batches -> global arrays.

Every stage runs under one `jax.sharding.Mesh` with a `data` axis: batches are split along
it (`P('data')`), parameters and optimizer states are replicated (`P()`). On several hosts
(`jax.distributed`) each process feeds its own slice of the global batch and
`jax.make_array_from_process_local_data` assembles it; the same code runs on one CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(data: int = -1) -> Mesh:
    """A 1-D mesh over `data` devices (-1 = all devices of all processes; the schema has
    checked that `data` divides them)."""
    if data == -1:
        data = jax.device_count()
    # Auto axes: XLA propagates shardings from the batch and the state (GSPMD), so model
    # code needs no sharding annotations of its own.
    return jax.make_mesh(
        (data,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:data]
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`; the rest replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def process_batch_size(global_batch: int) -> int:
    """The slice of a global batch this process feeds."""
    return global_batch // jax.process_count()


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy batch (this process's slice) -> global arrays split over `data`.

    batch: {name: array[B_local, ...]} with B_local = global batch / process count.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def process_rows(global_batch: int) -> slice:
    """The rows of a global batch this process feeds to `to_global` (and reads from disk)."""
    n = process_batch_size(global_batch)
    return slice(jax.process_index() * n, (jax.process_index() + 1) * n)


def from_full(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A global batch every process holds whole (latents, indices, labels) -> global arrays
    split over `data`; each process contributes the rows of its own devices."""
    sharding = batch_sharding(mesh)

    def put(value):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return {k: put(v) for k, v in batch.items()}


def gather(x: jax.Array) -> np.ndarray:
    """A global array -> the whole of it as numpy, on every process (a sharded array is
    collected across hosts; on one process this is `device_get`)."""
    if jax.process_count() == 1 or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicated_abstract(init_fn: Callable[[], Any], mesh: Mesh) -> Any:
    """ShapeDtypeStructs of `init_fn()`'s output, replicated on `mesh` (for restoring)."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
        jax.eval_shape(init_fn),
    )


def to_host(tree: Any) -> Any:
    """Device arrays -> numpy, whole, on every process (see `gather`)."""
    return jax.tree.map(gather, tree)
