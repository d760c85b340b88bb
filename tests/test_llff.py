"""The LLFF loader on a ray-cast forward-facing scene, pinhole intrinsics, bad input."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from synthetic import (
    LLFF_SPHERE_CENTRE,
    LLFFScene,
    render_forward_scene,
    rotation_xyz,
    write_llff_scene,
)
from test_viewer import assert_first_view_shows_the_scene

from tensorf import experiment
from tensorf.cli import ConfigError
from tensorf.config import override
from tensorf.data import DatasetError, data_dir, detect_format, load_views
from tensorf.geometry.cameras import Intrinsics, pixel_rays, spiral_poses
from tensorf.orbit import OrbitArgs, render_orbit
from tensorf.presets import PRESETS
from tensorf.render import sampling
from tensorf.render.image import render_image
from tensorf.train import checkpoint, train_state

N = 10
FULL = (48, 64)  # (height, width) of images/, the size poses_bounds.npy is made for
FOCAL = 60.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> LLFFScene:
    return write_llff_scene(tmp_path_factory.mktemp("llff"), n=N, full_size=FULL, focal=FOCAL)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def written_c2w(scene: LLFFScene) -> np.ndarray:
    """(n, 4, 4) the written poses with their columns [down, right, back] reordered to
    [right, up, back]: OpenGL camera-to-world in the original frame."""
    poses = scene.poses
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w


def average(c2w: np.ndarray) -> np.ndarray:
    """Mean position; back = normalised mean back axis; right = normalise(mean up x back);
    up = back x right."""
    back = unit(c2w[:, :3, 2].mean(0))
    right = unit(np.cross(c2w[:, :3, 1].mean(0), back))
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, np.cross(back, right), back
    pose[:3, 3] = c2w[:, :3, 3].mean(0)
    return pose


def to_loaded_frame(scene: LLFFScene, points: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> the loader's recentred and rescaled frame."""
    pose = average(written_c2w(scene))
    scale = 1.0 / (0.75 * scene.bounds[:, 0].min())
    return scale * (points - pose[:3, 3]) @ pose[:3, :3]


def project_llff(scene: LLFFScene, i: int, points: np.ndarray, size: tuple[int, int]):
    """Continuous pixel coordinates (u, v) (pixel (c, r) spans [c, c+1) x [r, r+1)) of
    world points in camera i, straight from the written [down, right, back] pose, for
    images of `size` (height, width)."""
    pose = scene.poses[i]
    down, right, back = np.moveaxis((points - pose[:, 3]) @ pose[:, :3], -1, 0)
    depth = -back
    assert (depth > 0).all()
    focal = scene.focal * size[1] / scene.full_size[1]
    return 0.5 * size[1] + focal * right / depth, 0.5 * size[0] + focal * down / depth


def distance_to_ray(point, origin, direction) -> float:
    offset = np.asarray(point, np.float64) - np.asarray(origin, np.float64)
    direction = np.asarray(direction, np.float64)
    along = offset @ direction
    assert along > 0, "point behind the camera"
    return float(np.linalg.norm(offset - along * direction))


# --- poses: axes, recentring, scale ----------------------------------------------------


def test_axes_are_reordered_and_recentred(scene):
    views = load_views(scene.root, "all", downscale=2)
    assert detect_format(scene.root) == "llff"
    assert views.kind == "forward-facing"
    assert views.c2w.shape == (N, 4, 4) and views.c2w.dtype == np.float32

    c2w = written_c2w(scene)
    pose = average(c2w)
    scale = 1.0 / (0.75 * scene.bounds[:, 0].min())
    expected = np.linalg.inv(pose) @ c2w
    expected[:, :3, 3] *= scale
    np.testing.assert_allclose(views.c2w, expected, atol=2e-6)
    np.testing.assert_allclose(np.linalg.det(views.c2w[:, :3, :3]), 1.0, atol=1e-5)
    np.testing.assert_array_equal(views.c2w[:, 3], np.tile([0, 0, 0, 1], (N, 1)))


