"""Loader for forward-facing captures in the LLFF format (NeRF's `nerf_llff_data`).

A scene folder holds `poses_bounds.npy`, an (N, 17) array: per image a row-major 3x5
matrix (camera-to-world rotation and translation with camera axes [down, right,
backwards], then the column [height, width, focal] of the full-resolution images)
followed by the near and far depth bounds; and the images, sorted by name in the same
order, in `images/` (full resolution) and/or `images_<N>/` (downscaled N times).

As in the official code the poses are turned into our [right, up, backwards] camera
axes, recentred on their average pose and scaled so that the nearest bound is at 1/0.75,
and every 8th image (0, 8, 16, ...) is the test split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from tensorf.data.resolution import FullSize
from tensorf.data.views import (
    DatasetError,
    Views,
    check_image_memory,
    check_intrinsics,
    check_load_args,
    read_image,
    spread_indices,
    to_unit_float,
)
from tensorf.geometry.cameras import Intrinsics, average_pose

POSES_FILE = "poses_bounds.npy"
HOLD_EVERY = 8  # every 8th image is held out for testing (NeRF / TensoRF protocol)
SPLITS = ("all", "test", "train")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The nearest bound ends up at 1 / NEAR_MARGIN, a little beyond NDC's near plane at 1.
NEAR_MARGIN = 0.75


def available_splits(dataset_path: Path | str) -> list[str]:
    return list(SPLITS)


def load_views(
    dataset_path: Path | str,
    split: str,
    downscale: int = 1,
    max_views: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Views:
    """Load one split ("train", "test" or "all") of an LLFF scene; see `tensorf.data`.

    `downscale` N reads `images_N/` when it exists and otherwise resizes the images of the
    largest folder; the focal length follows the images' size either way.
    """
    check_load_args(downscale, max_views)
    root = Path(dataset_path)
    if split not in SPLITS:
        raise DatasetError(
            f"{root}: LLFF scenes have the splits {', '.join(SPLITS)}, not '{split}'; "
            "choose one of those"
        )
    c2w, bounds, (full_h, full_w, focal) = _read_poses(root / POSES_FILE)
    full_camera = Intrinsics(focal, focal, 0.5 * full_w, 0.5 * full_h, int(full_w), int(full_h))
    check_intrinsics(full_camera, str(root / POSES_FILE))
    n = len(c2w)
    folder, factor = _image_folder(root, downscale)
    files = _image_files(folder, n, root / POSES_FILE)

    test = set(range(0, n, HOLD_EVERY))
    ids = {"all": range(n), "test": sorted(test), "train": sorted(set(range(n)) - test)}[split]
    ids = list(ids)
    if not ids:
        raise DatasetError(f"{root}: the '{split}' split is empty with {n} images")
    index, count = shard
    chosen = [ids[i] for i in spread_indices(len(ids), max_views)][index::count]
    if not chosen:
        raise DatasetError(f"{root}: too few '{split}' images to give each of {count} "
                           "processes one")  # fmt: skip

    scale = factor / downscale  # from the folder's images to the requested size
    images = _load_images([files[i] for i in chosen], scale)
    height, width = images.shape[1:3]
    _check_aspect(files[chosen[0]], (height, width), (full_h, full_w), root / POSES_FILE)
    intrinsics = Intrinsics(
        fx=focal * width / full_w, fy=focal * height / full_h,
        cx=0.5 * width, cy=0.5 * height, width=width, height=height,
    )  # fmt: skip
    c2w32 = c2w[chosen].astype(np.float32)
    if not np.isfinite(c2w32).all():
        raise DatasetError(f"{root / POSES_FILE}: poses overflow float32; fix the file")
    return Views(
        images=images,
        c2w=c2w32,
        intrinsics=intrinsics,
        names=tuple(f.name for f in (files[i] for i in chosen)),
        kind="forward-facing",
        depth_bounds=(float(bounds.min()), float(bounds.max())),
    )


def full_size(dataset_path: Path | str) -> FullSize:
    """The images' full size (poses_bounds.npy's) and the factors `load_views` reads: an
    images_N/ folder, or a resize of the largest one, which cannot be enlarged."""
    root = Path(dataset_path)
    _, _, (height, width, _) = _read_poses(root / POSES_FILE)
    smallest = _folders(root)[0][0]
    return FullSize(int(width), int(height), range(smallest, int(max(width, height)) + 1))


def _read_poses(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(N, 4, 4) recentred and rescaled camera-to-world in our axes, (N, 2) bounds in the
    same units, and the full-resolution (height, width, focal)."""
    fix = "re-run LLFF's imgs2poses.py (COLMAP) or re-extract the dataset"
    if not path.is_file():
        raise DatasetError(f"{path}: not found; an LLFF scene needs it next to images/; {fix}")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises several types for bad files
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise DatasetError(f"{path}: not a readable .npy array ({reason}); {fix}") from error
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] < 1:
        raise DatasetError(
            f"{path}: shape {array.shape}, expected (N, 17) (a 3x5 pose and 2 depth bounds "
            f"per image); {fix}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DatasetError(f"{path}: dtype {array.dtype}, expected real numbers; {fix}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        rows = sorted(set(np.argwhere(~np.isfinite(array))[:, 0].tolist()))
        raise DatasetError(f"{path}: NaN or infinite values in rows {rows[:5]}; {fix}")
    poses = array[:, :15].reshape(-1, 3, 5)
    bounds = array[:, 15:]
    height, width, focal = poses[0, :, 4]
    if min(height, width, focal) <= 0:
        raise DatasetError(
            f"{path}: image height, width and focal (column 4 of the 3x5 poses) must be "
            f"positive, got {height}, {width}, {focal}; {fix}"
        )
    if (bounds[:, 0] <= 0).any() or (bounds[:, 1] <= bounds[:, 0]).any():
        raise DatasetError(
            f"{path}: depth bounds (the last two columns) must satisfy 0 < near < far in "
            f"every row; {fix}"
        )
    # [down, right, backwards] -> [right, up, backwards]
    rotation = np.stack([poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]], -1)
    should_be_identity = np.einsum("nji,njk->nik", rotation, rotation)
    bad = np.abs(should_be_identity - np.eye(3)).max((1, 2)) > 1e-3
    bad |= np.linalg.det(rotation) < 0
    if bad.any():
        raise DatasetError(
            f"{path}: the rotations of rows {np.flatnonzero(bad)[:5].tolist()} are not proper "
            f"rotations (orthonormal, determinant +1); {fix}"
        )
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = rotation, poses[:, :, 3]
    c2w = np.linalg.inv(average_pose(c2w)) @ c2w
    scale = bounds.min() * NEAR_MARGIN
    c2w[:, :3, 3] /= scale
    return c2w, bounds / scale, (float(height), float(width), float(focal))


