"""Scene contraction for unbounded captures (mip-NeRF 360's, with the max norm).

All of space is mapped into the box [-2, 2]^3: the inner box [-1, 1]^3 (where placement
puts the region of interest) is left as it is, and a point outside it at max-norm
|x| > 1 goes to (2 - 1 / |x|) x / |x|, so the far background fills the shell between the
two boxes at a resolution that falls off with distance. The max norm (mip-NeRF 360 uses
the Euclidean one) makes both regions boxes, so the grid's cube is used whole.

Samples along a ray: `n_inner` at a fixed step from the near plane to where the ray leaves
the inner box (also covering the way in, for cameras outside it), then `n_outer` about
evenly in the contracted space, where the grid lives, from there to `far`: evenly in
1 / r, where r(t) = r0 + (t - t_exit) |d|_inf (`shell_start`) bounds the max norm along
the ray from above, and grows as it does far away. mip-NeRF 360 spaces them evenly in
disparity from the camera (1 / t), which is even in the contracted space only for a
camera at the centre: from cameras 1.5, 2.5 and 4 from it (the fox's stand 1.8 to 2.6
away), the first samples beyond the inner box came 2.5, 3.4 and 4.6 times as far apart as
the shell's depth over their number, and the background just beyond it was the coarsest
sampled part of the scene (`tests/test_contraction.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# numpy, not jax: a jax array here would start the XLA backend on import, before
# jax.distributed.initialize may run.
INNER = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32)
OUTER_AABB = (-2.0, -2.0, -2.0, 2.0, 2.0, 2.0)  # what contract() maps all of space into


def contract(xyz: jax.Array) -> jax.Array:
    """(..., 3) world points -> (..., 3) points in [-2, 2]^3 (identity inside [-1, 1]^3)."""
    norm = jnp.max(jnp.abs(xyz), axis=-1, keepdims=True)
    safe = jnp.maximum(norm, 1.0)  # also keeps the gradient of the unused branch finite
    return jnp.where(norm <= 1.0, xyz, (2.0 - 1.0 / safe) * xyz / safe)


def shell_start(origins: jax.Array, dirs: jax.Array,
                t_exit: jax.Array) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """(rays,) the max norm r0 (>= 1) where each ray's samples beyond the inner box start, at
    t_exit, and |d|_inf, the most its max norm grows per unit of distance (rays (rays, 3))."""
    r0 = jnp.maximum(jnp.max(jnp.abs(origins + t_exit[:, None] * dirs), axis=-1), 1.0)
    return r0, jnp.max(jnp.abs(dirs), axis=-1)


def sample_distances(
    t_exit: jax.Array, shell: tuple[jax.Array, jax.Array], offset: jax.Array, n_inner: int,
    n_outer: int, step: float, near: float, far: float,
) -> tuple[jax.Array, jax.Array]:
    """Distances t (rays, n_inner + n_outer) along each ray and the length dt each sample
    stands for (0 for inner samples past the inner box, which are not used).

    Args:
        t_exit: (rays,) where each ray leaves the inner box (`near` for rays that miss it).
        shell: `shell_start` of the rays at t_exit.
        offset: (rays,) in [0, 1), the jitter of each ray's samples.
    """  # fmt: skip
    i = jnp.arange(n_inner, dtype=jnp.float32)
    t_inner = near + (i + offset[:, None]) * step
    dt_inner = jnp.where(t_inner < t_exit[:, None], step, 0.0)
    # Evenly in 1 / r from 1 / r0 to 1 / r(far), r = r0 + (t - t_exit) slope.
    r0, slope = (x[:, None] for x in shell)
    u = (jnp.arange(n_outer, dtype=jnp.float32) + offset[:, None]) / n_outer
    start = 1.0 / r0
    span = start - 1.0 / (r0 + (far - t_exit[:, None]) * slope)
    r = 1.0 / (start - u * span)
    t_outer = t_exit[:, None] + (r - r0) / slope
    dt_outer = r**2 * span / (n_outer * slope)  # |dt/du| du
    return (jnp.concatenate([t_inner, t_outer], axis=-1),
            jnp.concatenate([dt_inner, dt_outer], axis=-1))  # fmt: skip
