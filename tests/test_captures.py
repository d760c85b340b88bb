"""Phone / camera captures: lens distortion (against OpenCV), transforms.json and COLMAP
loaders (against a capture written here in both formats), placement, missing images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import trimesh
from cli_helpers import assert_one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiers import examples

from tensorf import experiment
from tensorf.config import override
from tensorf.data import DatasetError, data_dir, detect_format, load_views
from tensorf.data import views as views_module
from tensorf.data.placement import CAMERA_DISTANCE
from tensorf.geometry.cameras import Intrinsics, camera_directions, pixel_rays
from tensorf.geometry.distortion import Distortion, camera_frame_directions, distort, undistort
from tensorf.presets import PRESETS

# The fox's lens, and a strongly barrel-distorted wide-angle one.
FOX = (1375.52, 1374.49, 554.558, 965.268, 1080, 1920)
OPENCV_LENSES = [
    Distortion("opencv", (0.0578421, -0.0805099, -0.000980296, 0.00015575, 0.0)),
    Distortion("opencv", (-0.28, 0.07, 0.001, -0.0005, -0.008)),
]
FISHEYE = Distortion("fisheye", (0.05, -0.01, 0.002, -0.0003))
FISHEYE_CAMERA = (800.0, 800.0, 540.0, 960.0, 1080, 1920)  # ~145 degrees corner to corner
FOX_PSNR_FLOOR = 15.0
TIGHT = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)


def camera_matrix(fx, fy, cx, cy, *_):
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def whole_image(width: int, height: int) -> np.ndarray:
    """(n, 2) pixel positions over the whole image, corners and edges included."""
    cols, rows = np.meshgrid(np.linspace(0, width, 55), np.linspace(0, height, 97))
    return np.stack([cols, rows], -1).reshape(-1, 2)


def to_normalised(pixels, fx, fy, cx, cy, *_):
    return (pixels - [cx, cy]) / [fx, fy]


def to_pixels(xy, fx, fy, cx, cy, *_):
    return xy * [fx, fy] + [cx, cy]


@pytest.mark.parametrize("lens", OPENCV_LENSES)
def test_opencv_distortion_matches_opencv_and_inverts(lens):
    pixels = whole_image(*FOX[4:])
    xy = to_normalised(pixels, *FOX)
    ideal = undistort(xy, lens)
    oracle = cv2.undistortPoints(pixels.reshape(-1, 1, 2), camera_matrix(*FOX),
                                 np.array(lens.coefficients), None, None, None, TIGHT)  # fmt: skip
    assert np.abs(to_pixels(ideal, *FOX) - to_pixels(oracle.reshape(-1, 2), *FOX)).max() < 1e-3
    points = np.concatenate([ideal, np.ones_like(ideal[:, :1])], 1)
    projected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera_matrix(*FOX),
                                     np.array(lens.coefficients))  # fmt: skip
    assert np.abs(to_pixels(distort(ideal, lens), *FOX) - projected.reshape(-1, 2)).max() < 1e-3
    # Both ways round, to well below a pixel everywhere.
    assert np.abs(to_pixels(distort(ideal, lens), *FOX) - pixels).max() < 1e-3
    assert np.abs(to_pixels(undistort(distort(xy, lens), lens), *FOX) - pixels).max() < 1e-3


def test_fisheye_distortion_matches_opencv_and_inverts():
    pixels = whole_image(*FISHEYE_CAMERA[4:])
    xy = to_normalised(pixels, *FISHEYE_CAMERA)
    ideal = undistort(xy, FISHEYE)
    k, coefficients = camera_matrix(*FISHEYE_CAMERA), np.array(FISHEYE.coefficients)
    oracle = cv2.fisheye.undistortPoints(pixels.reshape(-1, 1, 2), k, coefficients,
                                         criteria=TIGHT).reshape(-1, 2)  # fmt: skip
    error = to_pixels(ideal, *FISHEYE_CAMERA) - to_pixels(oracle, *FISHEYE_CAMERA)
    assert np.abs(error).max() < 1e-3
    redistorted = cv2.fisheye.distortPoints(ideal.reshape(-1, 1, 2), k, coefficients)
    assert np.abs(redistorted.reshape(-1, 2) - pixels).max() < 1e-3
    assert np.abs(to_pixels(distort(ideal, FISHEYE), *FISHEYE_CAMERA) - pixels).max() < 1e-3
    # Rays beyond 90 degrees from the axis have no pinhole coordinates, but a direction.
    wide = Distortion("fisheye", (0.0, 0.0, 0.0, 0.0))
    direction = camera_frame_directions(np.array([[2.0, 0.0]]), wide)[0]
    assert math.degrees(math.atan2(direction[0], direction[2])) == pytest.approx(114.59, abs=0.01)


def test_camera_directions_reproject_to_their_pixel_centres():
    lens = OPENCV_LENSES[1]
    camera = Intrinsics(137.5, 137.4, 55.4, 96.5, 108, 192, lens)
    dirs = camera_directions(camera).reshape(-1, 3) * [1.0, -1.0, -1.0]  # OpenGL -> OpenCV
    projected, _ = cv2.projectPoints(dirs.astype(np.float64), np.zeros(3), np.zeros(3),
                                     camera_matrix(137.5, 137.4, 55.4, 96.5),
                                     np.array(lens.coefficients))  # fmt: skip
    cols, rows = np.meshgrid(np.arange(108) + 0.5, np.arange(192) + 0.5)
    centres = np.stack([cols, rows], -1).reshape(-1, 2)
    assert np.abs(projected.reshape(-1, 2) - centres).max() < 1e-3


# --- A capture written in both formats ------------------------------------------------

SIZE = (24, 16)  # width, height of every frame but the last, which is twice as large
LENS = (-0.12, 0.03, 0.001, -0.002)  # k1 k2 p1 p2 (OPENCV)
FOCUS = np.array([1.0, 2.0, 0.5])
# nerfstudio's applied_transform for COLMAP worlds: (x, y, z) -> (x, z, -y).
APPLIED = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


def capture_rig(n: int = 10) -> list[dict]:
    """Cameras in a COLMAP-like world (its 'up' is -y) around FOCUS, each with its own
    intrinsics; OpenCV camera-to-world (+z forward, +y down)."""
    frames = []
    for i in range(n):
        angle = 2 * math.pi * i / n
        position = FOCUS + np.array([4 * math.cos(angle), -0.8 - 0.1 * i, 4 * math.sin(angle)])
        forward = (FOCUS - position) / np.linalg.norm(FOCUS - position)
        right = np.cross(forward, [0.0, -1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
        scale = 2 if i == n - 1 else 1
        fx = (20.0 + i) * scale
        frames.append({
            "name": f"f_{i:02d}.png", "c2w": c2w, "size": (SIZE[0] * scale, SIZE[1] * scale),
            "k": (fx, fx * 1.01, (12.3 + 0.1 * i) * scale, 8.1 * scale), "colour": 10 * i + 5,
        })  # fmt: skip
    return frames


def write_images(root: Path, frames: list[dict]) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for f in frames:
        width, height = f["size"]
        iio.imwrite(root / "images" / f["name"], np.full((height, width, 3), f["colour"], np.uint8))


def write_transforms(root: Path, frames: list[dict]) -> Path:
    """nerfstudio flavour: per-frame intrinsics, camera_model at the top, applied_transform."""
    write_images(root, frames)
    entries = []
    for f in frames:
        gl = f["c2w"] @ np.diag([1.0, -1.0, -1.0, 1.0])
        fx, fy, cx, cy = f["k"]
        entries.append({
            "file_path": f"images/{f['name']}", "transform_matrix": (APPLIED @ gl).tolist(),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": f["size"][0], "h": f["size"][1],
            "k1": LENS[0], "k2": LENS[1], "p1": LENS[2], "p2": LENS[3], "sharpness": 3.0,
        })  # fmt: skip
    meta = {"camera_model": "OPENCV", "applied_transform": APPLIED[:3].tolist(), "frames": entries}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def quaternion(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (COLMAP's qvec)."""
    w = math.sqrt(max(0.0, 1.0 + np.trace(r))) / 2
    return np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w),
                     (r[1, 0] - r[0, 1]) / (4 * w)])  # fmt: skip


