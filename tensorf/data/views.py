"""What every loader returns (`Views`), its error type, and the image reading they share.

Everything here is numpy only so that data loading never touches the accelerator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np

from tensorf.cameras import Intrinsics
from tensorf.errors import DatasetError

# Reader messages can be long and multi-line; they are only a hint after our own text.
_MAX_READER_MESSAGE = 160

DOWNLOAD_HINT = (
    "download the NeRF data release (Mildenhall et al. 2020: nerf_synthetic.zip for objects, "
    "nerf_llff_data.zip for forward-facing captures), unzip it, and point --dataset-path at a "
    "scene folder such as .../nerf_synthetic/lego or .../nerf_llff_data/fern, or set "
    "TENSORF_DATA_DIR to the folder that contains them"
)

# Photo files, by suffix (lower case): what tensorf-process poses and what marks a folder
# of photos that still needs posing.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# "object": seen from all around, inside a bounded box; "forward-facing": photos that all
# look the same way (LLFF), rendered through normalised device coordinates; "capture": a
# phone or camera capture (transforms.json, COLMAP) whose background goes on for ever.
SceneKind = Literal["object", "forward-facing", "capture"]


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is ambiguous
class Views:
    """A set of posed images of one size from one split of a scene.

    Attributes:
        images: `(n, H, W, 3)` float32 in [0, 1] (objects: composited on white).
        c2w: `(n, 4, 4)` float32 camera-to-world (OpenGL: camera looks down -z, +y up).
        intrinsics: the camera of every view (the first view's when they differ), for
            images of `W` x `H`.
        names: the frames' names as the dataset gives them, length `n`.
        kind: what sort of capture it is (sets how rays are parametrised).
        depth_bounds: (near, far) of the scene's content as seen from the cameras, in world
            units (LLFF's bounds); None where the format gives none.
        per_view: each view's camera, where they differ (e.g. per-frame intrinsics).
        placement: how the format's world was moved into ours (`Placement.to_dict`), for
            captures; None where the poses are used as given.
    """

    images: np.ndarray
    c2w: np.ndarray
    intrinsics: Intrinsics
    names: tuple[str, ...]
    kind: SceneKind = "object"
    depth_bounds: tuple[float, float] | None = None
    per_view: tuple[Intrinsics, ...] | None = None
    placement: dict | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.images.ndim != 4 or self.images.shape[0] != n or self.images.shape[3] != 3:
            raise ValueError(f"images must be (n={n}, H, W, 3), got {self.images.shape}")
        if self.c2w.shape != (n, 4, 4):
            raise ValueError(f"c2w must be (n={n}, 4, 4), got {self.c2w.shape}")
        k = self.intrinsics
        if (k.height, k.width) != self.images.shape[1:3]:
            raise ValueError(f"intrinsics are for {k.width}x{k.height}, images are "
                             f"{self.images.shape}")  # fmt: skip
        if self.per_view is not None and (
            len(self.per_view) != n
            or any((c.width, c.height) != (k.width, k.height) for c in self.per_view)
        ):
            raise ValueError(f"per_view must hold n={n} cameras for {k.width}x{k.height} images")

    def camera(self, i: int) -> Intrinsics:
        """The camera of view i."""
        return self.intrinsics if self.per_view is None else self.per_view[i]

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])


def spread_indices(n: int, max_views: int | None) -> list[int]:
    """Indices of `max_views` frames spread over `range(n)`, covering both ends."""
    if max_views is None or max_views >= n:
        return list(range(n))
    return [int(i) for i in np.unique(np.round(np.linspace(0, n - 1, max_views)).astype(int))]


def check_load_args(downscale: int, max_views: int | None) -> None:
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    if max_views is not None and (isinstance(max_views, bool) or max_views < 1):
        raise ValueError(f"max_views must be a positive integer or None, got {max_views!r}")


def read_image(path: Path, named_by: str) -> np.ndarray:
    """The pixels of an image file, as the reader gives them; `named_by` says what named
    the file, for the error when it is missing."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: image file not found (named by {named_by}); re-extract the dataset or "
            "fix the path"
        )
    try:
        return np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as error:  # readers raise many exception types for bad files
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:_MAX_READER_MESSAGE]
        raise DatasetError(
            f"{path}: not a readable image ({reason}); the file is corrupt, truncated or not "
            "an image, re-extract the dataset"
        ) from error


def to_unit_float(image: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    raise DatasetError(f"{path}: unsupported pixel type {image.dtype}; save it as 8-bit PNG")


def box_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average `(H, W, 3)` over `factor` x `factor` blocks -> `(H/f, W/f, 3)`."""
    if factor == 1:
        return image
    height, width, channels = image.shape
    blocks = image.reshape(height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def check_pose(c2w: np.ndarray, where: str) -> None:
    """Finite in float32, and a rigid transform: a proper rotation and a [0 0 0 1] row."""
    with np.errstate(over="ignore"):  # what overflows float32 is reported just below
        single = c2w.astype(np.float32)
    if not np.all(np.isfinite(single)):
        raise DatasetError(f"{where}: the pose has NaN or infinite values (in float32); fix it")
    rotation = c2w[:3, :3]
    rigid = (
        np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6)
        and np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3)
        and np.linalg.det(rotation) > 0
    )
    if not rigid:
        raise DatasetError(f"{where}: the pose is not a rigid camera-to-world transform (its "
                           "rotation must be orthonormal with determinant +1); fix it")  # fmt: skip
