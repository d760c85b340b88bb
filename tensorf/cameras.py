"""Pinhole cameras in the Blender / OpenGL convention (camera looks down -z, +y up)."""

import math

import jax.numpy as jnp
import numpy as np


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


def look_at(position: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world at `position` looking at `center`, with world +z up."""
    back = np.asarray(position, np.float64) - center
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def orbit_pose(
    azimuth_deg: float, elevation_deg: float, radius: float, center: np.ndarray
) -> np.ndarray:
    """(4, 4) camera `radius` from `center`, at the given azimuth (about +z, from +x) and
    elevation above the horizontal plane, looking at `center`."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    offset = radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return look_at(np.asarray(center) + offset, np.asarray(center, np.float64))


def orbit_poses(n: int, radius: float, elevation_deg: float, center: np.ndarray) -> np.ndarray:
    """(n, 4, 4) cameras evenly spaced around a full circle (see `orbit_pose`)."""
    return np.stack(
        [orbit_pose(az, elevation_deg, radius, center) for az in np.arange(n) * 360.0 / n]
    )
