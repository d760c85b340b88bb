"""Loader for captures described by one `transforms.json` (instant-ngp's colmap2nerf,
nerfstudio's ns-process-data, Polycam / Record3D exports).

Camera keys (`fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`, `camera_angle_x`, `camera_model`,
`k1`..`k4`, `p1`, `p2`) may sit at the top level, in each frame, or both (a frame's own
win). Poses are OpenGL camera-to-world `transform_matrix`es; nerfstudio's
`applied_transform` (what it applied to COLMAP's world) is undone, so a capture read from
here or from its COLMAP model lands in the same place. Nerfstudio's `train_filenames` /
`val_filenames` / `test_filenames` give the splits when present.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tensorf.data import capture
from tensorf.data.blender import matrix_4x4, read_json_object
from tensorf.data.views import (
    DatasetError,
    Views,
    check_intrinsics,
    check_load_args,
    check_pose,
)
from tensorf.geometry.cameras import Intrinsics
from tensorf.geometry.distortion import Distortion

FILE = "transforms.json"
CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
               "camera_model", "k1", "k2", "k3", "k4", "p1", "p2", "is_fisheye")  # fmt: skip
# camera_model -> the lens model and which keys give its coefficients, in order.
CAMERA_MODELS = {
    "PINHOLE": None,
    "SIMPLE_PINHOLE": None,
    "OPENCV": ("opencv", ("k1", "k2", "p1", "p2", "k3")),
    "OPENCV_FISHEYE": ("fisheye", ("k1", "k2", "k3", "k4")),
}


available_splits = capture.available_splits


def load_views(
    dataset_path: Path | str,
    split: str,
    downscale: int = 1,
    max_views: int | None = None,
    shard: tuple[int, int] = (0, 1),
    drop_missing: bool = False,
) -> Views:
    """Load one split ("train", "test" or "all") of a transforms.json capture; frames
    whose image is missing are an error, or dropped with `drop_missing`."""
    check_load_args(downscale, max_views)
    root = Path(dataset_path)
    json_path = root / FILE
    meta = read_json_object(json_path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{json_path}: needs a non-empty list 'frames' of posed images")
    shared = {k: meta[k] for k in CAMERA_KEYS if k in meta}
    undo = _applied_transform(meta, json_path)
    parsed = [_frame(f, i, root, json_path, shared, undo) for i, f in enumerate(frames)]
    split_names = None
    if "train_filenames" in meta:
        split_names = {"train": _names(meta, "train_filenames", json_path)}
        test_key = "test_filenames" if "test_filenames" in meta else "val_filenames"
        split_names["test"] = _names(meta, test_key, json_path) if test_key in meta else []
    return capture.load(parsed, json_path, split, split_names, downscale, max_views, shard,
                        drop_missing)  # fmt: skip


def _frame(
    frame: Any, index: int, root: Path, json_path: Path, shared: dict, undo: np.ndarray
) -> capture.Frame:
    where = f"{json_path}: frames[{index}]"
    if not isinstance(frame, dict):
        raise DatasetError(f"{where} is a JSON {type(frame).__name__}, expected an object")
    name = frame.get("file_path")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{where}: needs 'file_path', the image's path relative to {root}")
    pose = matrix_4x4(frame.get("transform_matrix"))
    if pose is None:
        raise DatasetError(f"{where}: 'transform_matrix' must be 4 rows of 4 numbers")
    pose = undo @ pose
    check_pose(pose, where)
    camera = {**shared, **{k: frame[k] for k in CAMERA_KEYS if k in frame}}
    return capture.Frame(name, root / name, pose, _intrinsics(camera, where))


def _intrinsics(camera: dict, where: str) -> Intrinsics:
    for key, value in camera.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key not in ("camera_model", "is_fisheye") and not (number and math.isfinite(value)):
            raise DatasetError(f"{where}: '{key}' is {value!r}, expected a finite number")
    if "w" not in camera or "h" not in camera:
        raise DatasetError(f"{where}: intrinsics missing: needs the image size 'w' and 'h'")
    width, height = camera["w"], camera["h"]
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise DatasetError(f"{where}: image size {width}x{height} must be positive integers")
    if "fl_x" in camera:
        fx = camera["fl_x"]
    elif "camera_angle_x" in camera and 0 < camera["camera_angle_x"] < math.pi:
        fx = 0.5 * width / math.tan(0.5 * camera["camera_angle_x"])
    else:
        raise DatasetError(f"{where}: intrinsics missing: needs 'fl_x' (focal length in "
                           "pixels) or 'camera_angle_x' (field of view in radians)")  # fmt: skip
    fy = camera.get("fl_y", fx)
    if fx <= 0 or fy <= 0:
        raise DatasetError(f"{where}: focal lengths must be positive, got {fx} and {fy}")
    default_model = "OPENCV_FISHEYE" if camera.get("is_fisheye") else "OPENCV"
    model = camera.get("camera_model", default_model)
    if not isinstance(model, str) or model not in CAMERA_MODELS:
        raise DatasetError(f"{where}: unknown camera_model {model!r}; supported: "
                           f"{', '.join(CAMERA_MODELS)}")  # fmt: skip
    lens = None
    if CAMERA_MODELS[model] is not None:
        kind, keys = CAMERA_MODELS[model]
        coefficients = tuple(float(camera.get(k, 0.0)) for k in keys)
        lens = Distortion(kind, coefficients) if any(coefficients) else None
    cx, cy = camera.get("cx", width / 2), camera.get("cy", height / 2)
    intrinsics = Intrinsics(float(fx), float(fy), float(cx), float(cy), int(width),
                            int(height), lens)  # fmt: skip
    check_intrinsics(intrinsics, where)
    return intrinsics


def _applied_transform(meta: dict, json_path: Path) -> np.ndarray:
    """The inverse of nerfstudio's `applied_transform` (3 x 4, COLMAP world -> this file's),
    as (4, 4); the identity without one."""
    if "applied_transform" not in meta:
        return np.eye(4)
    rows = meta["applied_transform"]
    full = matrix_4x4(rows + [[0, 0, 0, 1]]) if isinstance(rows, list) else None
    if full is None or not np.all(np.isfinite(full)) or abs(np.linalg.det(full[:3, :3])) < 1e-9:
        raise DatasetError(f"{json_path}: 'applied_transform' must be 3 rows of 4 finite "
                           "numbers with an invertible rotation part")  # fmt: skip
    return np.linalg.inv(full)


def _names(meta: dict, key: str, json_path: Path) -> list[str]:
    names = meta[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{json_path}: '{key}' must be a list of image paths")
    return names