def write_colmap(root: Path, frames: list[dict], model: str = "OPENCV") -> Path:
    """A COLMAP text model: one camera per frame, world-to-camera poses, no points."""
    write_images(root, frames)
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    cameras, images = [], []
    for i, f in enumerate(frames, start=1):
        fx, fy, cx, cy = f["k"]
        params = [fx, fy, cx, cy, *LENS] if model == "OPENCV" else [fx, cx, cy, 0.1]
        cameras.append(f"{i} {model} {f['size'][0]} {f['size'][1]} " + " ".join(map(str, params)))
        w2c = np.linalg.inv(f["c2w"])
        q, t = quaternion(w2c[:3, :3]), w2c[:3, 3]
        pose = " ".join(f"{x:.17g}" for x in [*q, *t])
        images.append(f"{i} {pose} {i} {f['name']}\n\n")  # an empty line of 2D points
    (sparse / "cameras.txt").write_text("\n".join(cameras) + "\n")
    (sparse / "images.txt").write_text("".join(images))
    (sparse / "points3D.txt").write_text("")
    return root


@pytest.fixture(scope="module")
def rig() -> list[dict]:
    return capture_rig()


@pytest.fixture(scope="module")
def both_formats(rig, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("capture")
    return write_transforms(root / "ns", rig), write_colmap(root / "colmap", rig)


def test_both_formats_load_to_the_same_cameras(both_formats):
    transforms, colmap = both_formats
    assert (detect_format(transforms), detect_format(colmap)) == ("transforms", "colmap")
    a, b = load_views(transforms, "all"), load_views(colmap, "all")
    assert a.kind == b.kind == "capture" and a.names[0] == "images/f_00.png"
    np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-5)
    for i in range(a.n_views):
        ka, kb = a.camera(i), b.camera(i)
        assert ka.distortion == kb.distortion and ka.distortion.model == "opencv"
        np.testing.assert_allclose([ka.fx, ka.fy, ka.cx, ka.cy], [kb.fx, kb.fy, kb.cx, kb.cy])
    for key in ("centre", "scale", "rotation"):
        np.testing.assert_allclose(a.placement[key], b.placement[key], atol=1e-6)


