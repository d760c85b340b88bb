"""Occupancy ("alpha mask") grid: which parts of the aabb can hold anything visible."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AlphaMask:
    """Occupancy of the cells between the points of a dense grid spanning `aabb`.

    The official code trilinearly samples a binary volume and keeps points where the
    result is > 0, i.e. where any of the 8 surrounding grid points is occupied. We store
    that per cell, so a lookup is a single gather.
    """

    cells: jax.Array  # (X - 1, Y - 1, Z - 1) bool for a mask computed on X*Y*Z points
    aabb: jax.Array  # (2, 3)


@dataclasses.dataclass(frozen=True)
class Measured:
    """An alpha mask measured ahead of its update at `step` (`ScheduleConfig.event_lead`):
    the update is then known, shapes and all, before the state reaches it."""

    step: int
    mask: AlphaMask
    bounds: np.ndarray  # (2, 3) its occupied grid points' bounds (`compute_alpha_mask`)


def everything(aabb: jax.Array) -> AlphaMask:
    """The mask before the first update: every point inside the aabb counts as occupied."""
    return AlphaMask(jnp.ones((1, 1, 1), bool), jnp.asarray(aabb, jnp.float32))


def is_occupied(mask: AlphaMask, xyz: jax.Array) -> jax.Array:
    """(..., 3) world points -> (...,) bool; False outside the mask's aabb."""
    res = jnp.array(mask.cells.shape)
    u = (xyz - mask.aabb[0]) / (mask.aabb[1] - mask.aabb[0]) * res
    inside = jnp.all((u >= 0) & (u <= res), axis=-1)
    idx = jnp.clip(u.astype(jnp.int32), 0, res - 1)
    return inside & mask.cells[idx[..., 0], idx[..., 1], idx[..., 2]]


def occupied_box(mask: AlphaMask) -> np.ndarray | None:
    """(2, 3) box around the occupied cells, with a margin far above float32 rounding; None
    while every cell is occupied (or none is), when it is the mask's aabb."""
    cells = np.asarray(mask.cells)
    if cells.all() or not cells.any():
        return None
    aabb = np.asarray(mask.aabb, np.float64)
    cell = (aabb[1] - aabb[0]) / np.array(cells.shape)
    occupied = np.argwhere(cells)
    lo = aabb[0] + cell * (occupied.min(0) - 1e-3)
    hi = aabb[0] + cell * (occupied.max(0) + 1 + 1e-3)
    return np.stack([lo, hi])


def dense_points(aabb: np.ndarray, resolution: tuple[int, int, int]) -> np.ndarray:
    """(X, Y, Z, 3) grid points spanning the aabb corner to corner."""
    axes = [np.linspace(aabb[0, i], aabb[1, i], resolution[i]) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def compute_alpha_mask(
    alpha_fn: Callable[[jax.Array], jax.Array],
    aabb: np.ndarray,
    resolution: tuple[int, int, int],
    threshold: float,
) -> tuple[AlphaMask, np.ndarray]:
    """Evaluate alpha on a dense grid, dilate (3x3x3 max pool) and threshold.

    Args:
        alpha_fn: (n, 3) world points -> (n,) alpha; called one x-slab at a time.
    Returns:
        the mask and the (2, 3) bounds of its occupied grid points (the aabb itself
        when nothing is occupied, so a collapsed density never produces an empty box).
    """
    pts = dense_points(aabb, resolution)
    alpha = np.stack([np.asarray(alpha_fn(jnp.asarray(p.reshape(-1, 3)))) for p in pts])
    alpha = alpha.reshape(resolution)
    occupied = np.asarray(_max_pool3(jnp.asarray(alpha))) >= threshold
    if occupied.any():
        idx = np.argwhere(occupied)
        bounds = np.stack([pts[tuple(idx.min(0))], pts[tuple(idx.max(0))]])
    else:
        bounds = np.asarray(aabb, np.float32)
    cells = np.zeros(np.maximum(np.array(resolution) - 1, 1), bool)
    r = occupied
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                cells |= r[
                    dx : dx + cells.shape[0], dy : dy + cells.shape[1], dz : dz + cells.shape[2]
                ]
    return AlphaMask(jnp.asarray(cells), jnp.asarray(aabb, jnp.float32)), bounds


@jax.jit
def _max_pool3(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (3, 3, 3), (1, 1, 1), "SAME")
