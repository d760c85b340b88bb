"""Cameras in the Blender / OpenGL convention (camera looks down -z, +y up): pinhole
intrinsics, optionally with lens distortion."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np

from tensorf.geometry.distortion import Distortion, camera_frame_directions


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """A camera's intrinsics in pixels, for images of `width` x `height`.

    (cx, cy) is the principal point measured from the image's top-left corner, so the
    centre of pixel (col, row) is at (col + 0.5, row + 0.5). `distortion`: the lens model,
    or None for an ideal pinhole. Frozen and hashable: jitted code specialises on it.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: Distortion | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Intrinsics:
        """Inverse of `to_dict`."""
        lens = values.get("distortion")
        lens = None if lens is None else Distortion(lens["model"], tuple(lens["coefficients"]))
        return cls(**{**values, "distortion": lens})

    @classmethod
    def from_fov(cls, camera_angle_x: float, width: int, height: int) -> Intrinsics:
        """Square pixels, principal point at the centre, horizontal field of view."""
        focal = focal_from_fov(camera_angle_x, width)
        return cls(focal, focal, 0.5 * width, 0.5 * height, int(width), int(height))

    def resized(self, width: int, height: int) -> Intrinsics:
        """The same camera for images resampled to `width` x `height`."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width),
                          int(height), self.distortion)  # fmt: skip

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels from the horizontal field of view."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def pixel_rays(
    c2w: jnp.ndarray, col: jnp.ndarray, row: jnp.ndarray, intrinsics: Intrinsics
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Rays through pixel centres.

    Args:
        c2w: (..., 4, 4) or (..., 3, 4) camera-to-world, broadcastable against `col`.
        col, row: (...,) pixel column (x) and row (y) indices; with lens distortion,
            concrete arrays (the directions are looked up in `camera_directions`).
    Returns:
        origins (..., 3) and unit directions (..., 3) in world space.
    """
    k = intrinsics
    if k.distortion is not None:
        return camera_rays(c2w, jnp.asarray(camera_directions(k))[row, col])
    dirs_cam = jnp.stack(
        [
            (col + 0.5 - k.cx) / k.fx,
            -(row + 0.5 - k.cy) / k.fy,
            -jnp.ones_like(col, dtype=jnp.float32),
        ],
        axis=-1,
    )
    return camera_rays(c2w, dirs_cam)


@functools.lru_cache(maxsize=8)
def camera_directions(intrinsics: Intrinsics) -> np.ndarray:
    """(H, W, 3) float32 camera-frame (OpenGL) directions through every pixel centre, with
    the lens distortion undone: computed once per camera."""
    k = intrinsics
    cols, rows = np.meshgrid(np.arange(k.width) + 0.5, np.arange(k.height) + 0.5)
    xy = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy], axis=-1)
    dirs = camera_frame_directions(xy, k.distortion)
    return (dirs * np.array([1.0, -1.0, -1.0])).astype(np.float32)  # OpenCV -> OpenGL


