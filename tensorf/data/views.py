"""What every loader returns (`Views`), its error type, and the image reading they share.

Everything here is numpy only so that data loading never touches the accelerator.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np
from PIL import Image

from tensorf.errors import DatasetError
from tensorf.geometry.cameras import Intrinsics
from tensorf.geometry.distortion import distort, fisheye_theta, undistort, undistort_fisheye_angle

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
        with warnings.catch_warnings():
            # PIL warns of "decompression bombs" by pixel count; memory is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(path)  # reads the header only: the size, before decoding
        with header:
            width, height = header.size
            # A palette with a transparent entry is RGBA in disguise: keep its alpha.
            mode = "RGBA" if header.mode in ("P", "PA") and _transparent(header) else None
        check_image_memory(1, height, width, path)
        return np.asarray(iio.imread(path, plugin="pillow", mode=mode))
    except DatasetError:
        raise
    except Exception as error:  # readers raise many exception types for bad files
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:_MAX_READER_MESSAGE]
        raise DatasetError(
            f"{path}: not a readable image ({reason}); the file is corrupt, truncated or not "
            "an image, re-extract the dataset"
        ) from error


def _transparent(image: Image.Image) -> bool:
    return image.mode == "PA" or "transparency" in image.info


MAX_IMAGE_SIDE = 2**15  # no camera's photo is larger; a declared size beyond is corruption
# Bytes per pixel while a view is loaded: its float32 RGB in the split's array, plus the
# decoded 8-bit RGBA and its float32 copy while it is converted.
BYTES_PER_PIXEL = 3 * 4 + 4 + 4 * 4


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable; all of memory where unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_image_memory(n_views: int, height: int, width: int, source: Path) -> None:
    """Refuse images whose size is zero, absurd, or more than this machine's memory holds,
    before anything of that size is allocated (a corrupt header or a declared size)."""
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise DatasetError(f"{source}: image size {width}x{height} (WxH) is not a photo's "
                           f"(1 to {MAX_IMAGE_SIDE} pixels a side); fix the size or the "
                           "file")  # fmt: skip
    need = n_views * height * width * BYTES_PER_PIXEL
    have = available_memory()
    if need > have:
        raise DatasetError(f"{source}: {n_views} image(s) of {width}x{height} need about "
                           f"{need / 2**30:.1f} GiB but {have / 2**30:.1f} GiB is free; pass "
                           "--downscale or use fewer views")  # fmt: skip


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


# A real lens's focal length, in units of the image's longer side: from a 170-degree
# fisheye-like view (0.05) to a 0.6-degree telephoto (100). Beyond, a number is corrupt.
FOCAL_RANGE = (0.05, 100.0)
# How closely the lens model must map each undistorted pixel back onto itself (in
# normalised coordinates): Newton's method converges to 1e-12 on real lenses.
UNDISTORT_TOLERANCE = 1e-6
# How far a lens moves a pixel, as the ratio of its distance from the principal point
# after and before distortion (in angle, for a fisheye): real lenses stay well inside.
DISTORTION_RATIO = (0.5, 2.0)


def check_intrinsics(k: Intrinsics, where: str) -> None:
    """Checked like poses: finite in float32, a positive focal length a real lens has, the
    principal point on the image, and a distortion the undistortion inverts over the whole
    image (a coefficient far outside any lens folds the image over itself, and rays would
    silently go the wrong way)."""
    numbers = (k.fx, k.fy, k.cx, k.cy)
    with np.errstate(over="ignore"):  # what overflows float32 is reported just below
        finite = np.all(np.isfinite(np.float32(numbers)))
    if not finite:
        raise DatasetError(f"{where}: the intrinsics (fx, fy, cx, cy) {numbers} are not finite "
                           "in float32; fix them")  # fmt: skip
    side = max(k.width, k.height)
    low, high = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    if not (low <= k.fx <= high and low <= k.fy <= high):
        raise DatasetError(f"{where}: focal lengths {k.fx:g}, {k.fy:g} px are not a lens's for "
                           f"a {k.width}x{k.height} image (from {low:g} to {high:g} px); fix "
                           "the intrinsics")  # fmt: skip
    if not (0 <= k.cx <= k.width and 0 <= k.cy <= k.height):
        raise DatasetError(f"{where}: principal point ({k.cx:g}, {k.cy:g}) lies off the "
                           f"{k.width}x{k.height} image; fix the intrinsics")  # fmt: skip
    if k.distortion is not None and not _undistortion_converges(k):
        raise DatasetError(f"{where}: the {k.distortion.model} distortion coefficients "
                           f"{k.distortion.coefficients} are outside what a lens produces (the "
                           "undistortion does not converge over the image); fix them")  # fmt: skip


def _undistortion_converges(k: Intrinsics) -> bool:
    """Whether undistorting a grid over the whole image (edges and corners included) and
    distorting it again returns every point, with the lens keeping its orientation there (a
    lens that folds the image has two solutions, and Newton's method may find either)."""
    cols, rows = np.linspace(0.0, k.width, 17), np.linspace(0.0, k.height, 17)
    pixels = np.stack(np.meshgrid(cols, rows), -1).reshape(-1, 2)
    measured = (pixels - [k.cx, k.cy]) / [k.fx, k.fy]
    lens = k.distortion
    with np.errstate(all="ignore"):  # a diverging lens overflows: that is the answer
        if lens.model == "fisheye":
            # On the angle from the axis, which may pass 90 degrees (x / z may not).
            target = np.linalg.norm(measured, axis=-1)
            theta = undistort_fisheye_angle(measured, lens)
            back = fisheye_theta(theta, lens.coefficients)
            outwards = fisheye_theta(theta * 1.001 + 1e-9, lens.coefficients) - back
            inside = np.all((theta >= 0) & (theta < np.pi))
            ratio = target / np.maximum(theta, 1e-12)
        else:
            target = measured
            ideal = undistort(measured, lens)
            back = distort(ideal, lens)
            outwards = np.sum((distort(ideal * 1.001, lens) - back) * measured, axis=-1)
            inside = True
            ratio = np.linalg.norm(measured, axis=-1) / np.linalg.norm(ideal, axis=-1)
        away = np.linalg.norm(measured, axis=-1) > 1e-9  # the principal point stays put
        converged = np.all(np.abs(back - target) <= UNDISTORT_TOLERANCE)
        low, high = DISTORTION_RATIO
        plausible = np.all((ratio[away] >= low) & (ratio[away] <= high))
    return bool(inside and converged and np.all(outwards[away] > 0) and plausible)