@pytest.mark.parametrize("fmt", [0, 1])
def test_rays_hit_known_points_at_their_pixels(both_formats, rig, fmt):
    """Points on each true camera's ray through a pixel centre (undistorted by OpenCV) lie
    on our ray through that pixel, in the placed world; the large last frame was resized."""
    views = load_views(both_formats[fmt], "all")
    place = views.placement
    rotation, centre, scale = np.array(place["rotation"]), np.array(place["centre"]), place["scale"]
    assert views.images.shape[1:3] == (SIZE[1], SIZE[0])
    rng = np.random.default_rng(0)
    for i, frame in enumerate(rig):
        factor = frame["size"][0] / SIZE[0]
        assert views.images[i].mean() * 255 == pytest.approx(frame["colour"], abs=0.6)
        cols, rows = rng.integers(0, SIZE[0], 20), rng.integers(0, SIZE[1], 20)
        original = np.stack([cols + 0.5, rows + 0.5], -1) * factor  # in the frame's own pixels
        fx, fy, cx, cy = frame["k"]
        ideal = cv2.undistortPoints(original.reshape(-1, 1, 2), camera_matrix(fx, fy, cx, cy),
                                    np.array([*LENS, 0.0]), None, None, None, TIGHT)  # fmt: skip
        dirs = np.concatenate([ideal.reshape(-1, 2), np.ones((20, 1))], 1)
        depth = rng.uniform(1.0, 6.0, (20, 1))
        world = dirs * depth @ frame["c2w"][:3, :3].T + frame["c2w"][:3, 3]
        placed = scale * (world - centre) @ rotation.T
        origins, directions = (np.asarray(x, np.float64) for x in pixel_rays(
            np.asarray(views.c2w[i]), cols, rows, views.camera(i)))  # fmt: skip
        offset = placed - origins
        along = np.sum(offset * directions, -1, keepdims=True)
        assert (along > 0).all()
        assert np.linalg.norm(offset - along * directions, axis=-1).max() < 1e-4 * scale * 6


def test_placement_centres_the_focus_with_z_up(both_formats, rig):
    views = load_views(both_formats[1], "all")
    positions = views.c2w[:, :3, 3]
    # Up (-y in the capture's world) is +z, the focus is the origin, the median camera
    # distance is CAMERA_DISTANCE.
    assert np.median(np.linalg.norm(positions, axis=-1)) == pytest.approx(CAMERA_DISTANCE, rel=1e-5)
    up = views.c2w[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-6)
    forward = -views.c2w[:, :3, 2]
    miss = positions - np.sum(positions * forward, -1, keepdims=True) * forward
    assert np.linalg.norm(miss, axis=-1).max() < 1e-4  # every axis passes the origin
    # Every split is placed alike; every 8th frame is held out.
    test, train = load_views(both_formats[1], "test"), load_views(both_formats[1], "train")
    assert test.placement == train.placement == views.placement
    assert test.names == ("f_00.png", "f_08.png") and len(train.names) == len(rig) - 2


def test_nerfstudio_split_lists(rig, tmp_path):
    root = write_transforms(tmp_path, rig)
    meta = json.loads((root / "transforms.json").read_text())
    meta["train_filenames"] = [f"images/{f['name']}" for f in rig[:7]]
    meta["val_filenames"] = [f"./images/{f['name']}" for f in rig[7:]]
    (root / "transforms.json").write_text(json.dumps(meta))
    assert len(load_views(root, "train").names) == 7
    assert load_views(root, "test").names == tuple(f"images/{f['name']}" for f in rig[7:])


