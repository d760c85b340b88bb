"""Loader for scenes in the Blender (NeRF-synthetic) format.

A scene folder holds `transforms_<split>.json` files (`camera_angle_x` plus a list of
`frames`, each with a `file_path` and a 4x4 camera-to-world `transform_matrix`) and the
images they name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tensorf import safe_json
from tensorf.data.views import (
    DOWNLOAD_HINT,
    DatasetError,
    Views,
    box_downscale,
    check_image_memory,
    check_intrinsics,
    check_load_args,
    check_pose,
    read_image,
    spread_indices,
    to_unit_float,
)
from tensorf.geometry.cameras import Intrinsics


def available_splits(dataset_path: Path | str) -> list[str]:
    """Names of the splits that have a `transforms_<split>.json` in `dataset_path`, sorted."""
    path = Path(dataset_path)
    if not path.is_dir():
        return []
    prefix = "transforms_"
    return sorted(p.stem[len(prefix) :] for p in path.glob(f"{prefix}*.json") if p.is_file())


def load_views(
    dataset_path: Path | str,
    split: str,
    downscale: int = 1,
    max_views: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Views:
    """Load one split of a Blender-format scene.

    Args:
        dataset_path: the scene folder (the one holding `transforms_<split>.json`).
        split: e.g. "train" or "test".
        downscale: integer factor >= 1; images are box-averaged by it after compositing.
        max_views: if given, keep this many frames evenly spaced over the split.
        shard: (i, n) keeps every n-th of those frames from the i-th on: process i's
            share of the views in n-process training.

    Returns:
        Views with images `(n, H // downscale, W // downscale, 3)` and c2w `(n, 4, 4)`.

    Raises:
        DatasetError: for any problem with the files on disk.
        ValueError: for a `downscale` or `max_views` that is not a positive integer.
    """
    check_load_args(downscale, max_views)
    root = Path(dataset_path)
    json_path = _transforms_path(root, split)
    meta = read_json_object(json_path)
    camera_angle_x = _camera_angle_x(meta, json_path)
    frames = _frames(meta, json_path)

    # Every frame is checked, not just the chosen ones, so that a broken JSON entry is
    # reported the same way whatever max_views is.
    parsed = [_parse_frame(frame, index, json_path) for index, frame in enumerate(frames)]
    index, count = shard
    chosen = spread_indices(len(parsed), max_views)[index::count]
    if not chosen:
        raise DatasetError(f"{json_path}: too few frames to give each of {count} processes one")
    names = [parsed[i][0] for i in chosen]
    poses = [parsed[i][1] for i in chosen]

    images = _load_images(root, names, downscale)
    height, width = images.shape[1:3]
    intrinsics = Intrinsics.from_fov(camera_angle_x, width, height)
    check_intrinsics(intrinsics, f"{json_path}: 'camera_angle_x' {camera_angle_x:g}")
    return Views(
        images=images,
        c2w=np.stack(poses).astype(np.float32),
        intrinsics=intrinsics,
        names=tuple(names),
    )


def _transforms_path(root: Path, split: str) -> Path:
    json_path = root / f"transforms_{split}.json"
    if json_path.is_file():
        return json_path
    splits = available_splits(root)
    if splits:
        raise DatasetError(
            f"{json_path}: not found; splits in this folder are {', '.join(splits)}; "
            f"choose one of those or point --dataset-path at a scene with a '{split}' split"
        )
    # A common slip is pointing at nerf_synthetic/ itself rather than at one scene.
    scenes = sorted(p.name for p in root.iterdir() if (p / f"transforms_{split}.json").is_file())
    if scenes:
        hint = f"point --dataset-path at one of the scene folders inside it: {', '.join(scenes)}"
    else:
        hint = DOWNLOAD_HINT
    raise DatasetError(
        f"{json_path}: not found and the folder has no transforms_*.json at all; {hint}"
    )


def read_json_object(json_path: Path) -> dict[str, Any]:
    try:
        text = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"{json_path}: cannot be read as UTF-8 text ({error}); re-extract the dataset"
        ) from error
    try:
        meta = safe_json.loads(text)
    except ValueError as error:
        raise DatasetError(f"{json_path}: {error}; fix or re-extract the file") from None
    if not isinstance(meta, dict):
        raise DatasetError(
            f"{json_path}: top level is a JSON {type(meta).__name__}, expected an object "
            "with 'camera_angle_x' and 'frames'; re-extract the file"
        )
    return meta


def _camera_angle_x(meta: dict[str, Any], json_path: Path) -> float:
    if "camera_angle_x" not in meta:
        raise DatasetError(
            f"{json_path}: missing key 'camera_angle_x' (horizontal field of view in radians); "
            "add it or re-extract the file"
        )
    angle = meta["camera_angle_x"]
    # bool is an int subclass, and an angle of pi or more has no finite focal length.
    is_number = isinstance(angle, (int, float)) and not isinstance(angle, bool)
    if not is_number or not math.isfinite(angle) or not 0.0 < angle < math.pi:
        raise DatasetError(
            f"{json_path}: 'camera_angle_x' is {angle!r}, expected a finite number of radians "
            "in (0, pi); fix the value"
        )
    return float(angle)


def _frames(meta: dict[str, Any], json_path: Path) -> list[Any]:
    if "frames" not in meta:
        raise DatasetError(
            f"{json_path}: missing key 'frames' (the list of posed images); "
            "add it or re-extract the file"
        )
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise DatasetError(
            f"{json_path}: 'frames' is a JSON {type(frames).__name__}, expected a list of "
            "frame objects; fix the file"
        )
    if not frames:
        raise DatasetError(f"{json_path}: 'frames' is empty; the split needs at least one view")
    return frames


def _parse_frame(frame: Any, index: int, json_path: Path) -> tuple[str, np.ndarray]:
    where = f"{json_path}: frames[{index}]"
    if not isinstance(frame, dict):
        raise DatasetError(f"{where} is a JSON {type(frame).__name__}, expected an object")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise DatasetError(f"{where} is missing key '{key}'; add it or drop the frame")
    name = frame["file_path"]
    if not isinstance(name, str) or not name:
        raise DatasetError(
            f"{where}: 'file_path' is {name!r}, expected a non-empty string such as "
            "'./train/r_0'; fix the entry"
        )
    pose = matrix_4x4(frame["transform_matrix"])
    if pose is None:
        raise DatasetError(
            f"{where}: 'transform_matrix' must be 4 rows of 4 numbers (camera-to-world); "
            "fix the entry"
        )
    if not np.all(np.isfinite(pose)):
        raise DatasetError(
            f"{where}: 'transform_matrix' contains NaN or infinite values; fix the entry"
        )
    check_pose(pose, where)
    return name, pose


def matrix_4x4(value: Any) -> np.ndarray | None:
    """`value` as a `(4, 4)` float64 array, or None if it is not 4 lists of 4 numbers."""

    def is_number(x: Any) -> bool:
        # Checked by hand because np.asarray would quietly accept "1.0" or True.
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(value, list) or len(value) != 4:
        return None
    for row in value:
        if not isinstance(row, list) or len(row) != 4 or not all(is_number(x) for x in row):
            return None
    return np.array(value, dtype=np.float64)


def _image_path(root: Path, name: str) -> Path:
    path = root / name
    # The Blender exports list images without their extension.
    return path if path.suffix else path.with_name(path.name + ".png")


def _load_images(root: Path, names: Sequence[str], downscale: int) -> np.ndarray:
    """Read, composite and downscale the named images into `(n, H', W', 3)` float32."""
    out: np.ndarray | None = None
    first_path: Path | None = None
    full_size: tuple[int, int] = (0, 0)
    for i, name in enumerate(names):
        path = _image_path(root, name)
        rgb = _composite_on_white(read_image(path, "'file_path' in the transforms JSON"), path)
        size = (rgb.shape[0], rgb.shape[1])
        if out is None:
            _check_downscale(size, downscale, path)
            first_path, full_size = path, size
            # Preallocating avoids holding a list of images plus the stacked copy.
            shape = (len(names), size[0] // downscale, size[1] // downscale, 3)
            check_image_memory(len(names), shape[1], shape[2], path.parent)
            out = np.empty(shape, dtype=np.float32)
        elif size != full_size:
            raise DatasetError(
                f"{path}: image is {size[0]}x{size[1]} (HxW) but {first_path} is "
                f"{full_size[0]}x{full_size[1]}; all images in a split must have the same "
                "size, so resize it or re-extract the dataset"
            )
        out[i] = box_downscale(rgb, downscale)
    assert out is not None  # names is never empty: _frames rejects an empty list
    return out


def _composite_on_white(image: np.ndarray, path: Path) -> np.ndarray:
    """`(H, W, 2)` gray + alpha or `(H, W, 4)` RGBA -> `(H, W, 3)` float32 RGB on white.

    Images without alpha are refused: in the Blender format alpha is the object mask, and
    without it the background (white here, whatever it was when the image was saved)
    would silently be learned as part of the scene.
    """
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.ndim not in (2, 3) or channels not in (2, 4):
        kind = {1: "grayscale", 3: "RGB"}.get(channels, f"shape {image.shape}")
        raise DatasetError(
            f"{path}: {kind} image without an alpha channel; Blender scenes need RGBA PNGs "
            "(alpha = object mask), re-export or re-extract it with alpha"
        )
    pixels = to_unit_float(image, path)
    colour = pixels[:, :, :-1]
    if channels == 2:
        colour = np.repeat(colour, 3, axis=2)
    alpha = pixels[:, :, -1:]
    return colour * alpha + (1.0 - alpha)


def _check_downscale(size: tuple[int, int], downscale: int, path: Path) -> None:
    height, width = size
    if height % downscale == 0 and width % downscale == 0:
        return
    common = math.gcd(height, width)
    factors = [f for f in range(1, common + 1) if common % f == 0]
    raise DatasetError(
        f"{path}: image size {height}x{width} (HxW) is not divisible by downscale={downscale}; "
        f"use one of {', '.join(map(str, factors))}"
    )
