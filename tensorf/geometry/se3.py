"""Small rigid corrections of camera poses: a 6-vector (axis-angle rotation, translation)
to a (4, 4) rigid transform, applied in the camera's own frame (pose refinement)."""

from __future__ import annotations

import jax.numpy as jnp

# Below this squared angle (radians^2) sin and cos are replaced by their Taylor series,
# whose error there (~theta^4 / 120) is below float32 rounding, and whose gradient at
# theta = 0 is finite where sin(theta) / theta's is 0 / 0.
_SMALL_ANGLE_SQ = 1e-4


def so3_exp(rotvec: jnp.ndarray) -> jnp.ndarray:
    """Rotation vectors (..., 3) (axis times angle, radians) -> rotations (..., 3, 3), by
    Rodrigues' formula R = I + A K + B K^2, K the cross-product matrix of the vector."""
    x, y, z = rotvec[..., 0], rotvec[..., 1], rotvec[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1),
                   jnp.stack([-y, x, zero], -1)], -2)  # fmt: skip
    theta_sq = jnp.sum(rotvec**2, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Only the branch that is used sees the true angle: the other's gradient stays finite.
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(theta)) / theta**2)
    eye = jnp.broadcast_to(jnp.eye(3, dtype=rotvec.dtype), k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rigid(correction: jnp.ndarray) -> jnp.ndarray:
    """Corrections (..., 6): rotation vector, then translation -> rigid transforms
    (..., 4, 4). The translation is used as given, not through SE(3)'s exponential (V t):
    the two agree to first order, and this way the rotation and the translation are
    learned independently (a rotation does not move the camera's centre)."""
    rotation = so3_exp(correction[..., :3])
    top = jnp.concatenate([rotation, correction[..., 3:, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], top.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def corrected(c2w: jnp.ndarray, correction: jnp.ndarray) -> jnp.ndarray:
    """Camera-to-world (..., 4, 4) corrected in the camera's frame: c2w @ rigid(correction).
    The rotation turns the camera about its own centre and the translation moves it along
    its own axes (right, up, back), so the 6 numbers mean the same for every camera
    whatever its distance from the world's origin (a correction in the world frame couples
    a rotation with a translation proportional to that distance)."""
    return c2w @ rigid(correction)
