"""Tests for the Blender-format loader in tensorf.data."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import sphere_ground_truth, surface_colour, write_sphere_scene
from tiers import examples

from tensorf.data import (
    DatasetError,
    Views,
    available_splits,
    default_dataset_path,
    load_views,
)

SIZE = 32
ANGLE = 0.69
RADIUS = 0.6


@pytest.fixture(scope="module")
def sphere_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sphere_scene(
        tmp_path_factory.mktemp("sphere"), size=SIZE, n_train=6, n_test=2, radius=RADIUS
    )


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scene that the bad-input cases copy and break."""
    return write_sphere_scene(tmp_path_factory.mktemp("small"), size=8, n_train=3, n_test=1)


def _write_scene(root: Path, images: list[np.ndarray], angle: float = ANGLE) -> Path:
    """A one-split ("train") scene holding exactly `images`, all with identity poses."""
    (root / "train").mkdir(parents=True)
    frames = []
    for i, image in enumerate(images):
        iio.imwrite(root / "train" / f"r_{i}.png", image)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()})
    meta = {"camera_angle_x": angle, "frames": frames}
    (root / "transforms_train.json").write_text(json.dumps(meta))
    return root


# --- the analytic sphere scene round-trips -------------------------------------------


def test_sphere_round_trip(sphere_scene: Path) -> None:
    views = load_views(sphere_scene, "train")
    written = json.loads((sphere_scene / "transforms_train.json").read_text())

    assert isinstance(views, Views)
    assert views.images.shape == (6, SIZE, SIZE, 3)
    assert views.images.dtype == np.float32 and views.c2w.dtype == np.float32
    assert (views.n_views, views.height, views.width) == (6, SIZE, SIZE)
    assert views.intrinsics.fx == pytest.approx(0.5 * SIZE / math.tan(0.5 * ANGLE))
    assert views.names == tuple(f["file_path"] for f in written["frames"])
    expected_c2w = np.array([f["transform_matrix"] for f in written["frames"]])
    np.testing.assert_allclose(views.c2w, expected_c2w, atol=1e-6)
    assert available_splits(sphere_scene) == ["test", "train"]


def test_sphere_pixels_match_oracle(sphere_scene: Path) -> None:
    views = load_views(sphere_scene, "test")
    for image, c2w in zip(views.images, views.c2w.astype(np.float64), strict=True):
        truth = sphere_ground_truth(c2w, SIZE, ANGLE, RADIUS)
        background = np.all(truth == 1.0, axis=-1)
        assert background.any() and not background.all()
        # Alpha 0 must composite to exactly white, not to 1 - epsilon.
        assert np.all(image[background] == 1.0)
        # Elsewhere only the 8-bit rounding of colour and alpha separates them.
        np.testing.assert_allclose(image, truth, atol=1.5 / 255)
        # Independent of the oracle: the central ray hits the point facing the camera.
        centre = image[SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1]
        facing = surface_colour(c2w[:3, 2])
        np.testing.assert_allclose(centre.mean(axis=(0, 1)), facing, atol=0.02)


def test_max_views_spreads_over_split(sphere_scene: Path) -> None:
    views = load_views(sphere_scene, "train", max_views=3)
    assert views.names == ("./train/r_0", "./train/r_2", "./train/r_5")
    assert load_views(sphere_scene, "train", max_views=100).n_views == 6


def test_bad_arguments_raise_value_error(sphere_scene: Path) -> None:
    with pytest.raises(ValueError, match="downscale"):
        load_views(sphere_scene, "train", downscale=0)
    with pytest.raises(ValueError, match="max_views"):
        load_views(sphere_scene, "train", max_views=0)


# --- pixel formats and downscaling ---------------------------------------------------