def test_recentred_on_the_average_camera(scene):
    views = load_views(scene.root, "all", downscale=2)
    c2w = views.c2w.astype(np.float64)
    np.testing.assert_allclose(c2w[:, :3, 3].mean(0), 0.0, atol=1e-6)
    # The cameras look down -z on average, with up in the y-z plane (mostly +y).
    np.testing.assert_allclose(unit(-c2w[:, :3, 2].mean(0)), [0, 0, -1], atol=1e-6)
    up = unit(c2w[:, :3, 1].mean(0))
    assert abs(up[0]) < 1e-6 and up[1] > 0.99
    # Every camera still looks within a few degrees of -z (the rig turns them by < 0.06):
    # its backwards axis is near +z.
    assert (c2w[:, 2, 2] > np.cos(0.12)).all()


def test_scaled_so_the_nearest_bound_is_4_over_3(scene):
    views = load_views(scene.root, "all", downscale=2)
    scale = 1.0 / (0.75 * 2.5)  # the written nearest bound is 2.5
    assert views.depth_bounds[0] == pytest.approx(1.0 / 0.75, rel=1e-9)
    assert views.depth_bounds[1] == pytest.approx(scene.bounds[:, 1].max() * scale, rel=1e-9)
    # Positions scale by the same factor: neighbouring cameras were 0.15 apart on the grid.
    gap = np.linalg.norm(views.c2w[1, :3, 3] - views.c2w[0, :3, 3])
    world_gap = np.linalg.norm(scene.poses[1, :, 3] - scene.poses[0, :, 3])
    assert gap == pytest.approx(world_gap * scale, rel=1e-5)


