"""Scene contraction for unbounded captures (mip-NeRF 360's, with the max norm).

All of space is mapped into the box [-2, 2]^3: the inner box [-1, 1]^3 (where placement
puts the region of interest) is left as it is, and a point outside it at max-norm
|x| > 1 goes to (2 - 1 / |x|) x / |x|, so the far background fills the shell between the
two boxes at a resolution that falls off with distance. The max norm (mip-NeRF 360 uses
the Euclidean one) makes both regions boxes, so the grid's cube is used whole.

Samples along a ray: `n_inner` at a fixed step from the near plane to where the ray leaves
the inner box (also covering the way in, for cameras outside it), then `n_outer` spaced
evenly in disparity (1 / distance) from there to `far`: about evenly in the contracted
space, where the grid lives.
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


def sample_distances(
    t_exit: jax.Array, offset: jax.Array, n_inner: int, n_outer: int, step: float,
    near: float, far: float,
) -> tuple[jax.Array, jax.Array]:
    """Distances t (rays, n_inner + n_outer) along each ray and the length dt each sample
    stands for (0 for inner samples past the inner box, which are not used).

    Args:
        t_exit: (rays,) where each ray leaves the inner box (`near` for rays that miss it).
        offset: (rays,) in [0, 1), the jitter of each ray's samples.
    """  # fmt: skip
    i = jnp.arange(n_inner, dtype=jnp.float32)
    t_inner = near + (i + offset[:, None]) * step
    dt_inner = jnp.where(t_inner < t_exit[:, None], step, 0.0)
    # Evenly in disparity s = 1 / t from 1 / t_exit to 1 / far.
    u = (jnp.arange(n_outer, dtype=jnp.float32) + offset[:, None]) / n_outer
    start = 1.0 / t_exit[:, None]
    span = start - 1.0 / far
    t_outer = 1.0 / (start - u * span)
    dt_outer = t_outer**2 * span / n_outer  # |dt/du| du
    return (jnp.concatenate([t_inner, t_outer], axis=-1),
            jnp.concatenate([dt_inner, dt_outer], axis=-1))  # fmt: skip
