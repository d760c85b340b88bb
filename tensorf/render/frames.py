"""Frames of a field seen from a list of cameras, written as videos or as numbered PNGs:
what `render_360.py` and the viewer's render button share, so that they write the same
frames."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorf import outputs
from tensorf.config import CHUNK, TrainConfig
from tensorf.geometry.cameras import Intrinsics
from tensorf.progress import tqdm
from tensorf.render.image import baked, render_image
from tensorf.render.sampling import image_settings, render_settings
from tensorf.render.visualize import (
    VideoWriter,
    colorize_depth,
    depth_range,
    normals_from_depth,
    side_by_side,
    to_uint8,
)


class PngFrames:
    """Frames as numbered lossless PNGs (00000.png, ...) in a folder, for editing or for an
    encoder of one's choice; the folder's old numbered frames are removed first, so a
    shorter render leaves none of a longer one behind."""

    PATTERN = re.compile(r"\d{5}\.png")

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = Path(folder), 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.iterdir():
            if self.PATTERN.fullmatch(old.name):
                old.unlink()

    def write(self, frame: np.ndarray) -> None:
        outputs.write_image(self.folder / f"{self.count:05d}.png", frame)
        self.count += 1

    def __enter__(self) -> PngFrames:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def frame_writer(path: Path, fps: float) -> VideoWriter | PngFrames:
    """A video for a .mp4 / .gif name, numbered PNG frames in a folder otherwise."""
    return VideoWriter(path, fps) if path.suffix else PngFrames(path)


def render_frames(
    cfg: TrainConfig, params: dict, aabb, mask, resolution, ndc: tuple[float, float] | None,
    depth_bounds: tuple[float, float] | None, poses: np.ndarray, intrinsics: list[Intrinsics],
    outputs: dict[str, Path], panels: list[str], fps: float, chunk: int = CHUNK,
    mesh=None, after_frame: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    """Render the field from each camera (poses (frames, 4, 4), one Intrinsics per frame)
    into `outputs` ({"rgb" | "depth" | "normals" | "side_by_side": path}; `panels` names
    what a side-by-side frame holds). `after_frame(i)` is called as each frame is written
    (the viewer's progress). The command line and the viewer's render button share this,
    so that they write the same frames."""
    fast = render_settings(cfg, np.asarray(aabb), resolution, ndc, mask)
    settings = image_settings(fast, cfg.render)
    near, far = depth_bounds or depth_range(poses, np.asarray(aabb))
    params = baked(params)  # once, not once per frame
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(frame_writer(p, fps)) for k, p in outputs.items()}
        for i, c2w in enumerate(tqdm(poses, desc="rendering", unit="frame")):
            out, settings = render_image(params, cfg.model, settings, aabb, mask, c2w,
                                         intrinsics[i], chunk, mesh)  # fmt: skip
            shown = {"rgb": to_uint8(out["rgb"])}  # the panels of a side-by-side frame
            if "depth" in panels:
                shown["depth"] = colorize_depth(out["depth"], out["acc"], near, far)
            if "normals" in panels:
                shown["normals"] = normals_from_depth(out["depth"], out["acc"], c2w, intrinsics[i])
            for kind, writer in writers.items():
                frame = side_by_side(*shown.values()) if kind == "side_by_side" else shown[kind]
                writer.write(frame)
            if after_frame is not None:
                after_frame(i)
