"""CANDECOMP/PARAFAC (CP) decomposition of a 3D feature grid (official `TensorCP`).

A feature at a point is, per component c, the product of three linearly interpolated line
values, `line_x[c](x) * line_y[c](y) * line_z[c](z)`: one rank-one tensor per component,
so the grid costs (Rx + Ry + Rz) values per component, against VM's planes. Lines have
their ends on the aabb corners (`align_corners=True`, as in the official code).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tensorf.field.tensor_vm import (
    DENSE_VOXELS_PER_POINT_COMPONENT,
    interp_built_volume,
    interp_line,
    interpolation_matrix,
)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CPGrid:
    lines: tuple[jax.Array, jax.Array, jax.Array]  # (R_a, C) for each axis a = x, y, z

    @property
    def resolution(self) -> tuple[int, int, int]:
        """(Rx, Ry, Rz) grid points per axis."""
        return tuple(line.shape[0] for line in self.lines)


def init_cp(key: jax.Array, resolution: tuple[int, int, int], components: int, scale: float):
    """Line values drawn from normal(0, scale), as the official code (which uses 0.2)."""
    keys = jax.random.split(key, 3)
    return CPGrid(tuple(scale * jax.random.normal(k, (r, components))
                        for k, r in zip(keys, resolution, strict=True)))  # fmt: skip


def cp_features(grid: CPGrid, xyz: jax.Array) -> jax.Array:
    """Per-component features at normalised points (n, 3) -> (n, C)."""
    x, y, z = (interp_line(line, xyz[:, a]) for a, line in enumerate(grid.lines))
    return x * y * z


def dense_volume(grid: CPGrid) -> jax.Array:
    """Sum over components of the three lines' outer product, as a (Rx, Ry, Rz) volume."""
    return jnp.einsum("ic,jc,kc->ijk", *grid.lines)


def density_feature(grid: CPGrid, xyz: jax.Array) -> jax.Array:
    """Sum over components, (n, 3) -> (n,); through the dense volume when points are many
    (exact, as for VM: the trilinear weights factorise over the three lines)."""
    components = grid.lines[0].shape[-1]
    if np.prod(grid.resolution) <= DENSE_VOXELS_PER_POINT_COMPONENT * components * xyz.shape[0]:
        return interp_built_volume(dense_volume(grid), xyz)
    return cp_features(grid, xyz).sum(axis=1)


def appearance_feature(grid: CPGrid, basis: jax.Array, xyz: jax.Array) -> jax.Array:
    """Components through the basis matrix, (n, 3) -> (n, F)."""
    return cp_features(grid, xyz) @ basis


def resize_cp(grid: CPGrid, resolution: tuple[int, int, int]) -> CPGrid:
    """Resample every line to a new per-axis resolution (aligned corners)."""
    return CPGrid(tuple(
        jnp.asarray(interpolation_matrix(line.shape[0], r)) @ line
        for line, r in zip(grid.lines, resolution, strict=True)
    ))  # fmt: skip


def crop_cp(grid: CPGrid, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> CPGrid:
    """Keep grid points lo[a] <= index < hi[a] on each axis."""
    return CPGrid(tuple(line[a:b] for line, a, b in zip(grid.lines, lo, hi, strict=True)))


def l1(grid: CPGrid) -> jax.Array:
    """Mean absolute line value, summed over the lines (official density_L1)."""
    return sum(jnp.abs(line).mean() for line in grid.lines)


def total_variation(grid: CPGrid) -> jax.Array:
    """The official TVLoss of each line (twice its mean squared difference of neighbours),
    summed."""
    return sum(2.0 * jnp.mean(jnp.diff(line, axis=0) ** 2) for line in grid.lines)
