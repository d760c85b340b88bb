"""Turning renders into pictures: 8-bit colour, colour-mapped depth, normals from depth."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import imageio.v2
import imageio_ffmpeg
import jax.numpy as jnp
import numpy as np
from PIL import Image

from tensorf import outputs
from tensorf.errors import OutputError
from tensorf.geometry.cameras import Intrinsics, pixel_rays

# Viridis at five stops (matplotlib's values): near is yellow, far is purple.
_STOPS = np.linspace(0.0, 1.0, 5)
_VIRIDIS = np.array(
    [[0.993, 0.906, 0.144], [0.369, 0.789, 0.383], [0.128, 0.567, 0.551],
     [0.229, 0.322, 0.546], [0.267, 0.005, 0.329]]
)  # fmt: skip


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def depth_range(c2w: np.ndarray, aabb: np.ndarray) -> tuple[float, float]:
    """Nearest and farthest distance from any of the cameras (n, 4, 4) to the box (2, 3)."""
    aabb = np.asarray(aabb, np.float64)
    centres = np.asarray(c2w)[:, :3, 3]
    outside = np.maximum(np.maximum(aabb[0] - centres, centres - aabb[1]), 0.0)
    corners = np.stack(np.meshgrid(*aabb.T, indexing="ij"), -1).reshape(-1, 3)
    farthest = np.linalg.norm(centres[:, None] - corners[None], axis=-1).max()
    return float(np.linalg.norm(outside, axis=-1).min()), float(farthest)


def colorize_depth(depth: np.ndarray, acc: np.ndarray, near: float, far: float) -> np.ndarray:
    """Expected depth (H, W) -> (H, W, 3) uint8 on a viridis ramp from near to far;
    pixels the ray leaves mostly empty (acc < 0.5) are white."""
    d = depth / np.maximum(acc, 1e-6)
    v = np.clip((d - near) / max(far - near, 1e-6), 0.0, 1.0)
    rgb = np.stack([np.interp(v, _STOPS, _VIRIDIS[:, c]) for c in range(3)], -1)
    return to_uint8(np.where((acc > 0.5)[..., None], rgb, 1.0))


def normals_from_depth(
    depth: np.ndarray, acc: np.ndarray, c2w: np.ndarray, intrinsics: Intrinsics
) -> np.ndarray:
    """World-space normals of the surface at the expected depth (H, W) -> (H, W, 3) uint8,
    shown as (n + 1) / 2 and facing the camera; empty pixels are white."""
    height, width = depth.shape
    rows, cols = np.mgrid[:height, :width]
    origins, dirs = pixel_rays(jnp.asarray(c2w, jnp.float32), cols, rows, intrinsics)
    dirs = np.asarray(dirs)
    points = np.asarray(origins) + dirs * (depth / np.maximum(acc, 1e-6))[..., None]
    normals = np.cross(np.gradient(points, axis=1), np.gradient(points, axis=0))
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    normals *= -np.sign(np.sum(normals * dirs, axis=-1, keepdims=True) + 1e-12)
    return to_uint8(np.where((acc > 0.5)[..., None], (normals + 1.0) / 2.0, 1.0))


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images (H, W, 3) (float in [0, 1] or uint8) -> one (H, sum W, 3) uint8 image."""
    return np.concatenate([i if i.dtype == np.uint8 else to_uint8(i) for i in images], axis=1)


VIDEO_SUFFIXES = (".mp4", ".gif")


def _closed() -> None:
    """What an encoder's close does once it has been tried."""


@contextlib.contextmanager
def _without_fork_warning() -> Iterator[None]:
    """ffmpeg runs as a subprocess, started by the first frame and again to count the
    frames: JAX warns about any fork, but ffmpeg execs at once and never touches JAX's
    threads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        yield


class VideoWriter:
    """Frames to MP4 (ffmpeg) or GIF, by the file's suffix, appended one at a time so that
    memory does not grow with the length of the video. The video is written under a
    temporary name and renamed only once its frame count reads back: an encoder that could
    not finish the file (a full disk: an MP4 without its index) leaves nothing behind."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = outputs.target(path)
        self.frames = 0
        self._partial = outputs.partial_path(self.path)
        suffix = self.path.suffix.lower()
        self._pad_to_even = suffix == ".mp4"
        with _without_fork_warning():
            if suffix == ".mp4":
                # macro_block_size=1 keeps the exact frame size (ffmpeg would pad it to 16).
                self._writer = imageio.v2.get_writer(self._partial, fps=fps,
                                                     macro_block_size=1, quality=8)  # fmt: skip
            elif suffix == ".gif":
                self._writer = imageio.v2.get_writer(self._partial, mode="I",
                                                     duration=1000 / fps, loop=0)  # fmt: skip
            else:
                raise ValueError(f"{path}: unsupported video format; use one of {VIDEO_SUFFIXES}")

    def write(self, frame: np.ndarray) -> None:
        if self._pad_to_even:
            # H.264 in yuv420p needs even sizes: repeat the last row / column where odd.
            pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
            frame = np.pad(frame, pad[: frame.ndim], mode="edge")
        try:
            with _without_fork_warning():
                self._writer.append_data(frame)
        except Exception as error:  # ffmpeg fails as a broken pipe, GIFs as PIL errors
            raise self._failed(error) from error
        self.frames += 1

    def _failed(self, error: Exception) -> OutputError:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        return OutputError(f"{self.path}: the video encoder failed ({reason}); check the disk "
                           "space and the frame size (nothing was written)")  # fmt: skip

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._writer.close()
        except Exception as error:
            if exc_info[0] is None:
                outputs.discard(self._partial)
                raise self._failed(error) from error
        finally:
            # imageio's GIF writer and its plugin retry a failed close from their
            # destructors, which print a traceback after our one-line error: once tried,
            # closing is over, as far as we care.
            for owner in (self._writer, getattr(self._writer, "instance", None)):
                if owner is not None:
                    owner.close = _closed
        if exc_info[0] is not None:
            outputs.discard(self._partial)
            return
        outputs.commit(self._partial, self.path, outputs.checked(self._verify, self._partial))

    def _verify(self, partial: Path) -> str | None:
        """None if the file decodes to the frames written, else what is wrong."""
        if not partial.is_file() or not partial.stat().st_size:
            return "the video encoder wrote nothing"
        if partial.suffix.lower() == ".gif":
            with Image.open(partial) as gif:
                count = gif.n_frames
        else:
            with _without_fork_warning():
                count = imageio_ffmpeg.count_frames_and_secs(str(partial))[0]
        if count != self.frames:
            return f"the video encoder wrote {count} of {self.frames} frames"
        return None
