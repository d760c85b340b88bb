"""Loader for COLMAP reconstructions: a folder with `sparse/0/` (binary or text model)
and `images/`, read with pycolmap.

COLMAP's cameras look down +z with +y down (OpenCV); they are flipped to our OpenGL
convention. Test views are every 8th image in name order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tensorf.data import capture
from tensorf.data.colmap_binary import check_binary_model
from tensorf.data.views import (
    DatasetError,
    Views,
    check_intrinsics,
    check_load_args,
    check_pose,
)
from tensorf.geometry.cameras import Intrinsics
from tensorf.geometry.distortion import Distortion

MODEL_DIR = Path("sparse") / "0"
IMAGES_DIR = "images"
# COLMAP camera model -> (lens model or None, params -> fx, fy, cx, cy, coefficients).
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (None, lambda f, cx, cy: (f, f, cx, cy, ())),
    "PINHOLE": (None, lambda fx, fy, cx, cy: (fx, fy, cx, cy, ())),
    "SIMPLE_RADIAL": ("opencv", lambda f, cx, cy, k: (f, f, cx, cy, (k, 0, 0, 0, 0))),
    "RADIAL": ("opencv", lambda f, cx, cy, k1, k2: (f, f, cx, cy, (k1, k2, 0, 0, 0))),
    "OPENCV": ("opencv", lambda fx, fy, cx, cy, k1, k2, p1, p2: (fx, fy, cx, cy,
                                                                 (k1, k2, p1, p2, 0))),
    "OPENCV_FISHEYE": ("fisheye", lambda fx, fy, cx, cy, *k: (fx, fy, cx, cy, k)),
}  # fmt: skip
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
# COLMAP writes quaternions normalised to 17 digits; other tools write 6 or more.
QUATERNION_TOLERANCE = 1e-4


available_splits = capture.available_splits


def load_views(
    dataset_path: Path | str,
    split: str,
    downscale: int = 1,
    max_views: int | None = None,
    shard: tuple[int, int] = (0, 1),
    drop_missing: bool = False,
) -> Views:
    """Load one split ("train", "test" or "all") of a COLMAP capture."""
    import pycolmap  # imported here: only COLMAP scenes need it

    check_load_args(downscale, max_views)
    root = Path(dataset_path)
    model_dir = root / MODEL_DIR
    if not (root / IMAGES_DIR).is_dir():
        raise DatasetError(f"{root}: COLMAP model without an '{IMAGES_DIR}/' folder beside "
                           f"'{MODEL_DIR}'; put the photos there")  # fmt: skip
    check_binary_model(model_dir)
    try:
        model = pycolmap.Reconstruction(str(model_dir))
    except Exception as error:  # pycolmap raises RuntimeError/ValueError for bad files
        reason = " ".join(str(error).split())[:160]
        raise DatasetError(f"{model_dir}: not a readable COLMAP model ({reason}); re-export "
                           "it with COLMAP (File > Export model)") from error  # fmt: skip
    cameras = {cid: _intrinsics(cam, model_dir) for cid, cam in model.cameras.items()}
    images = sorted(model.images.values(), key=lambda image: image.name)
    if not images:
        raise DatasetError(f"{model_dir}: the model has no registered images")
    frames = []
    for image in images:
        norm = float(np.linalg.norm(image.cam_from_world().rotation.quat))
        if not abs(norm - 1.0) <= QUATERNION_TOLERANCE:
            # pycolmap would turn a zero quaternion into the identity rotation.
            raise DatasetError(f"{model_dir}: image '{image.name}' has a rotation quaternion of "
                               f"norm {norm:g}; COLMAP writes unit quaternions, so the model is "
                               "corrupt: re-export it")  # fmt: skip
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        c2w = np.linalg.inv(w2c) @ _OPENCV_TO_OPENGL
        check_pose(c2w, f"{model_dir}: image '{image.name}'")
        frames.append(capture.Frame(image.name, root / IMAGES_DIR / image.name, c2w,
                                    cameras[image.camera_id]))  # fmt: skip
    return capture.load(frames, model_dir, split, None, downscale, max_views, shard,
                        drop_missing)  # fmt: skip


def _intrinsics(camera, model_dir: Path) -> Intrinsics:
    name = camera.model.name
    if name not in CAMERA_MODELS:
        raise DatasetError(f"{model_dir}: camera {camera.camera_id} uses the {name} model, "
                           f"which is not supported ({', '.join(CAMERA_MODELS)} are); "
                           "undistort the images with colmap image_undistorter")  # fmt: skip
    params = [float(p) for p in camera.params]
    if not np.all(np.isfinite(np.float32(params))):
        raise DatasetError(f"{model_dir}: camera {camera.camera_id} has non-finite parameters")
    kind, unpack = CAMERA_MODELS[name]
    fx, fy, cx, cy, coefficients = unpack(*params)
    lens = Distortion(kind, coefficients) if kind and any(coefficients) else None
    intrinsics = Intrinsics(fx, fy, cx, cy, int(camera.width), int(camera.height), lens)
    check_intrinsics(intrinsics, f"{model_dir}: camera {camera.camera_id}")
    return intrinsics