# --- Missing images and bad input -----------------------------------------------------


def test_missing_images_are_an_error_or_dropped(rig, tmp_path, capsys):
    root = write_transforms(tmp_path, rig)
    for f in rig[3:5]:
        (root / "images" / f["name"]).unlink()
    with pytest.raises(DatasetError) as error:
        load_views(root, "train")
    message = str(error.value)
    assert "2 of 10 frames" in message and "f_03.png" in message
    assert "--drop-missing-images" in message and "\n" not in message
    views = load_views(root, "all", drop_missing=True)
    assert len(views.names) == 8 and "images/f_03.png" not in views.names
    assert "dropped 2 of 10 frames" in capsys.readouterr().err
    load_views(root, "test", drop_missing=True)  # another split: said once is enough
    assert "dropped" not in capsys.readouterr().err
    # The placement still comes from every frame's pose.
    assert views.placement == load_views(write_transforms(tmp_path / "full", rig), "all").placement


def _edit_json(key_path, value):
    def edit(meta):
        target = meta
        for key in key_path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[key_path[-1]]
        else:
            target[key_path[-1]] = value
    return edit


_DELETE = object()
TRANSFORMS_CASES = {
    "unknown_model": (_edit_json(["camera_model"], "EQUIRECTANGULAR"), "unknown camera_model"),
    "no_focal": (lambda m: [f.pop("fl_x") for f in m["frames"]], "intrinsics missing"),
    "no_size": (lambda m: [f.pop("w") for f in m["frames"]], "intrinsics missing"),
    "nan_pose": (_edit_json(["frames", 2, "transform_matrix", 0, 3], float("nan")), "NaN"),
    "huge_pose": (_edit_json(["frames", 2, "transform_matrix", 0, 3], 1e300), "float32"),
    "scaled_pose": (lambda m: m["frames"][1].update(
        transform_matrix=(2 * np.array(m["frames"][1]["transform_matrix"])).tolist()), "rigid"),
    "bad_focal": (_edit_json(["frames", 0, "fl_x"], "20"), "finite number"),
    "bad_applied": (_edit_json(["applied_transform"], [[1, 0]]), "applied_transform"),
    "no_frames": (_edit_json(["frames"], []), "frames"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TRANSFORMS_CASES))
def test_bad_transforms_json_is_one_line(rig, tmp_path, case):
    root = write_transforms(tmp_path, rig)
    meta = json.loads((root / "transforms.json").read_text())
    edit, fragment = TRANSFORMS_CASES[case]
    edit(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=fragment) as error:
        load_views(root, "train")
    assert "\n" not in str(error.value) and "transforms.json" in str(error.value)


