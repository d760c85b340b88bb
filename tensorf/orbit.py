"""Videos (or PNG frames) along a camera path of a trained run: RGB, colour-mapped depth
and normals.

Objects get a 360-degree orbit; captures an orbit around the scene centre at the cameras'
mean height and distance (along the arc they cover and back, when they did not go all the
way round: the rest was never seen); forward-facing captures the official spiral around
the average camera (an orbit would show the back of the scene, which no photo saw). Any
other path comes from a nerfstudio camera_path.json (`tensorf.geometry.camera_path`).

python render_360.py --run-dir R --out orbit.mp4 --frames 24
python render_360.py --run-dir R --camera-path R/camera_paths/walk.json --out frames
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from tensorf import cli
from tensorf.cli import ConfigError, check_writable
from tensorf.config import CHUNK, TrainConfig
from tensorf.geometry import camera_path
from tensorf.geometry.cameras import orbit_poses, seen_arc, spiral_poses
from tensorf.render.frames import render_frames
from tensorf.render.sampling import ndc_for
from tensorf.render.visualize import VIDEO_SUFFIXES
from tensorf.train import checkpoint


@dataclasses.dataclass(frozen=True)
class OrbitArgs:
    """Render a camera path through a run's scene from its latest checkpoint."""

    run_dir: Path
    """Run directory written by train.py / train_lego.py."""
    out: Path = Path("orbit.mp4")
    """RGB video (.mp4 or .gif), or a folder (a name without a suffix) for numbered lossless
    PNG frames 00000.png, ... (its old numbered frames are removed first). The depth and
    normals outputs are named after it (orbit_depth.mp4, frames_depth/, ...)."""
    path: Literal["auto", "orbit", "spiral"] = "auto"
    """Camera path. orbit: a ring around the scene centre; spiral: the official LLFF spiral
    around the average training camera, two turns; auto: spiral for forward-facing
    captures, orbit for objects."""
    camera_path: Path | None = None
    """Render the cameras of this nerfstudio camera_path.json instead of --path (its frames,
    image size and timing; --width rescales it). It is in the run's world (as the viewer
    and --save-path write them) unless --dataparser-transforms says it is nerfstudio's."""
    dataparser_transforms: Path | None = None
    """--camera-path was made by nerfstudio for the same capture: its
    dataparser_transforms.json (in the nerfstudio run's output folder), which maps
    nerfstudio's world into the capture's; the run's placement maps that into ours."""
    save_path: Path | None = None
    """Also write the cameras rendered as a nerfstudio camera_path.json (in the run's world),
    to edit, or to render again with --camera-path."""
    frames: int = 120
    """Number of frames (cameras) along the path."""
    fps: float = 30.0
    """Frames per second of the videos (a --camera-path brings its own)."""
    elevation: float | None = None
    """Orbit: camera height above the scene centre's horizontal plane, in degrees (default:
    30 for objects, the training cameras' mean height for captures)."""
    radius: float | None = None
    """Orbit: camera distance from the scene centre (default: the training cameras' mean)."""
    width: int | None = None
    """Frame width in pixels (default: the training images', or the camera path's)."""
    height: int | None = None
    """Frame height in pixels (default: the training images' aspect ratio at --width; a
    camera path keeps its own aspect ratio)."""
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


def _check(args: OrbitArgs) -> camera_path.CameraPath | None:
    """Bad options end here, before the checkpoint is loaded; returns the camera path."""
    if args.out.suffix and args.out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--out {args.out}: use a {' or '.join(VIDEO_SUFFIXES)} file name, "
                          "or a name without a suffix for a folder of PNG frames")  # fmt: skip
    cli.check_numbers(
        ("--frames", args.frames, 1, 10**6, int), ("--fps", args.fps, 0.01, 1000, float),
        ("--chunk", args.chunk, 1, 2**22, int), ("--width", args.width, 1, 8192, int),
        ("--height", args.height, 1, 8192, int), ("--elevation", args.elevation, -89, 89, float),
        ("--radius", args.radius, 1e-6, 1e6, float),
    )  # fmt: skip
    if args.dataparser_transforms is not None and args.camera_path is None:
        raise ConfigError("--dataparser-transforms maps a --camera-path; give one")
    for out in output_paths(args).values():
        if out.suffix:
            check_writable(out)
        else:
            cli.check_creatable(out, "--out")
    if args.save_path is not None:
        check_writable(args.save_path, "--save-path")
    return None if args.camera_path is None else camera_path.read(args.camera_path)