def _folder_factor(folder: Path) -> int | None:
    """1 for images/, N for images_N/, None for anything else."""
    if folder.name == "images":
        return 1
    match = re.fullmatch(r"images_(\d+)", folder.name)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _folders(root: Path) -> list[tuple[int, Path]]:
    """The image folders (factor, path), the largest images first."""
    folders = sorted(
        (factor, p) for p in root.iterdir() if p.is_dir() and (factor := _folder_factor(p))
    )
    if not folders:
        raise DatasetError(
            f"{root}: no image folder (images/ or images_N/ beside {POSES_FILE}); "
            "re-extract the dataset"
        )
    return folders


def _image_folder(root: Path, downscale: int) -> tuple[Path, int]:
    """The folder to read and its downscale factor: images_<downscale>/ (images/ for 1)
    if present, else the largest-resolution folder, which must not be smaller."""
    folders = _folders(root)
    for factor, folder in folders:
        if factor == downscale:
            return folder, factor
    factor, folder = folders[0]
    if factor > downscale:
        have = ", ".join(f"{p.name} (--downscale {f})" for f, p in folders)
        raise DatasetError(
            f"{root}: --downscale {downscale} needs images/ or images_N/ with N <= {downscale} "
            f"to downsize from, but the folders are {have}; choose one of those"
        )
    return folder, factor


def _image_files(folder: Path, n_poses: int, poses_path: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != n_poses:
        raise DatasetError(
            f"{folder}: {len(files)} images but {poses_path.name} has {n_poses} poses; each "
            "image needs one pose (in name order): remove extra files or re-run COLMAP"
        )
    return files


def _load_images(files: list[Path], scale: float) -> np.ndarray:
    """Read RGB images (all the same size), resized by `scale` -> (n, H', W', 3) float32."""
    out: np.ndarray | None = None
    first: tuple[Path, tuple[int, int]] | None = None
    for i, path in enumerate(files):
        pixels = read_image(path, f"its place in {path.parent}")
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise DatasetError(
                f"{path}: image of shape {pixels.shape}, expected RGB; re-export it as RGB"
            )
        size = pixels.shape[:2]
        if first is None:
            first = (path, size)
            target = (max(1, round(size[1] * scale)), max(1, round(size[0] * scale)))  # (W, H)
            check_image_memory(len(files), target[1], target[0], path.parent)
            out = np.empty((len(files), target[1], target[0], 3), np.float32)
        elif size != first[1]:
            raise DatasetError(
                f"{path}: image is {size[0]}x{size[1]} (HxW) but {first[0].name} is "
                f"{first[1][0]}x{first[1][1]}; all images of a scene must have the same size, "
                "so resize it or re-extract the dataset"
            )
        rgb = to_unit_float(pixels[..., :3], path)
        if scale != 1:
            # Lanczos, as the official loader: sharper than a box filter at any ratio.
            channels = [Image.fromarray(c).resize(target, Image.Resampling.LANCZOS)
                        for c in np.moveaxis(rgb, -1, 0)]  # fmt: skip
            rgb = np.clip(np.stack([np.asarray(c) for c in channels], -1), 0.0, 1.0)
        out[i] = rgb
    assert out is not None  # files is never empty: a split has at least one image
    return out


def _check_aspect(
    path: Path, size: tuple[int, int], full: tuple[float, float], poses_path: Path
) -> None:
    """The images must have the aspect ratio the poses were computed for (a rotated or
    cropped copy would silently get the wrong focal length)."""
    (height, width), (full_h, full_w) = size, full
    if abs(width / height - full_w / full_h) > 0.02 * full_w / full_h:
        raise DatasetError(
            f"{path}: image is {height}x{width} (HxW), not the aspect ratio of the "
            f"{full_h:.0f}x{full_w:.0f} images {poses_path.name} was made for; use the "
            "images the poses were computed from"
        )