def test_bad_colmap_models_are_one_line(rig, tmp_path):
    root = write_colmap(tmp_path / "fov", rig, model="SIMPLE_RADIAL")
    assert load_views(root, "all").intrinsics.distortion.coefficients[0] == 0.1
    fov = write_colmap(tmp_path / "unsupported", rig)
    text = (fov / "sparse/0/cameras.txt").read_text().splitlines()
    text[0] = f"1 FOV {SIZE[0] * 1} {SIZE[1]} 20 20 12 8 0.5"
    (fov / "sparse/0/cameras.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match="FOV model, which is not supported"):
        load_views(fov, "all")
    no_images = write_colmap(tmp_path / "no_images", rig)
    for path in (no_images / "images").iterdir():
        path.unlink()
    (no_images / "images").rmdir()
    with pytest.raises(DatasetError, match="without an 'images/' folder"):
        load_views(no_images, "all")
    garbage = write_colmap(tmp_path / "garbage", rig)
    (garbage / "sparse/0/images.txt").write_text("1 2 3\n\n")
    with pytest.raises(DatasetError, match="COLMAP model") as error:
        load_views(garbage, "all")
    assert "\n" not in str(error.value)


def test_missing_images_from_the_command_line(rig, tmp_path):
    root = write_transforms(tmp_path / "scene", rig)
    (root / "images" / rig[0]["name"]).unlink()
    result = run_cli("train.py", "unbounded-quick", "--dataset-path", str(root), "--run-dir",
                     str(tmp_path / "run"), timeout=120)  # fmt: skip
    assert_one_line_error(result, "1 of 10 frames", "--drop-missing-images")
    assert not (tmp_path / "run").exists()


def test_fox_needs_the_missing_image_option():
    fox = data_dir() / "nerf" / "fox"
    if not (fox / "transforms.json").is_file():
        pytest.skip(f"fox data not found at {fox}")
    with pytest.raises(DatasetError, match="17 of 67 frames"):
        load_views(fox, "train", downscale=8)
    views = load_views(fox, "test", downscale=8, drop_missing=True)
    assert views.n_views == 7 and views.images.shape[1:] == (240, 135, 3)
    assert views.intrinsics.distortion.model == "opencv"


@pytest.mark.slow
def test_fox_unbounded_quick_run(tmp_path):
    """A short unbounded-quick run on the real fox capture, then its orbit video (at an odd
    width, which the encoder pads) and a mesh of the inner box, from the command line."""
    fox = data_dir() / "nerf" / "fox"
    if not (fox / "transforms.json").is_file():
        pytest.skip(f"fox data not found at {fox}")
    cfg = override(
        PRESETS["unbounded-quick"][1], dataset_path=fox, run_dir=tmp_path / "fox",
        drop_missing_images=True, n_iters=400, grid_init=48, grid_final=96,
        upsample_steps=(200,), mask_steps=(200,), checkpoint_every=400, log_every=100,
    )  # fmt: skip
    metrics = experiment.train(cfg)
    print(f"fox: PSNR {metrics['psnr']:.2f} SSIM {metrics['ssim']:.4f}, "
          f"{metrics['load_seconds']:.1f} s loading images")  # fmt: skip
    assert metrics["n_views"] == 7 and metrics["psnr"] >= FOX_PSNR_FLOOR
    video = tmp_path / "orbit.mp4"
    result = run_cli("render_360.py", "--run-dir", str(cfg.run.run_dir), "--out", str(video),
                     "--frames", "3", "--width", "67", "--no-depth")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    frames = np.stack(list(iio.imiter(video, plugin="FFMPEG")))
    assert frames.shape == (3, 120, 68, 3)  # 67 x 119 padded to even sizes
    mesh = tmp_path / "fox.ply"
    result = run_cli("-m", "tensorf.export_mesh", "--run-dir", str(cfg.run.run_dir), "--out",
                     str(mesh), "--resolution", "64")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.abs(trimesh.load(mesh).vertices).max() <= 1.0 + 1e-5


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
_number = st.floats() | st.integers(-(10**6), 10**6) | _json


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top=st.dictionaries(st.sampled_from(["fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "p2",
                                            "camera_angle_x", "camera_model", "applied_transform",
                                            "train_filenames"]), _number, max_size=4),
       frame=st.dictionaries(st.sampled_from(["file_path", "transform_matrix", "fl_x", "w",
                                              "camera_model", "k4"]), _number, max_size=3),
       index=st.integers(0, 9))  # fmt: skip
def test_fuzzed_transforms_json_loads_or_raises_dataset_error(fuzz_capture, top, frame, index):
    """Random values for the camera keys, at the top or in a frame: loaded, or one line."""
    meta = json.loads(fuzz_capture["text"])
    meta.update(top)
    meta["frames"][index].update(frame)
    (fuzz_capture["root"] / "transforms.json").write_text(json.dumps(meta))
    try:
        views = load_views(fuzz_capture["root"], "all")
    except DatasetError as error:
        assert "\n" not in str(error)
    else:
        assert np.isfinite(views.c2w).all() and np.isfinite(views.images).all()


@pytest.fixture(scope="module")
def fuzz_capture(rig, tmp_path_factory) -> dict:
    root = write_transforms(tmp_path_factory.mktemp("fuzz") / "ns", rig)
    return {"root": root, "text": (root / "transforms.json").read_text()}


def test_memory_is_checked_for_the_images_as_kept(both_formats, monkeypatch):
    """Photos are read one at a time and kept downscaled: a capture whose full-size photos
    would not all fit in memory, but whose downscaled ones do, loads; one that does not fit
    even downscaled is refused before anything is allocated."""
    transforms, _ = both_formats
    full = load_views(transforms, "all")
    n, height, width = full.images.shape[:3]
    per_pixel = views_module.BYTES_PER_PIXEL
    # Room for every photo at a quarter of its area, and for the largest photo at full
    # size (frames of other sizes are resized to the first's): not for all of them.
    largest = max(np.prod(iio.improps(p).shape[:2]) for p in (transforms / "images").iterdir())
    room = int(max(n * height * width // 4, largest)) * per_pixel
    assert n * height * width * per_pixel > room
    monkeypatch.setattr(views_module, "available_memory", lambda: room)
    assert load_views(transforms, "all", downscale=2).images.shape[0] == n
    with pytest.raises(DatasetError, match="GiB but"):
        load_views(transforms, "all")