def orbit_centre_and_radius(cfg: TrainConfig, cameras: dict) -> tuple[np.ndarray, float]:
    """The scene centre (of the configured aabb) and the training cameras' mean distance."""
    centre = np.reshape(cfg.schedule.aabb, (2, 3)).mean(0)
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


def _in_run_world(args: OrbitArgs, path: camera_path.CameraPath,
                  cameras: dict) -> camera_path.CameraPath:  # fmt: skip
    if args.dataparser_transforms is None:
        return path
    if cameras["kind"] == "forward-facing":
        raise ConfigError(f"{args.run_dir}: forward-facing scenes are recentred by our LLFF "
                          "loader, which nerfstudio's world does not know; make the path in "
                          "our viewer instead")  # fmt: skip
    placement = cameras["placement"]
    return path.with_world(camera_path.from_nerfstudio(args.dataparser_transforms, placement))


def render_orbit(args: OrbitArgs) -> dict[str, Path]:
    """Write the videos (or frame folders); returns their paths."""
    from_file = _check(args)
    cfg, state = checkpoint.load_run(args.run_dir)
    cameras = checkpoint.load_cameras(args.run_dir)
    if from_file is not None:
        path = _in_run_world(args, from_file, cameras)
        poses, fps = path.c2w, path.fps
        intrinsics = [path.intrinsics(i, args.width) for i in range(len(poses))]
    else:
        train_camera = cameras["intrinsics"]
        width = args.width or train_camera.width
        scale = width / train_camera.width
        height = args.height or max(1, round(train_camera.height * scale))
        # The same horizontal field of view and square pixels at any size, through an ideal
        # lens (a video needs no distortion).
        camera = dataclasses.replace(
            train_camera, fx=train_camera.fx * scale, fy=train_camera.fy * scale,
            cx=train_camera.cx * scale, cy=train_camera.cy * height / train_camera.height,
            width=width, height=height, distortion=None,
        )  # fmt: skip
        poses, fps = path_poses(args, cfg, cameras), args.fps
        intrinsics = [camera] * len(poses)
        path = camera_path.from_poses(poses, camera, fps)
    if args.save_path is not None:
        camera_path.write(path, args.save_path)
        print(f"camera path: {args.save_path}")
    paths = output_paths(args)
    panels = ["rgb"] + ["depth"] * (args.depth or args.side_by_side) + ["normals"] * args.normals
    start = time.perf_counter()
    # The NDC projection is the training cameras', whatever the frames' size.
    render_frames(cfg, state.params, state.aabb, state.mask, state.resolution,
                  ndc_for(cfg.render, cameras["intrinsics"]), cameras["depth_bounds"], poses,
                  intrinsics, paths, panels, fps, args.chunk)  # fmt: skip
    seconds = time.perf_counter() - start
    written = ", ".join(map(str, paths.values()))
    size = f"{intrinsics[0].width}x{intrinsics[0].height}"
    print(f"{len(poses)} frames of {size} in {seconds:.1f} s "
          f"({len(poses) / seconds:.2f} frames/s): {written}")  # fmt: skip
    return paths


def main() -> None:
    """The command line (`render_360.py`, `tensorf-render`)."""
    cli.run_main(lambda: render_orbit(tyro.cli(OrbitArgs)))


if __name__ == "__main__":
    main()
