"""Videos along a camera path of a trained run: RGB, colour-mapped depth and normals.

Objects get a 360-degree orbit; captures an orbit around the scene centre at the cameras'
mean height and distance (along the arc they cover and back, when they did not go all the
way round: the rest was never seen); forward-facing captures the official spiral around
the average camera (an orbit would show the back of the scene, which no photo saw).

python render_360.py --run-dir R --out orbit.mp4 --frames 24
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from tensorf import checkpoint, cli
from tensorf.cameras import orbit_poses, seen_arc, spiral_poses
from tensorf.cli import ConfigError, check_writable
from tensorf.config import CHUNK, TrainConfig
from tensorf.progress import tqdm
from tensorf.render import baked, render_image
from tensorf.training import image_settings, ndc_for, settings_for
from tensorf.visualize import (
    VIDEO_SUFFIXES,
    VideoWriter,
    colorize_depth,
    depth_range,
    normals_from_depth,
    side_by_side,
    to_uint8,
)


@dataclasses.dataclass(frozen=True)
class OrbitArgs:
    """Render a camera path through a run's scene from its latest checkpoint."""

    run_dir: Path
    """Run directory written by train.py / train_lego.py."""
    out: Path = Path("orbit.mp4")
    """RGB video; .mp4 or .gif. The other videos are named after it (orbit_depth.mp4, ...)."""
    path: Literal["auto", "orbit", "spiral"] = "auto"
    """Camera path. orbit: a ring around the scene centre; spiral: the official LLFF spiral
    around the average training camera, two turns; auto: spiral for forward-facing
    captures, orbit for objects."""
    frames: int = 120
    """Number of frames (cameras) along the path."""
    fps: float = 30.0
    """Frames per second of the videos."""
    elevation: float | None = None
    """Orbit: camera height above the scene centre's horizontal plane, in degrees (default:
    30 for objects, the training cameras' mean height for captures)."""
    radius: float | None = None
    """Orbit: camera distance from the scene centre (default: the training cameras' mean)."""
    width: int | None = None
    """Frame width in pixels (default: the training images')."""
    height: int | None = None
    """Frame height in pixels (default: the training images' aspect ratio at --width)."""
    depth: bool = True
    """Also write the colour-mapped depth video (<out>_depth)."""
    normals: bool = False
    """Also write a normals video (<out>_normals), with normals from the depth map."""
    side_by_side: bool = False
    """Put RGB, depth and normals side by side in one video (<out>) instead."""
    chunk: int = CHUNK
    """Rays per jitted render call: bounds memory at any resolution."""


def output_paths(args: OrbitArgs) -> dict[str, Path]:
    """Which videos get written where: {"rgb" | "depth" | "normals" | "side_by_side": path}."""
    if args.side_by_side:
        return {"side_by_side": args.out}
    paths = {"rgb": args.out}
    for kind in ("depth", "normals"):
        if getattr(args, kind):
            paths[kind] = args.out.with_name(f"{args.out.stem}_{kind}{args.out.suffix}")
    return paths


def _check(args: OrbitArgs) -> None:
    if args.out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--out {args.out}: use a {' or '.join(VIDEO_SUFFIXES)} file name")
    cli.check_numbers(
        ("--frames", args.frames, 1, 10**6, int), ("--fps", args.fps, 0.01, 1000, float),
        ("--chunk", args.chunk, 1, 2**22, int), ("--width", args.width, 1, 8192, int),
        ("--height", args.height, 1, 8192, int), ("--elevation", args.elevation, -89, 89, float),
        ("--radius", args.radius, 1e-6, 1e6, float),
    )  # fmt: skip
    check_writable(args.out)


def orbit_centre_and_radius(cfg: TrainConfig, cameras: dict) -> tuple[np.ndarray, float]:
    """The scene centre (of the configured aabb) and the training cameras' mean distance."""
    centre = np.reshape(cfg.aabb, (2, 3)).mean(0)
    return centre, float(np.linalg.norm(cameras["c2w"][:, :3, 3] - centre, axis=-1).mean())


