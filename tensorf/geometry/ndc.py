"""Normalised device coordinates for forward-facing scenes (official `ndc_rays_blender`).

The world is seen by cameras near the origin looking down -z. NDC maps the frustum
between the plane z = -near and infinity onto the box [-1, 1]^3 (x and y scaled by the
camera's field of view, z = 1 + 2 near / z_world), so that a forward-facing scene's
unbounded depth fits a bounded grid with resolution spent where the images see detail.
Rays stay straight lines under this projective map, parametrised by t in [0, 1] from the
near plane (t = 0) to infinity (t = 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tensorf.geometry.cameras import Intrinsics

NEAR = 1.0  # the near plane, as the official code (poses are scaled so content is beyond)


def projection(intrinsics: Intrinsics) -> tuple[float, float]:
    """(2 fx / W, 2 fy / H): the NDC scale of x / z and y / z. Independent of the image
    size, so every split and resolution of a scene maps the same way."""
    return (2.0 * intrinsics.fx / intrinsics.width, 2.0 * intrinsics.fy / intrinsics.height)


def ndc_rays(
    origins: jax.Array, dirs: jax.Array, scale: tuple[float, float], near: float = NEAR
) -> tuple[jax.Array, jax.Array]:
    """World rays (rays, 3) -> NDC rays: the point at t is origin + t * direction, with
    t = 0 on the near plane and t = 1 at infinity."""
    # Move the origins onto the near plane first.
    t = -(near + origins[..., 2]) / dirs[..., 2]
    o = origins + t[..., None] * dirs
    ox, oy, oz = o[..., 0] / o[..., 2], o[..., 1] / o[..., 2], o[..., 2]
    ndc_o = jnp.stack([-scale[0] * ox, -scale[1] * oy, 1.0 + 2.0 * near / oz], -1)
    ndc_d = jnp.stack(
        [
            -scale[0] * (dirs[..., 0] / dirs[..., 2] - ox),
            -scale[1] * (dirs[..., 1] / dirs[..., 2] - oy),
            -2.0 * near / oz,
        ],
        -1,
    )
    return ndc_o, ndc_d


def world_distance(
    t: jax.Array, origins: jax.Array, dirs: jax.Array, near: float = NEAR
) -> jax.Array:
    """NDC ray parameters t (rays, samples) -> distance along the world rays (rays, 3)
    (unit `dirs`) from their origins: the metric depth of the same points."""
    # NDC z along the ray is 2t - 1, so world z = -near / (1 - t).
    z = -near / jnp.maximum(1.0 - t, 1e-6)
    return (z - origins[..., 2:3]) / dirs[..., 2:3]
