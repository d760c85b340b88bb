"""Vector-matrix (VM) decomposition of a 3D feature grid.

A feature at a point is, per component c, the sum over the three axis pairs of
`plane_pair[c](u, v) * line_axis[c](w)`, with bilinear/linear interpolation on grids whose
corners sit on the aabb corners (`align_corners=True`, as in the official code). Each pair
may have its own number of components (the official LLFF config gives the XY-Z pair,
which faces the cameras, four times as many).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Axis pairs of the planes and the complementary axis of each line (XY-Z, XZ-Y, YZ-X).
PLANE_AXES = ((0, 1), (0, 2), (1, 2))
LINE_AXES = (2, 1, 0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VMGrid:
    planes: tuple[jax.Array, jax.Array, jax.Array]  # (R_a, R_b, C_p) for each pair p = (a, b)
    lines: tuple[jax.Array, jax.Array, jax.Array]  # (R_c, C_p) for each complementary axis c

    @property
    def resolution(self) -> tuple[int, int, int]:
        """(Rx, Ry, Rz) grid points per axis."""
        return (self.planes[0].shape[0], self.planes[0].shape[1], self.planes[1].shape[1])


def init_vm(
    key: jax.Array,
    resolution: tuple[int, int, int],
    components: tuple[int, int, int],
    scale: float,
) -> VMGrid:
    """Grid values drawn from normal(0, scale), as the official code does; `components`
    per pair, in PLANE_AXES order."""
    keys = jax.random.split(key, 6)
    planes = tuple(
        scale * jax.random.normal(k, (resolution[a], resolution[b], n))
        for k, (a, b), n in zip(keys[:3], PLANE_AXES, components, strict=True)
    )
    lines = tuple(
        scale * jax.random.normal(k, (resolution[c], n))
        for k, c, n in zip(keys[3:], LINE_AXES, components, strict=True)
    )
    return VMGrid(planes, lines)


def _continuous_index(x: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Map normalised coordinates in [-1, 1] to (lower index, fraction) on `size` points."""
    u = jnp.clip((x + 1.0) * 0.5 * (size - 1), 0.0, size - 1)
    i0 = jnp.clip(jnp.floor(u), 0, max(size - 2, 0)).astype(jnp.int32)
    return i0, u - i0


@jax.custom_vjp
def weighted_rows(table: jax.Array, idx: jax.Array, w: jax.Array) -> jax.Array:
    """Interpolation from corner rows: sum over k of table[idx[:, k]] * w[:, k], for a
    (rows, C) table and (n, K) indices and weights -> (n, C).

    Forward as K gathers of whole rows, which XLA's CPU backend runs several times faster
    than one gather of (n, K) rows (9x for the planes' 4 corners, 2x for a volume's 8);
    backward as one scatter of the (n, K, C) products, which is the faster way there.
    Under shard_map, a replicated table must be cast to varying first (`train_step`):
    its gradient here is per device."""
    return sum(table[idx[:, k]] * w[:, k, None] for k in range(idx.shape[1]))


def _weighted_rows_fwd(table, idx, w):
    return weighted_rows(table, idx, w), (table, idx, w)


def _weighted_rows_bwd(residuals, g):
    table, idx, w = residuals
    d_table = jnp.zeros_like(table).at[idx].add((w[..., None] * g[:, None]).astype(table.dtype))
    d_w = jnp.stack([(table[idx[:, k]] * g).sum(-1) for k in range(idx.shape[1])], -1)
    return d_table, None, d_w.astype(w.dtype)


weighted_rows.defvjp(_weighted_rows_fwd, _weighted_rows_bwd)


