"""Data parallelism: a one-axis mesh over the devices; rays are split along it, the field's
parameters are replicated."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
SHARDED = P(AXIS)  # leading (ray) axis split over the devices
REPLICATED = P()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all of them, of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Put a pytree on every device of the mesh once, instead of at every call."""
    return jax.device_put(tree, NamedSharding(mesh, REPLICATED))
