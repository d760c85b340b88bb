"""The downscale that fits a capture's photos to a wanted size (--target-long-side), so that
a preset reads a phone's 1080x1920 video and a camera's 6000x4000 photos at about the same
resolution rather than by one fixed factor."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class FullSize:
    """A scene's training images at full size, and the downscale factors its loader reads
    them at (Blender: those dividing both sides; LLFF: from its smallest images_N/ folder
    on; captures: any)."""

    width: int
    height: int
    factors: Sequence[int]

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)


def nearest_downscale(size: FullSize, target: int) -> int:
    """The factor of `size.factors` that puts the long side nearest to `target` pixels, by
    ratio (a long side of 384 is as far from 480 as 600 is), the larger image on a tie."""
    return min(size.factors, key=lambda f: (abs(math.log(size.long_side / f / target)), f))
