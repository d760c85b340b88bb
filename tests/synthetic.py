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

from tensorf.config import TrainConfig, override
from tensorf.presets import PRESETS

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


def write_exposure_scene(
    root: Path, gains: np.ndarray, size: int = 24, radius: float = 0.6,
    camera_distance: float = 3.0, camera_angle_x: float = 0.69,
) -> Path:
    """The sphere scene photographed `shots` times from each of `poses` cameras with another
    exposure and white balance each time: training image (pose p, shot s) is the sphere's
    colour times `gains[p, s]` (gains: (poses, shots, 3)) on the white background. From
    one pose no view-dependent colour tells its shots apart; only a per-image code can."""
    root = Path(root)
    focal = focal_length(size, camera_angle_x)
    n_poses, shots = gains.shape[:2]
    poses = {"train": orbit_poses(n_poses, camera_distance, z_max=0.85, phase=0.0),
             "test": orbit_poses(1, camera_distance, z_max=0.6, phase=1.0)}  # fmt: skip
    for split, split_gains in (("train", gains), ("test", np.ones((1, 1, 3)))):
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for p, c2w in enumerate(poses[split]):
            rgb, alpha = render_sphere(c2w, size, focal, radius)
            for s, gain in enumerate(split_gains[p]):
                rgba = np.concatenate([rgb * gain, alpha[..., None]], axis=-1)
                name = f"{split}/r_{p}_{s}"
                iio.imwrite(root / f"{name}.png", np.round(rgba * 255.0).astype(np.uint8))
                frames.append({"file_path": f"./{name}", "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": camera_angle_x, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    return root


def sphere_config(dataset: Path, run_dir: Path) -> TrainConfig:
    """A whole run on the sphere scene: ~1 minute on 2 CPU cores; events at 100 (mask +
    shrink, upsample) and 200 (mask + ray filtering + shrink and regrid, as `quick` does).
    Each event recompiles the step, so there are few of them."""
    quick = PRESETS["quick"][1]
    return override(
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



def tiny_config(dataset: Path, run_dir: Path) -> TrainConfig:
    """The contracts' run (resume, kill, signals, devices, processes): 60 steps of 128 rays
    on a 16^3 -> 24^3 grid, with each kind of grid event (at 20: mask + shrink + upsample;
    at 40: mask + ray filtering + shrink and regrid), a checkpoint every 20 steps and a
    log line every 10. A few seconds of training; the compilations are most of its time."""
    return override(
        sphere_config(dataset, run_dir),
        n_iters=60,
        batch_size=128,
        grid_init=16,
        grid_final=24,
        upsample_steps=(20,),
        mask_steps=(20, 40),
        checkpoint_every=20,
        log_every=10,
        eval_max_views=2,
    )

# --- a forward-facing (LLFF-format) scene ------------------------------------------------

# In the rig's own frame (cameras near its origin looking down -z): a sphere in front of
# a textured back plane.
LLFF_SPHERE_CENTRE = np.array([0.1, -0.05, -4.0])
LLFF_SPHERE_RADIUS = 1.0
LLFF_BACK_Z = -7.0


@dataclasses.dataclass(frozen=True)
class LLFFScene:
    """What `write_llff_scene` wrote, in the original (unrecentred, unscaled) world frame."""

    root: Path
    poses: np.ndarray  # (n, 3, 5) as written: [down, right, backwards | position | hwf]
    bounds: np.ndarray  # (n, 2) near, far
    names: tuple[str, ...]  # image file names, in pose order
    full_size: tuple[int, int]  # (height, width) of the full-resolution images
    focal: float  # at full resolution
    rig_to_world: np.ndarray  # (4, 4): the rig frame (where the scene is defined) -> world


def rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """(3, 3) rotation by rz about z, then ry about y, then rx about x (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return x @ y @ z


def forward_facing_rig(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) OpenGL camera-to-rig: cameras on a small grid in the rig's z = 0 plane,
    each turned by a few degrees from looking straight down -z."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, :3] = rotation_xyz(*rng.uniform(-0.06, 0.06, 3))
        c2w[:3, 3] = [0.15 * (i % 5) - 0.3, 0.2 * (i // 5) - 0.1, rng.uniform(-0.05, 0.05)]
        poses.append(c2w)
    return np.stack(poses)


def render_forward_scene(c2w: np.ndarray, height: int, width: int, focal: float) -> np.ndarray:
    """(height, width, 3) exact ray casting of the rig-frame scene from OpenGL camera-to-rig
    `c2w`, one ray through each pixel centre, principal point at the image centre."""
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height))
    camera_dirs = np.stack(
        [(cols + 0.5 - 0.5 * width) / focal, -(rows + 0.5 - 0.5 * height) / focal,
         -np.ones_like(cols)], -1,
    )  # fmt: skip
    dirs = camera_dirs @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origin = c2w[:3, 3]
    # The back plane: a two-colour checkerboard of 0.5-unit squares with a gentle ramp.
    t_plane = (LLFF_BACK_Z - origin[2]) / dirs[..., 2]
    hit = origin + t_plane[..., None] * dirs
    checker = (np.floor(hit[..., 0] / 0.5) + np.floor(hit[..., 1] / 0.5)) % 2
    ramp = np.clip(0.5 + 0.1 * hit[..., :1], 0.0, 1.0)
    rgb = np.where(checker[..., None] > 0, [0.9, 0.8, 0.2], [0.1, 0.3, 0.7]) * 0.5 + 0.5 * ramp
    # The sphere in front of it.
    offset = origin - LLFF_SPHERE_CENTRE
    b = dirs @ offset
    disc = b * b - (offset @ offset - LLFF_SPHERE_RADIUS**2)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    on_sphere = (disc >= 0.0) & (t > 0.0)
    normals = (offset + t[..., None] * dirs) / LLFF_SPHERE_RADIUS
    return np.where(on_sphere[..., None], surface_colour(normals), rgb)


def write_llff_scene(
    root: Path,
    n: int = 10,
    full_size: tuple[int, int] = (48, 64),
    focal: float = 60.0,
    factors: tuple[int, ...] = (1, 2),
    seed: int = 0,
) -> LLFFScene:
    """Write an LLFF-format scene folder to `root`: poses_bounds.npy and the images at each
    downscale factor in `factors` (1: images/, N: images_N/), rendered by exact ray casting.

    The rig sits rotated and shifted in the world, so that recentring has work to do.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rig = forward_facing_rig(n, seed)
    rig_to_world = np.eye(4)
    rig_to_world[:3, :3] = rotation_xyz(0.3, -0.5, 1.1)
    rig_to_world[:3, 3] = [2.0, -1.0, 3.0]
    world = rig_to_world @ rig
    height, width = full_size
    names = tuple(f"img_{i:03d}.png" for i in range(n))
    for factor in factors:
        folder = root / ("images" if factor == 1 else f"images_{factor}")
        folder.mkdir(exist_ok=True)
        for i in reversed(range(n)):  # not in name order: the loader must sort
            rgb = render_forward_scene(rig[i], height // factor, width // factor, focal / factor)
            iio.imwrite(folder / names[i], np.round(rgb * 255.0).astype(np.uint8))
    # [right, up, backwards] -> LLFF's [down, right, backwards], then the hwf column.
    rotation = world[:, :3, :3]
    llff = np.stack([-rotation[..., 1], rotation[..., 0], rotation[..., 2]], -1)
    hwf = np.broadcast_to(np.array([height, width, focal], np.float64)[:, None], (n, 3, 1))
    poses = np.concatenate([llff, world[:, :3, 3:], hwf], -1)
    bounds = np.stack([2.5 + 0.05 * np.arange(n), 8.0 + 0.1 * np.arange(n)], -1)
    np.save(root / "poses_bounds.npy", np.concatenate([poses.reshape(n, 15), bounds], -1))
    return LLFFScene(root, poses, bounds, names, full_size, focal, rig_to_world)


def room_colour(directions: np.ndarray) -> np.ndarray:
    """A smooth pattern on the inside of the room, by direction (..., 3) from its centre."""
    azimuth = np.arctan2(directions[..., 1], directions[..., 0])
    elevation = np.arcsin(np.clip(directions[..., 2], -1.0, 1.0))
    phase = np.array([0.0, 2.0, 4.0])
    return 0.5 + 0.4 * np.sin(3.0 * azimuth[..., None] + phase) * np.cos(2.0 * elevation[..., None])


def render_room(c2w: np.ndarray, size: int, focal: float, radius: float, room: float) -> np.ndarray:
    """(size, size, 3) exact render of the sphere inside a room (a sphere of radius `room`
    around it, seen from inside), 2 x 2 supersampled."""
    image = np.zeros((size, size, 3))
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size))
    origin = c2w[:3, 3]
    for dy in (0.25, 0.75):
        for dx in (0.25, 0.75):
            x, y = (cols + dx - 0.5 * size) / focal, -(rows + dy - 0.5 * size) / focal
            camera_dirs = np.stack([x, y, -np.ones_like(cols)], -1)
            dirs = camera_dirs @ c2w[:3, :3].T
            dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
            b = dirs @ origin
            disc = b * b - (origin @ origin - radius * radius)
            t = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc >= 0.0) & (t > 0.0)
            # Inside the room the far root is the one in front: t = -b + sqrt(...).
            t_room = -b + np.sqrt(b * b - (origin @ origin - room * room))
            wall = origin + t_room[..., None] * dirs
            sphere = surface_colour((origin + t[..., None] * dirs) / radius)
            image += np.where(hit[..., None], sphere, room_colour(wall / room))
    return image / 4.0


def write_room_capture(
    root: Path, size: int = 32, n: int = 32, radius: float = 0.4, room: float = 8.0
) -> Path:
    """An instant-ngp style transforms.json capture of the sphere in a room, from a ring of
    cameras 2 units out (so placement keeps the scale) at heights -0.3..0.3."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    camera_angle_x = 1.2
    focal = focal_length(size, camera_angle_x)
    frames = []
    for i in range(n):
        angle = 2.0 * math.pi * i / n
        height = 0.3 * math.sin(3.0 * angle)
        ring = math.sqrt(4.0 - height * height)
        c2w = look_at_origin(np.array([ring * math.cos(angle), ring * math.sin(angle), height]))
        image = render_room(c2w, size, focal, radius, room)
        iio.imwrite(root / "images" / f"{i:03d}.png", np.round(image * 255).astype(np.uint8))
        frames.append({"file_path": f"images/{i:03d}.png", "transform_matrix": c2w.tolist()})
    meta = {"camera_angle_x": camera_angle_x, "w": size, "h": size, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root