def capture_ring(cameras: dict) -> tuple[float, float]:
    """Radius and elevation (degrees) of the ring at the training cameras' mean height and
    mean horizontal distance from the centre of a placed capture (the origin, +z up)."""
    positions = cameras["c2w"][:, :3, 3]
    height = float(positions[:, 2].mean())
    ring = float(np.linalg.norm(positions[:, :2], axis=-1).mean())
    return float(np.hypot(height, ring)), float(np.degrees(np.arctan2(height, ring)))


def path_poses(args: OrbitArgs, cfg: TrainConfig, cameras: dict) -> np.ndarray:
    """(frames, 4, 4) cameras of the chosen path."""
    kind = args.path
    if kind == "auto":
        kind = "spiral" if cameras["kind"] == "forward-facing" else "orbit"
    if kind == "spiral":
        bounds = cameras["depth_bounds"]
        if bounds is None:
            raise ConfigError(f"{args.run_dir}: --path spiral needs a scene with depth bounds "
                              "(forward-facing captures); use --path orbit")  # fmt: skip
        return spiral_poses(cameras["c2w"], bounds, args.frames)
    if cfg.render.ndc:
        raise ConfigError(f"{args.run_dir}: NDC scenes cannot be seen from behind; use --path "
                          "spiral")  # fmt: skip
    arc = None
    if cameras["kind"] == "capture":
        center = np.zeros(3)
        radius, elevation = capture_ring(cameras)
        arc = seen_arc(cameras["c2w"][:, :3, 3])
    else:
        (center, radius), elevation = orbit_centre_and_radius(cfg, cameras), 30.0
    elevation = elevation if args.elevation is None else args.elevation
    return orbit_poses(args.frames, args.radius or radius, elevation, center, arc)


def render_orbit(args: OrbitArgs) -> dict[str, Path]:
    """Write the videos; returns their paths."""
    _check(args)
    cfg, state = checkpoint.load_run(args.run_dir)
    cameras = checkpoint.load_cameras(args.run_dir)
    train_camera = cameras["intrinsics"]
    width = args.width or train_camera.width
    scale = width / train_camera.width
    height = args.height or max(1, round(train_camera.height * scale))
    # The same horizontal field of view and square pixels at any size, through an ideal
    # lens (a video needs no distortion).
    intrinsics = dataclasses.replace(
        train_camera, fx=train_camera.fx * scale, fy=train_camera.fy * scale,
        cx=train_camera.cx * scale, cy=train_camera.cy * height / train_camera.height,
        width=width, height=height, distortion=None,
    )  # fmt: skip
    poses = path_poses(args, cfg, cameras)
    near, far = cameras["depth_bounds"] or depth_range(poses, np.asarray(state.aabb))
    # The NDC projection is the training cameras', whatever the frames' size.
    settings = image_settings(settings_for(cfg, state, ndc_for(cfg, train_camera)), cfg)
    paths = output_paths(args)
    params = baked(state.params)  # once, not once per frame
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(VideoWriter(p, args.fps)) for k, p in paths.items()}
        for c2w in tqdm(poses, desc="rendering orbit", unit="frame"):
            out, settings = render_image(
                params, cfg.model, settings, state.aabb, state.mask, c2w, intrinsics,
                args.chunk,
            )  # fmt: skip
            panels = {"rgb": to_uint8(out["rgb"])}  # the panels of a side-by-side frame
            if args.depth or args.side_by_side:
                panels["depth"] = colorize_depth(out["depth"], out["acc"], near, far)
            if args.normals:
                panels["normals"] = normals_from_depth(out["depth"], out["acc"], c2w, intrinsics)
            for kind, writer in writers.items():
                writer.write(
                    side_by_side(*panels.values()) if kind == "side_by_side" else panels[kind]
                )
    seconds = time.perf_counter() - start
    written = ", ".join(map(str, paths.values()))
    print(f"{args.frames} frames of {width}x{height} in {seconds:.1f} s "
          f"({args.frames / seconds:.2f} frames/s): {written}")  # fmt: skip
    return paths


def main() -> None:
    """The command line (`render_360.py`, `tensorf-render`)."""
    cli.run_main(lambda: render_orbit(tyro.cli(OrbitArgs)))
