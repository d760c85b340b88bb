"""A scene for structure from motion: a textured ball inside a textured room, ray-traced
exactly from known cameras on a ring, so that recovered poses have a ground truth.

The texture is smoothed random noise at three scales (no repeats, unlike a checkerboard),
which gives SIFT distinct blobs to match; the room behind the ball gives far features
(rotation) and the ball near ones (parallax, hence translation).
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from synthetic import look_at_origin

BALL_RADIUS = 1.0
ROOM_RADIUS = 6.0
CAMERA_DISTANCE = 3.0  # the cameras' distance from the ball's centre: the scene's radius
SIZE = (320, 240)  # width, height (multiples of 16, as mp4 encoders want)
FOCAL = 250.0  # pixels; principal point at the image centre, no distortion


def noise_texture(seed: int, height: int = 256, width: int = 512) -> np.ndarray:
    """`(height, width, 3)` in [0, 1]: an equirectangular map of smoothed noise."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((height, width, 3))
    for sigma, weight in ((1.5, 0.5), (4.0, 1.0), (10.0, 1.0)):
        smooth = ndimage.gaussian_filter(rng.standard_normal((height, width, 3)),
                                         (sigma, sigma, 0), mode="wrap")  # fmt: skip
        texture += weight * smooth / smooth.std()
    return np.clip(0.5 + 0.15 * texture, 0.0, 1.0)


_BALL, _ROOM = noise_texture(1), noise_texture(2)


def _lookup(texture: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Bilinear texture colour `(..., 3)` of unit `directions` `(..., 3)` from the centre."""
    azimuth = np.arctan2(directions[..., 1], directions[..., 0])
    elevation = np.arcsin(np.clip(directions[..., 2], -1.0, 1.0))
    height, width = texture.shape[:2]
    rows = (0.5 - elevation / math.pi) * height - 0.5
    cols = (azimuth / (2.0 * math.pi) % 1.0) * width - 0.5
    return np.stack([ndimage.map_coordinates(texture[..., c], [rows, cols], order=1,
                                             mode="grid-wrap") for c in range(3)], -1)  # fmt: skip


def render(c2w: np.ndarray, size: tuple[int, int] = SIZE, focal: float = FOCAL) -> np.ndarray:
    """`(height, width, 3)` float image from OpenGL camera-to-world `c2w`, 2 x 2 supersampled."""
    width, height = size
    image = np.zeros((height, width, 3))
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height))
    origin = c2w[:3, 3]
    for dy in (0.25, 0.75):
        for dx in (0.25, 0.75):
            camera_dirs = np.stack([(cols + dx - 0.5 * width) / focal,
                                    -(rows + dy - 0.5 * height) / focal,
                                    -np.ones_like(cols)], -1)  # fmt: skip
            dirs = camera_dirs @ c2w[:3, :3].T
            dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
            b = dirs @ origin
            disc = b * b - (origin @ origin - BALL_RADIUS**2)
            t_ball = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc >= 0.0) & (t_ball > 0.0)
            t_room = -b + np.sqrt(b * b - (origin @ origin - ROOM_RADIUS**2))  # from inside
            ball = _lookup(_BALL, (origin + t_ball[..., None] * dirs) / BALL_RADIUS)
            room = _lookup(_ROOM, (origin + t_room[..., None] * dirs) / ROOM_RADIUS)
            image += np.where(hit[..., None], ball, room)
    return image / 4.0


def ring_poses(n: int) -> np.ndarray:
    """`(n, 4, 4)` OpenGL camera-to-world on a ring around the ball, rising and falling
    twice per turn, in order (as a walk around it would film them)."""
    poses = []
    for i in range(n):
        angle = 2.0 * math.pi * i / n
        height = 0.8 * math.sin(2.0 * angle)
        ring = math.sqrt(CAMERA_DISTANCE**2 - height**2)
        poses.append(look_at_origin(np.array([ring * math.cos(angle), ring * math.sin(angle),
                                              height])))  # fmt: skip
    return np.stack(poses)


def render_ring(n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ring's poses and their renders as `(height, width, 3)` uint8."""
    poses = ring_poses(n)
    return poses, [np.round(render(c2w) * 255.0).astype(np.uint8) for c2w in poses]


def write_photos(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        iio.imwrite(folder / f"view_{i:03d}.png", image)
    return folder
