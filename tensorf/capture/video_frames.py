"""A video's sharpest frames, evenly spread over it, read with the ffmpeg that imageio-ffmpeg
ships (no system ffmpeg needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from tensorf.data import DatasetError
from tensorf.progress import tqdm


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image `(H, W, 3)` uint8: low for blurred frames
    (motion blur spreads edges, which flattens the second derivative)."""
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]
                 - 4.0 * grey[1:-1, 1:-1])  # fmt: skip
    return float(laplacian.var())


def windows(n_frames: int, n_windows: int) -> np.ndarray:
    """`(n_frames,)` the window of each frame: `n_windows` runs of (nearly) equal length."""
    return np.arange(n_frames) * n_windows // n_frames


def _decoded(path: Path) -> tuple[dict, Iterator[bytes]]:
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as error:
        reason = " ".join(str(error).split())[:160]
        raise DatasetError(f"{path}: not a readable video ({reason}); give a video file "
                           "(mp4, mov, ...) or a folder of photos") from error  # fmt: skip
    return meta, reader


def sharp_frames(path: Path, n_frames: int | None, fps: float | None) -> Iterator[np.ndarray]:
    """The video at `path` cut into `n_frames` equal windows (or one per 1/`fps` seconds),
    and the sharpest frame of each, in order: `(H, W, 3)` uint8 each, yielded as each
    window ends.

    One pass over the video holds two frames in memory, whatever its length.
    The window count needs the frame count up front, which comes from the container's
    duration and frame rate; a video shorter than it says leaves its last windows empty.
    """
    meta, reader = _decoded(path)
    width, height = meta["size"]
    rate, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    expected = max(1, round(rate * duration))
    wanted = max(1, round(duration * fps)) if fps is not None else n_frames
    assert wanted is not None
    window_of = windows(expected, min(wanted, expected))
    best, best_score, current = None, -1.0, 0
    try:
        for i, raw in enumerate(tqdm(reader, total=expected, desc="video frames", unit="frame")):
            window = window_of[min(i, expected - 1)]
            if window != current and best is not None:
                yield best
                best, best_score = None, -1.0
            current = window
            frame = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            score = sharpness(frame)
            if score > best_score:
                best, best_score = frame.copy(), score
    except (OSError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:160]
        raise DatasetError(
            f"{path}: the video could not be decoded ({reason}); re-encode "
            "it (e.g. to H.264 mp4) or extract its frames yourself"
        ) from error
    if best is not None:
        yield best