def test_downscale_is_box_average_of_composite(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(4, 6, 4), dtype=np.uint8)
    views = load_views(_write_scene(tmp_path, [rgba]), "train", downscale=2)

    pixels = rgba.astype(np.float64) / 255.0
    composite = pixels[..., :3] * pixels[..., 3:] + (1.0 - pixels[..., 3:])
    expected = np.zeros((2, 3, 3))
    for r in range(2):
        for c in range(3):
            expected[r, c] = composite[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean(axis=(0, 1))
    assert views.images.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(views.images[0], expected, atol=1e-6)
    assert views.intrinsics.fx == pytest.approx(0.5 * 3 / math.tan(0.5 * ANGLE))


def test_gray_alpha_is_composited_on_white(tmp_path: Path) -> None:
    gray_alpha = np.stack([np.zeros((2, 2), np.uint8), np.full((2, 2), 51, np.uint8)], -1)
    views = load_views(_write_scene(tmp_path, [gray_alpha]), "train")
    assert views.images.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(views.images, 0.8, atol=1e-6)


# --- the real lego scene -------------------------------------------------------------


@pytest.fixture(scope="module")
def lego() -> Path:
    path = default_dataset_path()
    if not path.is_dir():
        pytest.skip(f"lego data not found at {path}")
    return path


def test_lego_train(lego: Path) -> None:
    angle = json.loads((lego / "transforms_train.json").read_text())["camera_angle_x"]
    full_focal = 0.5 * 400 / math.tan(0.5 * angle)

    views = load_views(lego, "train")
    assert views.images.shape == (100, 400, 400, 3)
    assert views.intrinsics.fx == pytest.approx(full_focal)
    assert 0.0 <= views.images.min() and views.images.max() <= 1.0

    small = load_views(lego, "train", downscale=4)
    assert small.images.shape == (100, 100, 100, 3)
    assert small.intrinsics.fx == pytest.approx(full_focal / 4)
    box = views.images[:3].reshape(3, 100, 4, 100, 4, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(small.images[:3], box, atol=1e-6)
    np.testing.assert_array_equal(small.c2w, views.c2w)


def test_lego_test_subset(lego: Path) -> None:
    views = load_views(lego, "test", max_views=5)
    assert views.images.shape == (5, 400, 400, 3)
    assert views.names[0] == "./test/r_0"
    assert 0.0 <= views.images.min() and views.images.max() <= 1.0


# --- bad input -----------------------------------------------------------------------


def _edit_json(scene: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    path = scene / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _set_frame(index: int, key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda meta: meta["frames"][index].__setitem__(key, value)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _resize(path: Path) -> None:
    iio.imwrite(path, np.zeros((4, 4, 4), np.uint8))


# Each case: (how to break a copy of the small scene, text the message must contain,
# extra load_views arguments). A break that returns a Path redirects the load there.
BAD_INPUTS: dict[str, tuple[Callable[[Path], object], str, dict[str, Any]]] = {
    "missing_folder": (lambda s: s / "no_such_scene", "no_such_scene", {}),
    "path_is_file": (lambda s: s / "train" / "r_0.png", "r_0.png", {}),
    "missing_json": (
        lambda s: (s / "transforms_train.json").unlink(),
        "transforms_train.json",
        {},
    ),
    "invalid_json": (
        lambda s: (s / "transforms_train.json").write_text('{"frames": [\n  oops'),
        "line 2",
        {},
    ),
    "top_level_list": (
        lambda s: (s / "transforms_train.json").write_text("[1, 2]"),
        "transforms_train.json",
        {},
    ),
    "missing_angle": (
        lambda s: _edit_json(s, lambda m: m.pop("camera_angle_x")),
        "camera_angle_x",
        {},
    ),
    "negative_angle": (
        lambda s: _edit_json(s, lambda m: m.update(camera_angle_x=-0.5)),
        "camera_angle_x",
        {},
    ),
    "string_angle": (
        lambda s: _edit_json(s, lambda m: m.update(camera_angle_x="wide")),
        "camera_angle_x",
        {},
    ),
    "missing_frames": (lambda s: _edit_json(s, lambda m: m.pop("frames")), "frames", {}),
    "frames_not_list": (
        lambda s: _edit_json(s, lambda m: m.update(frames={"a": 1})),
        "frames",
        {},
    ),
    "empty_frames": (lambda s: _edit_json(s, lambda m: m.update(frames=[])), "frames", {}),
    "missing_file_path": (
        lambda s: _edit_json(s, lambda m: m["frames"][1].pop("file_path")),
        "file_path",
        {},
    ),
    "missing_transform": (
        lambda s: _edit_json(s, lambda m: m["frames"][1].pop("transform_matrix")),
        "transform_matrix",
        {},
    ),
    "transform_3x4": (
        lambda s: _edit_json(s, _set_frame(1, "transform_matrix", np.eye(4)[:3].tolist())),
        "frames[1]",
        {},
    ),
    "transform_strings": (
        lambda s: _edit_json(s, _set_frame(1, "transform_matrix", [["1"] * 4] * 4)),
        "frames[1]",
        {},
    ),
    "transform_nan": (
        lambda s: _edit_json(s, _set_frame(1, "transform_matrix", [[float("nan")] * 4] * 4)),
        "frames[1]",
        {},
    ),
    "missing_image": (lambda s: (s / "train" / "r_1.png").unlink(), "r_1.png", {}),
    "truncated_png": (lambda s: _truncate(s / "train" / "r_1.png"), "r_1.png", {}),
    "text_as_png": (
        lambda s: (s / "train" / "r_1.png").write_text("not an image\n"),
        "r_1.png",
        {},
    ),
    "grayscale": (
        lambda s: iio.imwrite(s / "train" / "r_1.png", np.full((8, 8), 51, np.uint8)),
        "grayscale image without an alpha channel",
        {},
    ),
    "rgb": (
        lambda s: iio.imwrite(s / "train" / "r_1.png", np.full((8, 8, 3), 51, np.uint8)),
        "RGB image without an alpha channel",
        {},
    ),
    "mixed_sizes": (lambda s: _resize(s / "train" / "r_1.png"), "r_1.png", {}),
    "bad_downscale": (lambda s: None, "downscale=3", {"downscale": 3}),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error(small_scene: Path, tmp_path: Path, case: str) -> None:
    breaker, needle, kwargs = BAD_INPUTS[case]
    scene = Path(shutil.copytree(small_scene, tmp_path / "scene"))
    target = breaker(scene)
    path = target if isinstance(target, Path) else scene
    with pytest.raises(DatasetError) as info:
        load_views(path, "train", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert needle in message


def test_missing_folder_mentions_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nerf_synthetic.zip.*TENSORF_DATA_DIR"):
        load_views(tmp_path / "absent", "train")


def test_missing_split_lists_existing_splits(small_scene: Path) -> None:
    with pytest.raises(DatasetError, match="transforms_val.json.*test, train"):
        load_views(small_scene, "val")


def test_data_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENSORF_DATA_DIR", str(tmp_path))
    assert default_dataset_path() == tmp_path / "nerf_synthetic" / "lego"
    monkeypatch.delenv("TENSORF_DATA_DIR")
    assert default_dataset_path().parts[-4:] == ("shared", "data", "nerf_synthetic", "lego")


# --- fuzzing the JSON side of the loader -------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_matrix = st.lists(st.lists(st.floats() | st.integers(), min_size=3, max_size=5), max_size=5)
_frame = st.fixed_dictionaries(
    {},
    optional={
        "file_path": st.sampled_from(["./train/r_0", "./train/r_1", "r_0.png", "", "../x"]) | _json,
        "transform_matrix": _matrix | st.just(np.eye(4).tolist()) | _json,
    },
)
_meta = st.fixed_dictionaries(
    {},
    optional={
        "camera_angle_x": st.floats() | st.integers() | _json,
        "frames": st.lists(_frame, max_size=3) | _json,
    },
)


@pytest.fixture(scope="module")
def fuzz_scene(small_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(small_scene, tmp_path_factory.mktemp("fuzz") / "scene"))


@settings(max_examples=examples(150), deadline=None)
@given(meta=_meta | _json)
def test_fuzzed_transforms_load_or_raise_dataset_error(fuzz_scene: Path, meta: Any) -> None:
    """Whatever the JSON holds, the loader loads it or raises DatasetError, nothing else."""
    (fuzz_scene / "transforms_fuzz.json").write_text(json.dumps(meta))
    try:
        views = load_views(fuzz_scene, "fuzz")
    except DatasetError as error:
        assert "\n" not in str(error)
    else:
        assert np.isfinite(views.c2w).all() and views.intrinsics.fx > 0
