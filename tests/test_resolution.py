"""--target-long-side: the downscale picked from the photos' size, per format; an explicit
--downscale wins; the chosen factor is saved with the run and kept by --resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from synthetic import look_at_origin, tiny_config, write_llff_scene, write_sphere_scene

from tensorf import data, experiment
from tensorf.config import DataConfig, override
from tensorf.data.resolution import FullSize, nearest_downscale
from tensorf.errors import ConfigError
from tensorf.presets import PRESETS
from tensorf.train import checkpoint


@pytest.mark.parametrize(
    ("width", "height", "target", "factor"),
    [
        (1080, 1920, 400, 5),  # the fox: 216x384 (480 is 1.2x over, 384 1.04x under)
        (1080, 1920, 480, 4),  # exactly 270x480
        (1000, 658, 400, 3),  # a camera photo: 333x219 (500 is 1.25x over, 333 1.2x under)
        (1000, 658, 480, 2),  # 500x329
        (4032, 3024, 504, 8),  # LLFF at images_8: fern's 504x378
        (640, 480, 5000, 1),  # never enlarged
        (640, 480, 1, 640),  # at least a pixel
    ],
)
def test_nearest_factor_by_ratio(width, height, target, factor):
    size = FullSize(width, height, range(1, max(width, height) + 1))
    assert nearest_downscale(size, target) == factor


def test_only_the_factors_the_loader_reads():
    # Blender's 800x800: 800 / 3 is not a whole image, so 300 px gets 400 (1.33x over)
    # rather than 200 (1.5x under).
    blender = FullSize(800, 800, [1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50, 80, 100, 160,
                                  200, 400, 800])  # fmt: skip
    assert nearest_downscale(blender, 300) == 2
    # A tie (600 px and 300 px are both sqrt(2) from 424.26) goes to the larger image.
    assert nearest_downscale(FullSize(600, 400, [1, 2]), math.sqrt(600 * 300)) == 1


def write_capture(root: Path, width: int, height: int, n: int = 8) -> Path:
    """A transforms.json capture of `n` noise photos of width x height on a ring."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        angle = 2 * math.pi * i / n
        c2w = look_at_origin(np.array([2 * math.cos(angle), 2 * math.sin(angle), 0.3]))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        iio.imwrite(root / "images" / f"{i:02d}.png", pixels)
        frames.append({"file_path": f"images/{i:02d}.png", "transform_matrix": c2w.tolist()})
    meta = {"camera_angle_x": 1.0, "w": width, "h": height, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def fitted(root: Path, target: int, downscale: int = 1) -> int:
    scene = DataConfig(dataset_path=root, downscale=downscale, target_long_side=target)
    return experiment.fit_downscale(scene).downscale


def test_captures_any_factor(tmp_path):
    root = write_capture(tmp_path / "capture", 120, 80)
    assert data.full_size(root) == FullSize(120, 80, range(1, 121))
    assert [fitted(root, t) for t in (200, 50, 40, 30, 12)] == [1, 2, 3, 4, 10]
    views = data.load_views(root, "train", downscale=fitted(root, 40))
    assert (views.width, views.height) == (40, 27)


def test_llff_from_its_smallest_folder(tmp_path):
    # No images/: factor 1 cannot be read, nor anything under images_2/'s 2.
    scene = write_llff_scene(tmp_path / "llff", full_size=(48, 64), factors=(2, 4))
    size = data.full_size(scene.root)
    assert (size.width, size.height, size.factors[0]) == (64, 48, 2)
    assert [fitted(scene.root, t) for t in (64, 32, 16, 12)] == [2, 2, 4, 5]
    views = data.load_views(scene.root, "all", downscale=fitted(scene.root, 16))
    assert (views.width, views.height) == (16, 12)  # images_4/ as it is


def test_blender_factors_divide_both_sides(tmp_path):
    root = write_sphere_scene(tmp_path / "sphere", size=32, n_train=2, n_test=1)
    assert list(data.full_size(root).factors) == [1, 2, 4, 8, 16, 32]
    assert [fitted(root, t) for t in (32, 12, 10, 3)] == [1, 2, 4, 8]


def test_an_explicit_downscale_or_no_target_is_kept(tmp_path):
    root = write_capture(tmp_path / "capture", 120, 80)
    assert fitted(root, 40, downscale=2) == 2
    assert fitted(root, 0) == 1
    assert fitted(root, 0, downscale=6) == 6
    # The presets fit what used to be a fixed eighth; `quick` (the lego) does not.
    assert PRESETS["quick"][1].data.target_long_side == 0
    assert PRESETS["llff-quick"][1].data.fits_downscale
    assert PRESETS["unbounded-quick"][1].data.fits_downscale


def test_the_fitted_factor_is_saved_reported_and_resumed(sphere_scene, tmp_path, capsys):
    cfg = override(tiny_config(sphere_scene, tmp_path / "run"), target_long_side=16, n_iters=10,
                   upsample_steps=(), mask_steps=(), eval_max_views=1)  # fmt: skip
    metrics = experiment.train(cfg)
    assert "images: 16x16 (--downscale 2, the nearest to --target-long-side 16)" in (
        capsys.readouterr().out)  # fmt: skip
    assert (metrics["downscale"], metrics["image_size"]) == (2, [16, 16])
    saved = checkpoint.load_config(cfg.run.run_dir)
    assert (saved.data.downscale, saved.data.target_long_side) == (2, 16)
    # The same command resumes at the same size; another --downscale is refused.
    resumed = experiment.train(override(cfg, resume=True))
    assert (resumed["downscale"], resumed["image_size"], resumed["psnr"]) == (
        2, [16, 16], metrics["psnr"])  # fmt: skip
    with pytest.raises(ConfigError, match="downscale"):
        experiment.train(override(cfg, resume=True, downscale=4))
    assert dataclasses.replace(saved.data, downscale=1) == cfg.data
