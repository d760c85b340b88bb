"""Data parallelism: a one-axis mesh over the devices (of every process); rays are split
along it, the field's parameters are replicated."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tensorf.config import DistributedConfig

AXIS = "data"
SHARDED = P(AXIS)  # leading (ray) axis split over the devices
REPLICATED = P()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all of them, of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Put a pytree (the same in every process) on every device of the mesh once, instead
    of at every call. Through the host: devices of other processes take only host data."""
    return jax.device_put(jax.device_get(tree), NamedSharding(mesh, REPLICATED))


def replicate_per_process(tree, mesh: Mesh):
    """A pytree that differs between processes (each one's own training cameras) put on
    every device of the mesh, each process's devices holding its own values, as if it were
    replicated: only code that reads it per device (inside shard_map) may use it. Leading
    axes are padded to the longest in any process, so the global shapes agree."""
    if jax.process_count() == 1:
        return replicate(tree, mesh)
    sharding = NamedSharding(mesh, REPLICATED)

    def place(x):
        x = np.asarray(x)
        longest = int(multihost_utils.process_allgather(np.int32(len(x))).max())
        x = np.pad(x, [(0, longest - len(x))] + [(0, 0)] * (x.ndim - 1))
        arrays = [jax.device_put(x, d) for d in mesh.local_devices]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, arrays)

    return jax.tree.map(place, jax.device_get(tree))


def local_copy(tree):
    """A replicated pytree as arrays on this process's default device (the same values in
    every process), for work that each process does on its own."""
    return jax.tree.map(jnp.asarray, jax.device_get(tree))


def initialize(cfg: DistributedConfig) -> None:
    """Join the other processes (no-op without a coordinator); call before any JAX work."""
    if cfg.coordinator_address is None:
        return
    # CPU devices of different processes talk through gloo (GPUs through NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)


def is_primary() -> bool:
    """Process 0: the one that writes logs, metrics and renders."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait until every process gets here."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def shard_rows(mesh: Mesh, *local: np.ndarray) -> tuple[jax.Array, ...]:
    """This process's rows -> global arrays split over the mesh (the rows of all processes,
    in process order)."""
    sharding = NamedSharding(mesh, SHARDED)
    return tuple(jax.make_array_from_process_local_data(sharding, x) for x in local)


def split_rows(mesh: Mesh, *full: np.ndarray) -> tuple[jax.Array, ...]:
    """Arrays every process holds whole -> global arrays split over the mesh."""
    sharding = NamedSharding(mesh, SHARDED)
    return tuple(jax.make_array_from_callback(x.shape, sharding, x.__getitem__) for x in full)


def total(count: int) -> int:
    """The sum of every process's `count` (e.g. the training views, each loads a share)."""
    if jax.process_count() == 1:
        return count
    return int(multihost_utils.process_allgather(np.int32(count)).sum())


def fetch(*arrays: jax.Array) -> tuple[np.ndarray, ...]:
    """Global arrays -> numpy, whole, on every process."""
    return tuple(np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in arrays)


def from_primary(*values: int) -> tuple[int, ...]:
    """Process 0's values, on every process (e.g. to stop all at the same step)."""
    if jax.process_count() == 1:
        return tuple(int(v) for v in values)
    agreed = multihost_utils.broadcast_one_to_all(np.asarray(values, np.int32))
    return tuple(int(v) for v in agreed)


def view_ids(n_views: int) -> np.ndarray:
    """(n_views,) int32: the index in the whole split of each of this process's views
    (process i of n holds views i, i + n, i + 2n, ...: `data.load_views`'s shard)."""
    return (jax.process_index() + jax.process_count() * np.arange(n_views)).astype(np.int32)