@pytest.mark.parametrize("downscale", [2, 4])
def test_rays_pass_through_known_points(scene, downscale):
    views = load_views(scene.root, "all", downscale=downscale)
    size = (views.height, views.width)
    assert size == (FULL[0] // downscale, FULL[1] // downscale)
    rng = np.random.default_rng(3)
    # The sphere's centre and random points between the cameras and the back plane,
    # defined in the rig frame like the scene, then placed in the world.
    rig_points = np.concatenate(
        [LLFF_SPHERE_CENTRE[None], rng.uniform([-1, -0.7, -6.5], [1, 0.7, -2], (5, 3))]
    )
    world = rig_points @ scene.rig_to_world[:3, :3].T + scene.rig_to_world[:3, 3]
    loaded = to_loaded_frame(scene, world)
    worst = 0.0
    for i in range(N):
        u, v = project_llff(scene, i, world, size)
        assert ((u > 0) & (u < size[1]) & (v > 0) & (v < size[0])).all()  # in the image
        # pixel_rays takes the pixel index and adds 0.5 for the centre.
        origins, dirs = pixel_rays(jnp.asarray(views.c2w[i]), jnp.asarray(u - 0.5),
                                   jnp.asarray(v - 0.5), views.intrinsics)  # fmt: skip
        for point, o, d in zip(loaded, np.asarray(origins), np.asarray(dirs), strict=True):
            worst = max(worst, distance_to_ray(point, o, d))
    assert worst < 1e-5


def test_images_are_the_cameras_views_in_name_order(scene):
    views = load_views(scene.root, "all", downscale=2)
    assert views.names == scene.names
    rig = np.linalg.inv(scene.rig_to_world)
    for i in (0, 3, 9):
        # Camera i's rig pose, from the written world pose (reordered to OpenGL axes).
        c2w = rig @ written_c2w(scene)[i]
        truth = np.round(render_forward_scene(c2w, 24, 32, FOCAL / 2) * 255) / 255
        np.testing.assert_allclose(views.images[i], truth, atol=1e-6)
        # The sphere's centre projects onto the sphere, seen from the front.
        u, v = project_llff(scene, i, scene.rig_to_world[:3, :3] @ LLFF_SPHERE_CENTRE
                            + scene.rig_to_world[:3, 3], (24, 32))  # fmt: skip
        assert views.images[i, int(v), int(u), 2] > 0.8  # blue: the normal faces +z


# --- splits ----------------------------------------------------------------------------


def test_splits_hold_out_every_8th_image(scene):
    every = load_views(scene.root, "all", downscale=2)
    test = load_views(scene.root, "test", downscale=2)
    train = load_views(scene.root, "train", downscale=2)
    assert every.names == scene.names  # all ten, in name order
    assert test.names == (scene.names[0], scene.names[8])
    assert train.names == tuple(scene.names[i] for i in (1, 2, 3, 4, 5, 6, 7, 9))
    # Every split is recentred on the average of ALL the cameras, so they agree.
    np.testing.assert_array_equal(test.c2w, every.c2w[[0, 8]])
    np.testing.assert_array_equal(train.c2w, every.c2w[[1, 2, 3, 4, 5, 6, 7, 9]])
    np.testing.assert_array_equal(test.images, every.images[[0, 8]])
    assert test.depth_bounds == every.depth_bounds == train.depth_bounds
    assert load_views(scene.root, "train", downscale=2, max_views=3).names == (
        scene.names[1], scene.names[5], scene.names[9]
    )  # fmt: skip


# --- downscaling -----------------------------------------------------------------------


def test_downscale_reads_the_matching_folder(scene):
    views = load_views(scene.root, "all", downscale=2)
    assert views.intrinsics == Intrinsics(30.0, 30.0, 16.0, 12.0, 32, 24)
    on_disk = iio.imread(scene.root / "images_2" / scene.names[4]).astype(np.float32) / 255
    np.testing.assert_array_equal(views.images[4], on_disk)
    full = load_views(scene.root, "all", downscale=1)
    assert full.intrinsics == Intrinsics(FOCAL, FOCAL, 32.0, 24.0, 64, 48)
    np.testing.assert_array_equal(full.c2w, views.c2w)


def test_missing_folder_is_resized_from_the_largest(scene, tmp_path):
    # images_4/ is not there: resized from images/ (not images_2/), focal / 4.
    copy = Path(shutil.copytree(scene.root, tmp_path / "marked"))
    for i, name in enumerate(scene.names):  # mark images/ so its content is recognisable
        iio.imwrite(copy / "images" / name, np.full((*FULL, 3), 20 * i, np.uint8))
    views = load_views(copy, "all", downscale=4)
    assert views.images.shape == (N, 12, 16, 3)
    assert views.intrinsics == Intrinsics(15.0, 15.0, 8.0, 6.0, 16, 12)
    np.testing.assert_allclose(views.images, (20 * np.arange(N) / 255)[:, None, None, None]
                               * np.ones((1, 12, 16, 3)), atol=1e-5)  # fmt: skip

    # A factor that does not divide the size: 64 / 3 rounds to 21 columns, 48 / 3 is 16
    # rows, and fx, fy follow each axis.
    odd = load_views(scene.root, "test", downscale=3)
    assert odd.images.shape == (2, 16, 21, 3)
    k = odd.intrinsics
    assert (k.fx, k.fy) == pytest.approx((FOCAL * 21 / 64, FOCAL * 16 / 48))
    assert (k.cx, k.cy, k.width, k.height) == (10.5, 8.0, 21, 16)


def test_only_a_downscaled_folder(scene, tmp_path):
    copy = Path(shutil.copytree(scene.root, tmp_path / "half"))
    shutil.rmtree(copy / "images")
    views = load_views(copy, "all", downscale=4)  # resized from images_2/ by 1/2
    assert views.images.shape == (N, 12, 16, 3)
    assert views.intrinsics.fx == pytest.approx(FOCAL / 4)
    half = np.stack([iio.imread(copy / "images_2" / n) for n in scene.names]) / 255.0
    box = half.reshape(N, 12, 2, 16, 2, 3).mean(axis=(2, 4))
    assert np.abs(views.images - box).mean() < 0.02  # Lanczos, close to a box average
    # Nothing to upsample from.
    with pytest.raises(DatasetError, match="images_2") as info:
        load_views(copy, "all", downscale=1)
    assert "\n" not in str(info.value)


# --- intrinsics ------------------------------------------------------------------------


def test_off_centre_principal_point_and_unequal_focals():
    k = Intrinsics(fx=70.0, fy=45.0, cx=23.3, cy=9.6, width=40, height=30)
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_xyz(0.4, -0.2, 0.7)
    c2w[:3, 3] = [1.0, -2.0, 0.5]
    rng = np.random.default_rng(0)
    camera = np.concatenate([rng.uniform([-1, -1, -8], [1, 1, -2], (20, 3)), [[0, 0, -5.0]]])
    points = camera @ c2w[:3, :3].T + c2w[:3, 3]
    # Own pinhole: camera looks down -z, +y up, rows grow downwards.
    q = (points - c2w[:3, 3]) @ c2w[:3, :3]
    u = k.cx + k.fx * q[:, 0] / -q[:, 2]
    v = k.cy - k.fy * q[:, 1] / -q[:, 2]
    assert (u[-1], v[-1]) == pytest.approx((23.3, 9.6))  # the optical axis
    origins, dirs = pixel_rays(jnp.asarray(c2w, jnp.float32), jnp.asarray(u - 0.5),
                               jnp.asarray(v - 0.5), k)  # fmt: skip
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-6)
    for point, o, d in zip(points, np.asarray(origins), np.asarray(dirs), strict=True):
        assert distance_to_ray(point, o, d) < 1e-5
    # Integer pixels: the ray through pixel (col, row) hits the point that projects to
    # its centre (col + 0.5, row + 0.5).
    col, row = np.array([0, 39, 17, 5]), np.array([0, 29, 3, 22])
    o, d = pixel_rays(jnp.asarray(c2w, jnp.float32), jnp.asarray(col), jnp.asarray(row), k)
    q = (np.asarray(o + 3.0 * d, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    np.testing.assert_allclose(k.cx + k.fx * q[:, 0] / -q[:, 2], col + 0.5, atol=1e-4)
    np.testing.assert_allclose(k.cy - k.fy * q[:, 1] / -q[:, 2], row + 0.5, atol=1e-4)


# --- bad input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> LLFFScene:
    """A tiny scene (images/ only, 6x8) that the bad-input cases copy and break."""
    return write_llff_scene(tmp_path_factory.mktemp("small"), n=N, full_size=(6, 8),
                            focal=8.0, factors=(1,))  # fmt: skip


def _edit_poses(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        np.save(root / "poses_bounds.npy", edit(np.load(root / "poses_bounds.npy")))

    return apply


def _set(row: int, col: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def edit(array: np.ndarray) -> np.ndarray:
        array[row, col] = value
        return array

    return edit


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each case: (how to break a copy of the small scene, fragments naming the problem, the
# path (relative to the scene) that the message must name).
BAD_INPUTS: dict[str, tuple[Callable[[Path], object], tuple[str, ...], str]] = {
    "not_n_by_17": (_edit_poses(lambda a: a[:, :15]), ("(10, 15)", "(N, 17)"),
                    "poses_bounds.npy"),
    "more_images": (
        lambda s: shutil.copy(s / "images" / "img_003.png", s / "images" / "img_100.png"),
        ("11 images", "10 poses"), "images",
    ),
    "fewer_images": (lambda s: (s / "images" / "img_004.png").unlink(), ("9 images", "10 poses"),
                     "images"),
    "nan": (_edit_poses(_set(3, 7, np.nan)), ("NaN or infinite", "rows [3]"), "poses_bounds.npy"),
    "inf": (_edit_poses(_set(6, 16, np.inf)), ("NaN or infinite", "rows [6]"), "poses_bounds.npy"),
    "no_image_folder": (lambda s: shutil.rmtree(s / "images"), ("no image folder",), ""),
    "corrupt_image": (lambda s: _truncate(s / "images" / "img_001.png"),
                      ("not a readable image",), "images/img_001.png"),
    "mixed_sizes": (
        lambda s: iio.imwrite(s / "images" / "img_002.png", np.zeros((5, 7, 3), np.uint8)),
        ("5x7", "6x8", "same size"), "images/img_002.png",
    ),
    "neither_format": (lambda s: (s / "poses_bounds.npy").unlink(),
                       ("transforms_train.json", "poses_bounds.npy", "none of"), ""),
}  # fmt: skip


def _broken(small_scene: LLFFScene, tmp_path: Path, case: str) -> tuple[Path, str]:
    root = Path(shutil.copytree(small_scene.root, tmp_path / "scene"))
    breaker, _, named = BAD_INPUTS[case]
    breaker(root)
    return root, str(root / named) if named else str(root)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_error(small_scene, tmp_path, case):
    root, named = _broken(small_scene, tmp_path, case)
    fragments = BAD_INPUTS[case][1]
    with pytest.raises(DatasetError) as info:
        load_views(root, "all")
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert message.startswith(named), message  # names the file first
    for fragment in fragments:
        assert fragment in message, message

    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "llff-quick", "--dataset-path", str(root), "--run-dir", str(run_dir),
        "--downscale", "1", "--n-iters", "2", "--upsample-steps", "--mask-steps",
        timeout=300,
    )  # fmt: skip
    assert_one_line_error(result, named, *fragments)
    assert not (run_dir / "config.json").exists()  # a failed start leaves no run


def test_object_preset_refuses_forward_facing_scene(small_scene, tmp_path):
    result = run_cli(
        "train.py", "quick", "--dataset-path", str(small_scene.root), "--run-dir",
        str(tmp_path / "run"), "--n-iters", "2", "--upsample-steps", "--mask-steps",
        timeout=300,
    )  # fmt: skip
    assert_one_line_error(result, "forward-facing", "llff, llff-quick")


# --- end to end on fern ----------------------------------------------------------------

# Fern at images_8 (504x378), 400 steps of 1024 rays, 48^3 -> 96^3: observed 19.15 dB
# (SSIM 0.475; per view 18.40, 19.58, 19.46) on the 3 held-out views (images 0, 8, 16),
# 80 s in all (46 s training, 26 s evaluation) on a shared 2-core CPU.
FERN_PSNR_FLOOR = 17.6


@pytest.mark.slow
def test_spiral_circles_the_average_camera_looking_at_the_focus(scene: LLFFScene):
    c2w = load_views(scene.root, "all", downscale=2).c2w.astype(np.float64)
    bounds = (1.5, 8.0)
    poses = spiral_poses(c2w, bounds, 40)
    assert poses.shape == (40, 4, 4)
    for rotation in poses[:, :3, :3]:
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
    # Recentred cameras: the average pose is about the identity, so the focus point is on
    # the -z axis at the official focus depth, and every camera looks straight at it.
    focus = 1.0 / (0.25 / (0.9 * bounds[0]) + 0.75 / (5.0 * bounds[1]))
    to_focus = np.array([0.0, 0.0, -focus]) - poses[:, :3, 3]
    np.testing.assert_allclose(-poses[:, :3, 2], unit(to_focus), atol=0.02)
    # Within the 90th percentile of the cameras' offsets, and around them: two turns.
    radii = np.percentile(np.abs(c2w[:, :3, 3]), 90, axis=0)
    assert (np.abs(poses[:, :3, 3]) <= radii * 1.05 + 1e-3).all()
    angle = np.unwrap(np.arctan2(-poses[:, 1, 3] / radii[1], poses[:, 0, 3] / radii[0]))
    assert angle[-1] - angle[0] == pytest.approx(2 * 2 * np.pi * 39 / 40, abs=0.2)
    # Image up stays near the cameras' up.
    assert (poses[:, :3, 1] @ unit(c2w[:, :3, 1].sum(0)) > 0.9).all()


@pytest.mark.slow
def test_fern_quick_run(tmp_path):
    fern = data_dir() / "nerf_llff_data" / "fern"
    if not (fern / "poses_bounds.npy").is_file():
        pytest.skip(f"fern data not found at {fern}")
    preset = PRESETS["llff-quick"][1]
    cfg = override(
        preset,
        dataset_path=fern,
        run_dir=tmp_path / "fern",
        downscale=8,
        n_iters=400,
        batch_size=1024,
        grid_init=48,
        grid_final=96,
        upsample_steps=(200,),
        mask_steps=(200,),
        eval_max_views=None,
        checkpoint_every=400,
        log_every=100,
    )
    start = time.perf_counter()
    metrics = experiment.train(cfg)
    seconds = time.perf_counter() - start
    print(f"fern: PSNR {metrics['psnr']:.2f} SSIM {metrics['ssim']:.4f} in {seconds:.0f} s, "
          f"per view {metrics['psnr_per_view']}")  # fmt: skip
    saved = json.loads((cfg.run.run_dir / "metrics.json").read_text())
    assert saved["n_views"] == 3 and saved["step"] == 400 and saved["split"] == "test"
    assert saved["psnr"] == pytest.approx(metrics["psnr"])
    assert len(saved["psnr_per_view"]) == 3
    assert metrics["psnr"] >= FERN_PSNR_FLOOR

    # Depth is metric: the held-out view's surfaces lie within the scene's depth bounds
    # (NDC depth would be in [0, 1]), and the wall behind the fern is farther than its
    # leaves in the middle.
    cfg_saved, state = checkpoint.load_run(cfg.run.run_dir)
    views = load_views(fern, "test", downscale=8, max_views=1)
    projection = sampling.ndc_for(cfg.render, views.intrinsics)
    settings = train_state.settings_for(cfg_saved, state, projection)
    out, _ = render_image(state.params, cfg.model, settings, state.aabb, state.mask,
                          views.c2w[0], views.intrinsics)  # fmt: skip
    near, far = views.depth_bounds
    depth = out["depth"] / np.maximum(out["acc"], 1e-6)
    inside = (depth > 0.9 * near) & (depth < 1.5 * far)
    assert inside.mean() > 0.9 and np.median(depth) > 1.5

    # The live viewer's first view of it shows the scene.
    images = load_views(fern, "train", downscale=8).images
    assert_first_view_shows_the_scene(cfg.run.run_dir, images)

    # The default video path of a forward-facing run is the spiral; RGB and depth videos.
    video = tmp_path / "spiral.mp4"
    render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, out=video, frames=3, width=64))
    for name in ("spiral.mp4", "spiral_depth.mp4"):
        frames = np.stack(list(iio.imiter(tmp_path / name, plugin="FFMPEG")))
        assert frames.shape == (3, 48, 64, 3)
        assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1.0
    with pytest.raises(ConfigError, match="spiral"):
        render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, out=video, path="orbit", frames=1))

    # No mesh from NDC space: one line, exit 2.
    mesh = run_cli("-m", "tensorf.export_mesh", "--run-dir", str(cfg.run.run_dir), "--out",
                   str(tmp_path / "fern.ply"))  # fmt: skip
    assert_one_line_error(mesh, "forward-facing (NDC) run")

    # Evaluation from the command line, as the README has it.
    result = run_cli("-m", "tensorf.evaluate", "--run-dir", str(cfg.run.run_dir),
                     "--max-views", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test: PSNR" in result.stdout
