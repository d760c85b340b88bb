"""Pinhole cameras in the Blender / OpenGL convention (camera looks down -z, +y up)."""

import math

import jax.numpy as jnp


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels from the horizontal field of view."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def pixel_rays(
    c2w: jnp.ndarray, col: jnp.ndarray, row: jnp.ndarray, focal: float, height: int, width: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Rays through pixel centres.

    Args:
        c2w: (..., 4, 4) or (..., 3, 4) camera-to-world, broadcastable against `col`.
        col, row: (...,) pixel column (x) and row (y) indices.
    Returns:
        origins (..., 3) and unit directions (..., 3) in world space.
    """
    dirs_cam = jnp.stack(
        [
            (col + 0.5 - 0.5 * width) / focal,
            -(row + 0.5 - 0.5 * height) / focal,
            -jnp.ones_like(col, dtype=jnp.float32),
        ],
        axis=-1,
    )
    dirs = jnp.einsum("...ij,...j->...i", c2w[..., :3, :3], dirs_cam)
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = jnp.broadcast_to(c2w[..., :3, 3], dirs.shape)
    return origins, dirs
