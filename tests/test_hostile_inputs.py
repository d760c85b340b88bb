"""Reliability, round 3 (issue 32), inputs: JSON that parses badly in ways other than a
syntax error, declared image sizes that are zero or absurd, images larger than memory,
grey + alpha and palette + transparency PNGs."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from synthetic import write_llff_scene
from test_captures import capture_rig, write_colmap, write_transforms
from test_hostile_outputs import one_line_exit

from tensorf import safe_json
from tensorf.data import DatasetError, load_views, views
from tensorf.evaluate import EvaluateArgs, evaluate_run
from tensorf.loop import monitor
from tensorf.train import checkpoint
from tensorf.train.checkpoint import CheckpointError


def hostile_json() -> Iterator[tuple[str, str]]:
    """(what, JSON text of a value) that `json.loads` takes but nothing after it can."""
    yield "deep nesting", "[" * 100_000 + "]" * 100_000
    yield "a 5000-digit integer", "1" + "0" * 5000
    yield "an integer past int64", str(2**64)
    yield "a number past float64", "1e400"
    yield "a negative one", "-1e999"


def with_value(text: str, key: str, value: str) -> str:
    """JSON text with the first value of `key` replaced by `value` (verbatim)."""
    edited, count = re.subn(rf'("{key}":\s*)[^,}}\]]+', lambda m: m.group(1) + value, text,
                            count=1)  # fmt: skip
    assert count == 1, key
    return edited


def test_safe_json_refuses_each_kind_with_a_reason():
    for what, value in hostile_json():
        with pytest.raises(ValueError, match="nested too deeply|out of range") as error:
            safe_json.loads(value)
        assert len(str(error.value)) < 100, what
    # What json.loads takes and is fine stays fine: NaN (checked where used), big floats.
    assert safe_json.loads('{"a": [1, -2.5e300, 9223372036854775807]}') == {
        "a": [1, -2.5e300, 2**63 - 1]
    }
    assert np.isnan(safe_json.loads("NaN"))


def test_hostile_json_in_a_dataset_is_one_line(tmp_path):
    rig = capture_rig()
    capture = write_transforms(tmp_path / "capture", rig)
    text = (capture / "transforms.json").read_text()
    blender = tmp_path / "blender"
    blender.mkdir()
    blender_text = json.dumps({"camera_angle_x": 0.7, "frames": []})
    for what, value in hostile_json():
        for key in ("w", "fl_x", "cx"):
            (capture / "transforms.json").write_text(with_value(text, key, value))
            with pytest.raises(DatasetError, match="transforms.json: ") as error:
                load_views(capture, "train")
            assert "re-extract" in str(error.value), (what, key)
        (blender / "transforms_train.json").write_text(
            with_value(blender_text, "camera_angle_x", value)
        )
        with pytest.raises(DatasetError, match="transforms_train.json: "):
            load_views(blender, "train")


def test_hostile_json_in_a_run_directory_is_one_line(sphere_run, tmp_path):
    cfg, _ = sphere_run
    run = tmp_path / "run"
    run.mkdir()
    config = (cfg.run.run_dir / checkpoint.CONFIG_FILE).read_text()
    cameras = (cfg.run.run_dir / checkpoint.CAMERAS_FILE).read_text()
    for what, value in hostile_json():
        (run / checkpoint.CONFIG_FILE).write_text(with_value(config, "batch_size", value))
        with pytest.raises(CheckpointError, match="config.json: corrupt"):
            checkpoint.load_config(run)
        (run / checkpoint.CAMERAS_FILE).write_text(with_value(cameras, "width", value))
        with pytest.raises(CheckpointError, match="cameras.json: corrupt"):
            checkpoint.load_cameras(run)
        # log.jsonl: an unreadable line is dropped on resume like a half-written one.
        log = run / monitor.LOG_FILE
        log.write_text(f'{{"step": 1}}\n{{"step": {value}}}\n{{"step": 2}}\n{value}\n'
                       '{"step": "3"}\n{"step": [1]}\n{"step": true}\n')
        monitor.JsonLog(log, 2)
        assert log.read_text() == '{"step": 1}\n{"step": 2}\n', what


def test_declared_image_sizes_are_checked_before_allocating(tmp_path, monkeypatch):
    rig = capture_rig()
    root = write_transforms(tmp_path / "capture", rig)
    meta = json.loads((root / "transforms.json").read_text())

    def allocating(*args, **kwargs):
        raise AssertionError("allocated before the size was checked")

    for w, h, says in ((0, 16, "positive integers"), (10**7, 16, "not a photo's"),
                       (30000, 20000, "GiB but")):  # fmt: skip
        for frame in meta["frames"]:  # a lens that fits the size: only the size is wrong
            frame.update(w=w, h=h, fl_x=w or 1, fl_y=w or 1, cx=w / 2, cy=h / 2)
        (root / "transforms.json").write_text(json.dumps(meta))
        with monkeypatch.context() as patch:
            patch.setattr(views, "available_memory", lambda: 2**30)
            patch.setattr(np, "empty", allocating)
            with pytest.raises(DatasetError, match=says):
                load_views(root, "train")


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims `width` x `height` (its IHDR rewritten, CRC and all):
    what a corrupt or hostile file looks like to a reader before it decodes."""
    iio.imwrite(path, np.zeros((1, 1, 3), np.uint8))
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(data[start : start + 17]))
    path.write_bytes(bytes(data))
    return path


