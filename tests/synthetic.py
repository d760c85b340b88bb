"""An analytic oracle scene for tests: a coloured sphere rendered by exact ray casting.

Nothing here uses volume rendering, so a model trained on these images is checked
against geometry that was never produced by the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from tensorf.config import PRESETS, TrainConfig

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """`(4, 4)` OpenGL camera-to-world at `position` looking at the origin, world +z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, position
    return c2w


def orbit_poses(n: int, distance: float, z_max: float, phase: float) -> np.ndarray:
    """`(n, 4, 4)` cameras on a Fibonacci spiral of the sphere, heights in [-z_max, z_max].

    Heights stop short of the poles, where "world +z up" leaves the camera roll undefined.
    """
    heights = np.linspace(z_max, -z_max, n) if n > 1 else np.array([z_max])
    poses = []
    for i, z in enumerate(heights):
        azimuth = phase + i * _GOLDEN_ANGLE
        ring = math.sqrt(1.0 - z * z)
        direction = np.array([ring * math.cos(azimuth), ring * math.sin(azimuth), z])
        poses.append(look_at_origin(distance * direction))
    return np.stack(poses)


def focal_length(size: int, camera_angle_x: float) -> float:
    return 0.5 * size / math.tan(0.5 * camera_angle_x)


def render_sphere(
    c2w: np.ndarray, size: int, focal: float, radius: float, samples: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ray-sphere rendering with `samples` x `samples` supersampling per pixel.

    Returns:
        rgb `(size, size, 3)` straight (not premultiplied) colour, 0 where nothing was hit,
        and alpha `(size, size)`, the fraction of sub-pixel rays that hit the sphere.
    """
    offsets = (np.arange(samples) + 0.5) / samples
    premultiplied = np.zeros((size, size, 3))
    coverage = np.zeros((size, size))
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size))
    origin = c2w[:3, 3]
    for dy in offsets:
        for dx in offsets:
            camera_dirs = np.stack(
                [
                    (cols + dx - 0.5 * size) / focal,
                    -(rows + dy - 0.5 * size) / focal,
                    -np.ones_like(cols),
                ],
                axis=-1,
            )
            dirs = camera_dirs @ c2w[:3, :3].T
            dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
            # |o + t d|^2 = r^2 with |d| = 1: t = -b - sqrt(b^2 - c) is the nearer root.
            b = dirs @ origin
            disc = b * b - (origin @ origin - radius * radius)
            t = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc >= 0.0) & (t > 0.0)
            normals = (origin + t[..., None] * dirs) / radius
            premultiplied += hit[..., None] * surface_colour(normals)
            coverage += hit
    n_samples = samples * samples
    alpha = coverage / n_samples
    rgb = premultiplied / np.maximum(coverage, 1.0)[..., None]
    return rgb, alpha


def surface_colour(normals: np.ndarray) -> np.ndarray:
    """View-independent colour of the surface point with unit normal `(..., 3)`."""
    return np.clip(0.5 + 0.4 * normals, 0.0, 1.0)


def sphere_ground_truth(
    c2w: np.ndarray, size: int, camera_angle_x: float, radius: float
) -> np.ndarray:
    """`(size, size, 3)` float image composited on white, before any 8-bit quantisation."""
    rgb, alpha = render_sphere(c2w, size, focal_length(size, camera_angle_x), radius)
    return rgb * alpha[..., None] + (1.0 - alpha[..., None])


def write_sphere_scene(
    root: Path,
    size: int = 32,
    n_train: int = 24,
    n_test: int = 4,
    radius: float = 0.6,
    camera_distance: float = 3.0,
    camera_angle_x: float = 0.69,
) -> Path:
    """Write a Blender-format scene folder of the sphere to `root` and return `root`."""
    root = Path(root)
    focal = focal_length(size, camera_angle_x)
    # Test cameras use a lower height range and a shifted phase so they sit between
    # the training views rather than on top of them.
    splits = {
        "train": orbit_poses(n_train, camera_distance, z_max=0.85, phase=0.0),
        "test": orbit_poses(n_test, camera_distance, z_max=0.6, phase=1.0),
    }
    for split, poses in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, c2w in enumerate(poses):
            rgb, alpha = render_sphere(c2w, size, focal, radius)
            rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
            iio.imwrite(root / split / f"r_{i}.png", np.round(rgba * 255.0).astype(np.uint8))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": camera_angle_x, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    return root


def sphere_config(dataset: Path, run_dir: Path) -> TrainConfig:
    """A whole run on the sphere scene: ~1 minute on 2 CPU cores; events at 100 (mask +
    shrink, upsample) and 200 (mask + ray filtering). Each event recompiles the step, so
    there are few of them."""
    quick = PRESETS["quick"][1]
    return dataclasses.replace(
        quick,
        dataset_path=dataset,
        run_dir=run_dir,
        n_iters=300,
        batch_size=256,
        grid_init=32,
        grid_final=48,
        upsample_steps=(100,),
        mask_steps=(100, 200),
        aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        render=dataclasses.replace(quick.render, appearance_samples=4),
        checkpoint_every=100,
        log_every=50,
    )
