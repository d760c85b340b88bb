"""360-degree orbit videos of a trained run: RGB, colour-mapped depth and normals.

python render_360.py --run-dir R --out orbit.mp4 --frames 24
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tensorf import checkpoint
from tensorf.cameras import orbit_poses
from tensorf.cli import ConfigError, check_writable
from tensorf.config import TrainConfig
from tensorf.render import render_image
from tensorf.training import settings_for
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
    """Render a ring of cameras around the scene centre from a run's latest checkpoint."""

    run_dir: Path
    """Run directory written by train_lego.py."""
    out: Path = Path("orbit.mp4")
    """RGB video; .mp4 or .gif. The other videos are named after it (orbit_depth.mp4, ...)."""
    frames: int = 120
    """Number of frames (cameras) around the full circle."""
    fps: float = 30.0
    """Frames per second of the videos."""
    elevation: float = 30.0
    """Camera height above the scene centre's horizontal plane, in degrees."""
    radius: float | None = None
    """Camera distance from the scene centre (default: mean distance of the training cameras)."""
    width: int | None = None
    """Frame width in pixels (default: the training images')."""
    height: int | None = None
    """Frame height in pixels (default: the training images')."""
    depth: bool = True
    """Also write the colour-mapped depth video (<out>_depth)."""
    normals: bool = False
    """Also write a normals video (<out>_normals), with normals from the depth map."""
    side_by_side: bool = False
    """Put RGB, depth and normals side by side in one video (<out>) instead."""
    chunk: int = 8192
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
    if args.frames < 1 or args.fps <= 0 or args.chunk < 1:
        raise ConfigError("--frames, --fps and --chunk must be positive")
    if (args.width is not None and args.width < 1) or (args.height is not None and args.height < 1):
        raise ConfigError("--width and --height must be positive")
    check_writable(args.out)


def orbit_centre_and_radius(cfg: TrainConfig, cameras: dict) -> tuple[np.ndarray, float]:
    """The scene centre (of the configured aabb) and the training cameras' mean distance."""
    centre = np.reshape(cfg.aabb, (2, 3)).mean(0)
    return centre, float(np.linalg.norm(cameras["c2w"][:, :3, 3] - centre, axis=-1).mean())


def render_orbit(args: OrbitArgs) -> dict[str, Path]:
    """Write the videos; returns their paths."""
    _check(args)
    cfg, state = checkpoint.load_run(args.run_dir)
    cameras = checkpoint.load_cameras(args.run_dir)
    center, radius = orbit_centre_and_radius(cfg, cameras)
    radius = args.radius or radius
    width = args.width or cameras["width"]
    height = args.height or cameras["height"]
    focal = cameras["focal"] * width / cameras["width"]  # same field of view at any size
    poses = orbit_poses(args.frames, radius, args.elevation, center)
    near, far = depth_range(poses, np.asarray(state.aabb))
    settings = settings_for(cfg, state)
    paths = output_paths(args)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(VideoWriter(p, args.fps)) for k, p in paths.items()}
        for c2w in tqdm(poses, desc="rendering orbit", unit="frame"):
            out, settings = render_image(
                state.params, cfg.model, settings, state.aabb, state.mask, c2w, focal,
                height, width, args.chunk,
            )  # fmt: skip
            panels = {"rgb": to_uint8(out["rgb"])}  # the panels of a side-by-side frame
            if args.depth or args.side_by_side:
                panels["depth"] = colorize_depth(out["depth"], out["acc"], near, far)
            if args.normals:
                panels["normals"] = normals_from_depth(out["depth"], out["acc"], c2w, focal)
            for kind, writer in writers.items():
                writer.write(
                    side_by_side(*panels.values()) if kind == "side_by_side" else panels[kind]
                )
    seconds = time.perf_counter() - start
    written = ", ".join(map(str, paths.values()))
    print(f"{args.frames} frames of {width}x{height} in {seconds:.1f} s "
          f"({args.frames / seconds:.2f} frames/s): {written}")  # fmt: skip
    return paths
