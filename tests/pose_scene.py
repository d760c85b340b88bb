"""A scene with known pose errors, for pose refinement: a textured ball, ray-traced exactly
from cameras around it, whose training poses are written with a small error each (the
images are of the true poses); the test poses are exact.

The texture is `photo_scene`'s smoothed noise, whose blobs of a few pixels make a
misplaced camera cost colour error everywhere on the ball.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from photo_scene import _BALL, _lookup
from scipy.spatial.transform import Rotation
from synthetic import focal_length, orbit_poses

RADIUS = 1.0  # the ball's
CAMERA_DISTANCE = 3.0  # the scene's radius: the cameras' distance from the ball's centre
CAMERA_ANGLE_X = 0.69


def render_ball(c2w: np.ndarray, size: int) -> np.ndarray:
    """`(size, size, 4)` straight RGB and coverage alpha from OpenGL camera-to-world `c2w`,
    2 x 2 supersampled."""
    focal = focal_length(size, CAMERA_ANGLE_X)
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size))
    origin = c2w[:3, 3]
    colour, coverage = np.zeros((size, size, 3)), np.zeros((size, size))
    for dy in (0.25, 0.75):
        for dx in (0.25, 0.75):
            camera_dirs = np.stack([(cols + dx - 0.5 * size) / focal,
                                    -(rows + dy - 0.5 * size) / focal,
                                    -np.ones_like(cols)], -1)  # fmt: skip
            dirs = camera_dirs @ c2w[:3, :3].T
            dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
            b = dirs @ origin
            disc = b * b - (origin @ origin - RADIUS**2)
            t = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc >= 0.0) & (t > 0.0)
            colour += hit[..., None] * _lookup(_BALL, (origin + t[..., None] * dirs) / RADIUS)
            coverage += hit
    rgb = colour / np.maximum(coverage, 1.0)[..., None]
    return np.concatenate([rgb, coverage[..., None] / 4.0], axis=-1)


def perturbed(poses: np.ndarray, degrees: float, shift: float, seed: int = 0) -> np.ndarray:
    """`poses` (n, 4, 4) each turned by `degrees` about a random axis through its centre and
    moved by `shift` (world units) in a random direction."""
    rng = np.random.default_rng(seed)
    out = poses.copy()
    for pose in out:
        axis = rng.standard_normal(3)
        turn = Rotation.from_rotvec(math.radians(degrees) * axis / np.linalg.norm(axis))
        move = rng.standard_normal(3)
        pose[:3, :3] = turn.as_matrix() @ pose[:3, :3]
        pose[:3, 3] += shift * move / np.linalg.norm(move)
    return out


def write_pose_scene(root: Path, size: int, n_train: int, n_test: int, degrees: float,
                     shift: float) -> tuple[Path, np.ndarray]:  # fmt: skip
    """A Blender-format scene of the ball in `root` whose training poses are off by
    `degrees` and `shift` each (`perturbed`). Returns `root` and the true training poses
    (n_train, 4, 4)."""
    root = Path(root)
    train = orbit_poses(n_train, CAMERA_DISTANCE, z_max=0.85, phase=0.0)
    test = orbit_poses(n_test, CAMERA_DISTANCE, z_max=0.6, phase=1.0)
    written = {"train": (train, perturbed(train, degrees, shift)), "test": (test, test)}
    for split, (true, given) in written.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, (c2w, pose) in enumerate(zip(true, given, strict=True)):
            rgba = np.round(render_ball(c2w, size) * 255.0).astype(np.uint8)
            iio.imwrite(root / split / f"r_{i}.png", rgba)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root, train
