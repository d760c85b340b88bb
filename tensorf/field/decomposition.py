"""The grid decompositions behind one interface: VM (`tensor_vm`) and CP (`tensor_cp`).

The field, training events, checkpoints and renderers call the functions here; each picks
the decomposition from the grid's type, so nothing else needs to know which one a run uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from tensorf.field import tensor_cp, tensor_vm
from tensorf.field.tensor_cp import CPGrid
from tensorf.field.tensor_vm import VMGrid

Grid = VMGrid | CPGrid


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """What a decomposition provides. Its grids are pytrees with a `resolution` property
    and `lines`, their vector factors (R, C), which the orthogonality term reads."""

    init: Callable  # (key, resolution, components, scale) -> grid
    density_feature: Callable  # (grid, xyz (n, 3) in [-1, 1]) -> (n,)
    appearance_feature: Callable  # (grid, basis, xyz) -> (n, F)
    resize: Callable  # (grid, resolution) -> grid, aligned corners
    crop: Callable  # (grid, lo, hi) -> grid keeping grid points lo <= i < hi per axis
    l1: Callable  # grid -> mean absolute value, summed over factors (official density_L1)
    total_variation: Callable  # grid -> the official TVLoss, summed over its factors
    tv_scale: float  # the official TV_loss_density / TV_loss_app weight of each factor


VM = Decomposition(
    init=tensor_vm.init_vm, density_feature=tensor_vm.density_feature,
    appearance_feature=tensor_vm.appearance_feature, resize=tensor_vm.resize_vm,
    crop=tensor_vm.crop_vm, l1=tensor_vm.l1, total_variation=tensor_vm.total_variation,
    tv_scale=1e-2,
)  # fmt: skip
CP = Decomposition(
    init=tensor_cp.init_cp, density_feature=tensor_cp.density_feature,
    appearance_feature=tensor_cp.appearance_feature, resize=tensor_cp.resize_cp,
    crop=tensor_cp.crop_cp, l1=tensor_cp.l1, total_variation=tensor_cp.total_variation,
    tv_scale=1e-3,
)  # fmt: skip
BY_KIND: dict[str, Decomposition] = {"vm": VM, "cp": CP}


def of(grid: Grid) -> Decomposition:
    return CP if isinstance(grid, CPGrid) else VM


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Baked:
    """A density grid summed into its dense volume once, to render a field that does not
    change: each lookup is then one 8-corner gather, with no volume to build per call (the
    dense path of `density_feature` builds it in every call, as training must)."""

    volume: jax.Array  # (Rx, Ry, Rz)


@jax.jit
def bake(grid: Grid) -> Baked:
    dense = tensor_cp.dense_volume if isinstance(grid, CPGrid) else tensor_vm.dense_volume
    return Baked(dense(grid))


def density_feature(grid: Grid | Baked, xyz: jax.Array) -> jax.Array:
    if isinstance(grid, Baked):
        return tensor_vm.interp_volume(grid.volume, xyz)
    return of(grid).density_feature(grid, xyz)


def appearance_feature(grid: Grid, basis: jax.Array, xyz: jax.Array) -> jax.Array:
    return of(grid).appearance_feature(grid, basis, xyz)


def resize(grid: Grid, resolution: tuple[int, int, int]) -> Grid:
    return of(grid).resize(grid, resolution)


def crop(grid: Grid, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> Grid:
    return of(grid).crop(grid, lo, hi)


def l1(grid: Grid) -> jax.Array:
    return of(grid).l1(grid)


def tv(grid: Grid) -> jax.Array:
    """Total variation as the official code weighs it before its TV_weight."""
    return of(grid).tv_scale * of(grid).total_variation(grid)


def orthogonality(grid: Grid) -> jax.Array:
    """Official vector_comp_diffs: per vector factor (R, C), the mean absolute off-diagonal
    entry of its components' Gram matrix, summed; 0 for a factor with one component."""
    total = jnp.float32(0.0)
    for line in grid.lines:
        c = line.shape[-1]
        if c > 1:
            gram = line.T @ line
            off_diagonal = gram - jnp.diag(jnp.diag(gram))
            total = total + jnp.abs(off_diagonal).sum() / (c * (c - 1))
    return total