def test_an_image_larger_than_memory_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(views, "available_memory", lambda: 2**30)
    monkeypatch.setattr(views.iio, "imread", lambda *a, **k: pytest.fail("decoded"))
    for width, height, says in ((12000, 12000, "need about 4.3 GiB but 1.0 GiB is free"),
                                (40000, 10, "not a photo's")):  # fmt: skip
        path = png_claiming(tmp_path / f"{width}.png", width, height)
        with pytest.raises(DatasetError, match=says):
            views.read_image(path, "a test")


def test_grey_alpha_and_palette_pngs(tmp_path):
    rig = capture_rig()
    root = write_transforms(tmp_path / "capture", rig)
    grey = np.full((16, 24), rig[1]["colour"], np.uint8)
    iio.imwrite(root / "images" / rig[1]["name"], np.stack([grey, grey // 2], -1))  # LA
    loaded = load_views(root, "all")
    index = loaded.names.index(f"images/{rig[1]['name']}")
    np.testing.assert_allclose(loaded.images[index], rig[1]["colour"] / 255, atol=1e-6)
    # A palette PNG with one transparent entry, in a Blender scene (alpha = object mask).
    scene = tmp_path / "blender"
    scene.mkdir()
    frame = {"file_path": "./r_0", "transform_matrix": np.eye(4).tolist()}
    (scene / "transforms_train.json").write_text(
        json.dumps({"camera_angle_x": 0.7, "frames": [frame]})
    )
    palette = Image.new("P", (8, 6))
    palette.putpalette([200, 40, 10] + [0, 0, 0] * 255)  # entry 0 red; entry 1 transparent
    pixels = np.zeros((6, 8), np.uint8)
    pixels[:, 4:] = 1
    palette.putdata(pixels.ravel().tolist())
    palette.save(scene / "r_0.png", transparency=1)
    image = load_views(scene, "train").images[0]
    np.testing.assert_allclose(image[:, :4], np.broadcast_to([200 / 255, 40 / 255, 10 / 255],
                                                             (6, 4, 3)), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(image[:, 4:], 1.0)  # transparent: white background


def hostile_intrinsics() -> Iterator[tuple[str, dict, str]]:
    """(what, transforms.json keys for one frame, what the error says): intrinsics no lens
    has, each of which trained to exit 0 or to NaN steps before."""
    yield "negative focal", {"fl_x": -20.0}, "focal lengths"
    yield "enormous focal", {"fl_x": 1e7}, "focal lengths"
    yield "focal past float32", {"fl_x": 1e39}, "not finite in float32"
    yield "principal point far outside", {"cx": 1e4}, "principal point"
    yield "principal point negative", {"cy": -30.0}, "principal point"
    yield "k1 far outside any lens", {"k1": 50.0}, "distortion coefficients"
    yield "a lens that folds the image", {"k1": -3.0}, "distortion coefficients"
    yield "fisheye k1 far outside", {"camera_model": "OPENCV_FISHEYE", "k1": 20.0}, "distortion"
    yield "fisheye that folds", {"camera_model": "OPENCV_FISHEYE", "k1": -2.0}, "distortion"


def test_intrinsics_no_lens_has_are_one_line(tmp_path):
    rig = capture_rig()
    root = write_transforms(tmp_path / "capture", rig)
    meta = json.loads((root / "transforms.json").read_text())
    assert load_views(root, "all").n_views == len(rig)  # the rig itself is a real lens
    for what, keys, says in hostile_intrinsics():
        edited = json.loads(json.dumps(meta))
        edited["frames"][3].update(keys)
        if "camera_model" in keys:
            edited["camera_model"] = keys["camera_model"]
        (root / "transforms.json").write_text(json.dumps(edited))
        with pytest.raises(DatasetError, match=says) as error:
            load_views(root, "train")
        assert "frames[3]" in str(error.value), what
    # A Blender scene's field of view: a tiny angle is an enormous focal length.
    scene = tmp_path / "blender"
    scene.mkdir()
    iio.imwrite(scene / "r_0.png", np.full((6, 8, 4), 255, np.uint8))
    frame = {"file_path": "./r_0", "transform_matrix": np.eye(4).tolist()}
    for angle, ok in ((0.7, True), (1e-6, False)):
        meta = {"camera_angle_x": angle, "frames": [frame]}
        (scene / "transforms_train.json").write_text(json.dumps(meta))
        if ok:
            load_views(scene, "train")
            continue
        with pytest.raises(DatasetError, match="camera_angle_x' 1e-06: focal lengths"):
            load_views(scene, "train")


def test_colmap_cameras_and_quaternions_no_model_has_are_one_line(tmp_path):
    rig = capture_rig()
    root = write_colmap(tmp_path / "colmap", rig)
    images = (root / "sparse/0/images.txt").read_text().split("\n")
    cameras = (root / "sparse/0/cameras.txt").read_text().split("\n")

    def quaternion_times(factor: float) -> str:
        fields = images[2].split()
        fields[1:5] = [repr(factor * float(x)) for x in fields[1:5]]
        return "\n".join([images[0], images[1], " ".join(fields), *images[3:]])

    def focal(value: float) -> str:
        fields = cameras[0].split()
        fields[4] = repr(value)
        return "\n".join([" ".join(fields), *cameras[1:]])

    cases = (("images.txt", quaternion_times(0.0), "norm 0"),
             ("images.txt", quaternion_times(2.0), "norm 2"),
             ("cameras.txt", focal(-20.0), "focal lengths"),
             ("cameras.txt", focal(1e9), "focal lengths"))  # fmt: skip
    for name, text, says in cases:
        fresh = write_colmap(tmp_path / f"c{len(list(tmp_path.iterdir()))}", rig)
        (fresh / "sparse/0" / name).write_text(text)
        with pytest.raises(DatasetError, match=says) as error:
            load_views(fresh, "all")
        assert "sparse/0" in str(error.value)


def test_evaluating_on_a_scene_of_another_kind_is_refused(sphere_run, tmp_path, capsys):
    cfg, _ = sphere_run
    scene = write_llff_scene(tmp_path / "llff")
    args = EvaluateArgs(run_dir=cfg.run.run_dir, dataset_path=scene.root, save_renders=False)
    message = one_line_exit(lambda: evaluate_run(args), capsys)
    assert "holds a forward-facing scene" in message and "trained on an object" in message


def binary_colmap(root: Path) -> Path:
    """The capture's COLMAP model as binary files, with one 3D point (the text model has
    none; its track is empty, as its images have no 2D points), so every record kind is
    present."""
    import pycolmap

    write_colmap(root, capture_rig())
    model = root / "sparse/0"
    pycolmap.Reconstruction(str(model)).write_binary(str(model))
    for name in ("cameras.txt", "images.txt", "points3D.txt"):
        (model / name).unlink()
    point = struct.pack("<Q3d3Bd", 1, 0.5, 0.25, 2.0, 10, 20, 30, 0.5)
    track = struct.pack("<Q", 0)
    (model / "points3D.bin").write_bytes(struct.pack("<Q", 1) + point + track)
    return root


def corrupt_colmap_models() -> Iterator[tuple[str, str, Callable[[bytes], bytes], str]]:
    """(what, file, corruption of its bytes, what the error says)."""

    def count(value: int) -> Callable[[bytes], bytes]:
        return lambda data: struct.pack("<Q", value) + data[8:]

    def at(offset: int, fmt: str, value: int) -> Callable[[bytes], bytes]:
        end = offset + struct.calcsize(fmt)
        return lambda data: data[:offset] + struct.pack(fmt, value) + data[end:]

    yield "camera count", "cameras.bin", count(2**40), "states 1099511627776 cameras"
    yield "camera model", "cameras.bin", at(12, "<i", 99), "camera model 99"
    yield "truncated cameras", "cameras.bin", lambda d: d[:-5], "8 camera parameters"
    yield "truncated images", "images.bin", lambda d: d[:-2], "ends inside a record"
    yield "image count", "images.bin", count(2**33), "images, more than"
    yield ("name without end", "images.bin",
           lambda d: struct.pack("<Q", 1) + d[8 : 8 + 64 + 3] + b"x" * 100,
           "ends inside an image name")  # fmt: skip
    points2d = 8 + 64 + len("f_00.png") + 1
    yield "2D point count", "images.bin", at(points2d, "<Q", 2**50), "2D points"
    yield "point count", "points3D.bin", count(2**45), "3D points"
    yield "track length", "points3D.bin", at(8 + 43, "<Q", 2**40), "track elements"
    yield "trailing bytes", "points3D.bin", lambda d: d + b"\0" * 7, "7 bytes after"


def test_corrupt_colmap_binary_counts_are_refused_before_pycolmap_reads(tmp_path,
                                                                        monkeypatch):  # fmt: skip
    import pycolmap

    good = binary_colmap(tmp_path / "good")
    assert load_views(good, "all").n_views == len(capture_rig())
    real = pycolmap.Reconstruction
    monkeypatch.setattr(pycolmap, "Reconstruction", lambda *a: pytest.fail("pycolmap read it"))
    for what, name, corrupt, says in corrupt_colmap_models():
        root = tmp_path / what.replace(" ", "_")
        shutil.copytree(good, root)
        path = root / "sparse/0" / name
        path.write_bytes(corrupt(path.read_bytes()))
        with pytest.raises(DatasetError, match=says) as error:
            load_views(root, "all")
        assert name in str(error.value) and "re-export" in str(error.value), what
    monkeypatch.setattr(pycolmap, "Reconstruction", real)