def camera_rays(c2w: jnp.ndarray, dirs_cam: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Camera-frame directions (..., 3) -> world origins and unit directions (..., 3)."""
    dirs = jnp.einsum("...ij,...j->...i", c2w[..., :3, :3], dirs_cam)
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = jnp.broadcast_to(c2w[..., :3, 3], dirs.shape)
    return origins, dirs


def look_at(position: np.ndarray, center: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) camera-to-world at `position` looking at `center`, image up along `up`."""
    back = np.asarray(position, np.float64) - center
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
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


def orbit_poses(
    n: int, radius: float, elevation_deg: float, center: np.ndarray,
    arc: tuple[float, float] | None = None,
) -> np.ndarray:  # fmt: skip
    """(n, 4, 4) cameras evenly spaced around a full circle (see `orbit_pose`), or, given
    an `arc` (first, last azimuth in degrees), sweeping along it and back, easing at its
    ends."""
    if arc is None:
        azimuths = np.arange(n) * 360.0 / n
    else:
        there_and_back = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
        azimuths = arc[0] + (arc[1] - arc[0]) * there_and_back
    return np.stack([orbit_pose(az, elevation_deg, radius, center) for az in azimuths])


def seen_arc(positions: np.ndarray, max_gap_deg: float = 60.0) -> tuple[float, float] | None:
    """The azimuths (degrees, about +z) that cameras at positions (n, 3) span, when they
    leave a gap wider than `max_gap_deg` (a capture that did not go all the way round);
    None for a full circle."""
    azimuths = np.sort(np.degrees(np.arctan2(positions[:, 1], positions[:, 0])))
    gaps = np.diff(np.concatenate([azimuths, azimuths[:1] + 360.0]))
    widest = int(np.argmax(gaps))
    if gaps[widest] <= max_gap_deg:
        return None
    start = azimuths[(widest + 1) % len(azimuths)]
    end = azimuths[widest]
    return float(start), float(end + 360.0 if end < start else end)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) pose at the cameras' mean position, looking along their mean viewing
    direction, with their mean up vector made orthogonal to it.

    A proper rotation (right = up x backwards). The official LLFF loader takes
    backwards x up instead, a mirror image: its recentred poses have determinant -1.
    """
    c2w = np.asarray(c2w, np.float64)
    back = _unit(c2w[:, :3, 2].mean(0))
    right = _unit(np.cross(c2w[:, :3, 1].mean(0), back))
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, np.cross(back, right), back
    pose[:3, 3] = c2w[:, :3, 3].mean(0)
    return pose


def spiral_focus(c2w: np.ndarray, depth_bounds: tuple[float, float]) -> np.ndarray:
    """(3,) the point the official LLFF spiral looks at: straight ahead of the average pose
    at a harmonic blend of the nearest and (5x) the farthest content's depth."""
    centre = average_pose(c2w)
    close, far = depth_bounds[0] * 0.9, depth_bounds[1] * 5.0
    focus = 1.0 / (0.25 / close + 0.75 / far)
    return centre[:3, :3] @ np.array([0.0, 0.0, -focus]) + centre[:3, 3]


def spiral_poses(
    c2w: np.ndarray, depth_bounds: tuple[float, float], n: int, rotations: int = 2
) -> np.ndarray:
    """(n, 4, 4) cameras on the official LLFF spiral: around the average pose, within the
    90th percentile of the cameras' offsets, all looking at a focus point in the scene.

    As the official `get_spiral` (focus depth from the bounds, z oscillating at half the
    rate), but every pose is a proper rotation (see `average_pose`).
    """
    c2w = np.asarray(c2w, np.float64)
    centre = average_pose(c2w)
    up = _unit(c2w[:, :3, 1].sum(0))
    # Offsets from the average pose, in its frame.
    local = (np.linalg.inv(centre) @ c2w)[:, :3, 3]
    radii = np.percentile(np.abs(local), 90, axis=0)
    target = spiral_focus(c2w, depth_bounds)
    poses = []
    for theta in np.linspace(0.0, 2.0 * np.pi * rotations, n, endpoint=False):
        offset = radii * np.array([np.cos(theta), -np.sin(theta), -np.sin(0.5 * theta)])
        position = centre[:3, :3] @ offset + centre[:3, 3]
        back = _unit(position - target)
        right = _unit(np.cross(up, back))
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = (
            right, np.cross(back, right), back, position
        )  # fmt: skip
        poses.append(pose)
    return np.stack(poses)


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's least-squares (scale, (3, 3) rotation, (3,) shift) taking `source` points
    `(n, 3)` onto `target` points `(n, 3)`: how posed cameras compare with known ones."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, singular, vt = np.linalg.svd(t.T @ s / len(source))
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ flip @ vt
    scale = np.trace(np.diag(singular) @ flip) / (s**2).sum(1).mean()
    return scale, rotation, mu_t - scale * rotation @ mu_s