def interp_plane(plane: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """Bilinear lookup of a (A, B, C) plane at normalised (n,) coordinates -> (n, C)."""
    a, b, c = plane.shape
    i0, fu = _continuous_index(u, a)
    j0, fv = _continuous_index(v, b)
    i1 = jnp.minimum(i0 + 1, a - 1)
    j1 = jnp.minimum(j0 + 1, b - 1)
    idx = jnp.stack([i0 * b + j0, i0 * b + j1, i1 * b + j0, i1 * b + j1], -1)
    w = jnp.stack([(1 - fu) * (1 - fv), (1 - fu) * fv, fu * (1 - fv), fu * fv], -1)
    return weighted_rows(plane.reshape(a * b, c), idx, w)


def interp_line(line: jax.Array, w: jax.Array) -> jax.Array:
    """Linear lookup of a (R, C) line at normalised (n,) coordinates -> (n, C)."""
    i0, fw = _continuous_index(w, line.shape[0])
    i1 = jnp.minimum(i0 + 1, line.shape[0] - 1)
    return weighted_rows(line, jnp.stack([i0, i1], -1), jnp.stack([1 - fw, fw], -1))


def vm_features(grid: VMGrid, xyz: jax.Array) -> jax.Array:
    """Component features of all pairs at normalised points (n, 3) -> (n, C_0 + C_1 + C_2)."""
    feats = []
    for plane, line, (a, b), c in zip(grid.planes, grid.lines, PLANE_AXES, LINE_AXES, strict=True):
        feats.append(interp_plane(plane, xyz[:, a], xyz[:, b]) * interp_line(line, xyz[:, c]))
    return jnp.concatenate(feats, axis=1)


def dense_volume(grid: VMGrid) -> jax.Array:
    """Sum over pairs and components of plane (x) line, as a dense (Rx, Ry, Rz) volume."""
    (xy, xz, yz), (z, y, x) = grid.planes, grid.lines
    return (
        jnp.einsum("ijc,kc->ijk", xy, z)
        + jnp.einsum("ikc,jc->ijk", xz, y)
        + jnp.einsum("jkc,ic->ijk", yz, x)
    )


def _corners(shape: tuple[int, int, int], xyz: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Flat indices and trilinear weights (n, 8) of the corners around each point."""
    _, ry, rz = shape
    (i, fi), (j, fj), (k, fk) = (_continuous_index(xyz[:, a], r) for a, r in enumerate(shape))
    base = (i * ry + j) * rz + k
    idx, w = [], []
    for di, wi in ((0, 1 - fi), (1, fi)):
        for dj, wj in ((0, 1 - fj), (1, fj)):
            for dk, wk in ((0, 1 - fk), (1, fk)):
                idx.append(base + (di * ry + dj) * rz + dk)
                w.append(wi * wj * wk)
    return jnp.stack(idx, -1), jnp.stack(w, -1)


def interp_volume(volume: jax.Array, xyz: jax.Array) -> jax.Array:
    """Trilinear lookup of a stored (Rx, Ry, Rz) volume (a baked density, an alpha mask) at
    normalised points (n, 3) -> (n,)."""
    idx, w = _corners(volume.shape, xyz)
    return weighted_rows(volume.reshape(-1, 1), idx, w)[:, 0]


def interp_built_volume(volume: jax.Array, xyz: jax.Array) -> jax.Array:
    """`interp_volume` for a volume built in the same computation (a grid's dense sum).

    One gather of all corners: with a gather per corner, XLA's CPU backend fuses the
    volume's construction into each of the eight and a training step takes twice as long
    (an optimization barrier does not stop it: the CPU pipeline removes barriers)."""
    idx, w = _corners(volume.shape, xyz)
    return (volume.reshape(-1)[idx] * w).sum(-1)


# A dense volume costs per voxel, plane and line lookups per point and component. Measured
# on CPU (fwd + bwd), the volume wins up to ~60 voxels per point with 16 components per
# pair (5x at 1.6), and up to ~30 with the LLFF [16, 4, 4]: the break-even scales with the
# components, so this is the number of voxels per point and component that it allows.
DENSE_VOXELS_PER_POINT_COMPONENT = 64 / 48


def density_feature(grid: VMGrid, xyz: jax.Array) -> jax.Array:
    """Density feature: sum over pairs and components, (n, 3) -> (n,).

    Trilinear weights factorise into bilinear (plane) times linear (line) weights, so
    interpolating the dense sum gives exactly the per-point sum of interpolated products:
    one scalar 8-corner lookup replaces six C-wide ones when points are many.
    """
    components = sum(p.shape[-1] for p in grid.planes)
    if np.prod(grid.resolution) <= DENSE_VOXELS_PER_POINT_COMPONENT * components * xyz.shape[0]:
        return interp_built_volume(dense_volume(grid), xyz)
    return vm_features(grid, xyz).sum(axis=1)


def appearance_feature(grid: VMGrid, basis: jax.Array, xyz: jax.Array) -> jax.Array:
    """Appearance features: concatenated components through the basis matrix, (n, 3) -> (n, F)."""
    return vm_features(grid, xyz) @ basis


def l1(grid: VMGrid) -> jax.Array:
    """Mean absolute value per plane and line, summed (official density_L1)."""
    return sum(jnp.abs(p).mean() for p in grid.planes) + sum(jnp.abs(x).mean() for x in grid.lines)


def total_variation(grid: VMGrid) -> jax.Array:
    """Sum over the planes of the official TVLoss: twice the mean squared difference of
    neighbouring values along each of the plane's two axes (lines are not regularised)."""
    return sum(
        2.0 * (jnp.mean(jnp.diff(p, axis=0) ** 2) + jnp.mean(jnp.diff(p, axis=1) ** 2))
        for p in grid.planes
    )


def interpolation_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) matrix of 1D linear resampling with aligned corners."""
    pos = np.linspace(0.0, old - 1, new) if new > 1 else np.zeros(1)
    i0 = np.clip(np.floor(pos).astype(int), 0, max(old - 2, 0))
    frac = pos - i0
    m = np.zeros((new, old), np.float32)
    m[np.arange(new), i0] += 1 - frac
    m[np.arange(new), np.minimum(i0 + 1, old - 1)] += frac
    return m


def resize_vm(grid: VMGrid, resolution: tuple[int, int, int]) -> VMGrid:
    """Resample every plane and line to a new per-axis resolution (aligned corners)."""
    old = grid.resolution
    mats = [jnp.asarray(interpolation_matrix(old[i], resolution[i])) for i in range(3)]
    planes = tuple(
        jnp.einsum("ia,jb,abc->ijc", mats[a], mats[b], p)
        for p, (a, b) in zip(grid.planes, PLANE_AXES, strict=True)
    )
    lines = tuple(
        jnp.einsum("ia,ac->ic", mats[c], ln) for ln, c in zip(grid.lines, LINE_AXES, strict=True)
    )
    return VMGrid(planes, lines)


def crop_vm(grid: VMGrid, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> VMGrid:
    """Keep grid points lo[i] <= index < hi[i] on each axis."""
    planes = tuple(
        p[lo[a] : hi[a], lo[b] : hi[b]] for p, (a, b) in zip(grid.planes, PLANE_AXES, strict=True)
    )
    lines = tuple(ln[lo[c] : hi[c]] for ln, c in zip(grid.lines, LINE_AXES, strict=True))
    return VMGrid(planes, lines)


def resolution_for_voxels(n_voxels: int, aabb: np.ndarray) -> tuple[int, int, int]:
    """Per-axis resolution with ~n_voxels cubic voxels filling the aabb (official N_to_reso)."""
    size = aabb[1] - aabb[0]
    voxel = (np.prod(size) / n_voxels) ** (1 / 3)
    # Truncate like the official code, but not below an exact count lost to rounding.
    return tuple(int(r) for r in np.floor(size / voxel + 1e-6))
