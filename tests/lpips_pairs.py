"""The fixed image pairs LPIPS is checked on, made with numpy and Pillow only, so the torch
reference (tests/lpips_reference.py, in a venv of its own) builds exactly the same ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEMO_TEST = Path(__file__).resolve().parents[1] / "tensorf" / "demo" / "lego" / "test"


def demo_view(name: str) -> np.ndarray:
    """A shipped 100x100 demo test view on white, as the Blender loader composites it."""
    rgba = np.asarray(Image.open(DEMO_TEST / f"{name}.png"), np.float32) / 255.0
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def _ripple(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed +-1 pattern in place of random noise, whose stream could change with numpy."""
    i, j, c = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return np.sin(12.9898 * i + 78.233 * j + 37.719 * c).astype(np.float32)


def _box_blur(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    return sum(padded[di : di + h, dj : dj + w] for di in range(3) for dj in range(3)) / 9.0


def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> two (H, W, 3) float32 images in [0, 1]."""
    ref = demo_view("r_0")
    return {
        "two views": (ref, demo_view("r_28")),
        "ripple": (ref, np.clip(ref + 0.08 * _ripple(ref.shape), 0.0, 1.0)),
        "blur": (ref, _box_blur(ref)),
        # Not square, so a swapped height and width would show.
        "crop 64x48": (demo_view("r_57")[18:82, 30:78], demo_view("r_85")[18:82, 30:78]),
    }
