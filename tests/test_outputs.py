"""What people look at: orbit videos, the notebook, the mesh, the test-split video and grid."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import nbformat
import numpy as np
import pytest
import trimesh
from cli_helpers import REPO, assert_one_line_error, run_cli
from nbclient import NotebookClient
from skimage.metrics import structural_similarity

from tensorf.config import override
from tensorf.config_json import flat_dict
from tensorf.eval.scoring import ssim
from tensorf.evaluate import EvaluateArgs, evaluate_run
from tensorf.export_mesh import ExportArgs, export_mesh
from tensorf.geometry.cameras import Intrinsics, orbit_poses
from tensorf.orbit import OrbitArgs, render_orbit
from tensorf.render import visualize
from tensorf.train import checkpoint


def read_video(path) -> np.ndarray:
    """(frames, H, W, 3) uint8."""
    if path.suffix == ".gif":
        return iio.imread(path, index=None)[..., :3]
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


def test_orbit_cameras_look_at_the_centre():
    centre = np.array([0.3, -0.2, 0.1])
    poses = orbit_poses(12, radius=4.0, elevation_deg=30.0, center=centre)
    assert poses.shape == (12, 4, 4)
    offsets = poses[:, :3, 3] - centre
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=-1), 4.0, rtol=1e-9)
    np.testing.assert_allclose(offsets[:, 2], 4.0 * np.sin(np.deg2rad(30.0)), rtol=1e-9)
    # The camera looks down its -z axis: straight at the centre, with a rotation as basis.
    np.testing.assert_allclose(-poses[:, :3, 2], -offsets / 4.0, atol=1e-12)
    for rotation in poses[:, :3, :3]:
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        assert rotation[2, 1] > 0  # image up points to world up
    # Evenly spread over the full circle.
    azimuth = np.unwrap(np.arctan2(offsets[:, 1], offsets[:, 0]))
    np.testing.assert_allclose(np.diff(azimuth), 2 * np.pi / 12, atol=1e-9)


def assert_orbit_video(frames: np.ndarray, n: int, height: int, width: int) -> None:
    assert frames.shape == (n, height, width, 3)
    for frame in frames:
        # The object is in view: a good part of the frame is not white background.
        assert (frame.min(-1) < 200).mean() > 0.05
    for a, b in zip(frames, frames[1:], strict=False):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5  # the camera moves


def test_render_360_cli(sphere_run, tmp_path):
    cfg, _ = sphere_run
    out = tmp_path / "orbit.mp4"
    result = run_cli(
        "render_360.py", "--run-dir", str(cfg.run.run_dir), "--out", str(out), "--frames", "6",
        "--width", "48", "--height", "40", "--normals",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("orbit.mp4", "orbit_depth.mp4", "orbit_normals.mp4"):
        assert_orbit_video(read_video(tmp_path / name), 6, 40, 48)
    assert "6 frames of 48x40" in result.stdout


def test_orbit_side_by_side_gif(sphere_run, tmp_path):
    cfg, _ = sphere_run
    args = OrbitArgs(run_dir=cfg.run.run_dir, out=tmp_path / "spin.gif", frames=4, width=32,
                     height=32, normals=True, side_by_side=True)  # fmt: skip
    paths = render_orbit(args)
    assert list(paths.values()) == [tmp_path / "spin.gif"]
    frames = read_video(tmp_path / "spin.gif")
    assert frames.shape == (4, 32, 3 * 32, 3)  # rgb | depth | normals
    assert_orbit_video(frames[:, :, :32], 4, 32, 32)


def test_colorize_depth_and_normals_of_a_plane():
    """A plane facing the camera: one depth colour, and normals pointing back at it."""
    c2w = np.eye(4)
    depth, acc = np.full((8, 8), 3.0), np.ones((8, 8))
    acc[0, 0] = 0.0
    coloured = visualize.colorize_depth(depth, acc, near=2.0, far=4.0)
    assert (coloured[0, 0] == 255).all()
    assert len(np.unique(coloured[1:, 1:].reshape(-1, 3), axis=0)) == 1
    near = visualize.colorize_depth(depth, acc, near=3.0, far=4.0)[4, 4]
    far = visualize.colorize_depth(depth, acc, near=1.0, far=3.0)[4, 4]
    assert near[:2].sum() > far[:2].sum()  # yellow (near) vs purple (far)
    # Expected depth is along each ray: points on a plane z = -3 have t = 3 / cos(angle).
    rows, cols = np.mgrid[:8, :8]
    focal = 10.0
    cos = 1 / np.sqrt(1 + ((cols + 0.5 - 4) / focal) ** 2 + ((rows + 0.5 - 4) / focal) ** 2)
    camera = Intrinsics(focal, focal, 4.0, 4.0, 8, 8)
    normals = visualize.normals_from_depth(3.0 / cos, np.ones((8, 8)), c2w, camera)
    np.testing.assert_allclose(normals[2:-2, 2:-2].reshape(-1, 3) / 255.0,
                               np.tile([0.5, 0.5, 1.0], (16, 1)), atol=0.01)  # fmt: skip


def test_notebook_runs_top_to_bottom(sphere_run):
    cfg, _ = sphere_run
    notebook = nbformat.read(REPO / "render.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORF_RUN_DIR", str(cfg.run.run_dir))
        patch.setenv("PYTHONPATH", str(REPO))
        client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # test view | photo, depth, novel view | depth
    text = "".join(o.get("text", "") for o in outputs)
    assert "PSNR" in text and f"step {cfg.schedule.n_iters}" in text


def test_export_mesh_of_the_sphere(sphere_run, tmp_path):
    cfg, _ = sphere_run
    out = tmp_path / "sphere.ply"
    export_mesh(ExportArgs(run_dir=cfg.run.run_dir, out=out))
    mesh = trimesh.load(out)
    assert len(mesh.vertices) > 500 and len(mesh.faces) > 500
    state = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[0]
    aabb = np.asarray(state.aabb)
    assert (mesh.vertices >= aabb[0] - 1e-5).all() and (mesh.vertices <= aabb[1] + 1e-5).all()
    # The sphere scene is a ball of radius 0.6 at the origin.
    np.testing.assert_allclose(mesh.bounds, [[-0.6] * 3, [0.6] * 3], atol=0.1)
    radii = np.linalg.norm(mesh.vertices, axis=-1)
    # The default level (alpha 0.005) sits on the outer edge of the density's ramp, about
    # a voxel (0.04) outside the true surface after this short training; a few floaters
    # aside, every vertex lies in a thin shell.
    assert 0.58 < np.median(radii) < 0.68
    assert np.mean((radii > 0.58) & (radii < 0.73)) > 0.97
    # Its colour is 0.5 + 0.4 * normal (see synthetic.surface_colour).
    expected = np.clip(0.5 + 0.4 * mesh.vertices / radii[:, None], 0, 1)
    colours = mesh.visual.vertex_colors[:, :3] / 255.0
    assert np.median(np.abs(colours - expected)) < 0.08


def test_ssim_matches_scikit_image():
    # The standard SSIM (11x11 Gaussian window, sigma 1.5, population covariances), from
    # an independent implementation; a non-square image catches swapped axes.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:37, 0:53] / 10.0
    a = np.stack([np.sin(xx), np.cos(yy), np.sin(xx * yy)], -1) * 0.5 + 0.5
    for noise in (0.02, 0.2):
        b = np.clip(a + rng.normal(0, noise, a.shape), 0, 1)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        expected = structural_similarity(a32, b32, channel_axis=-1, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=1)
        assert ssim(a32, b32) == pytest.approx(expected, abs=1e-5)


def test_evaluate_writes_video_and_grid(sphere_run, tmp_path):
    cfg, _ = sphere_run
    run_dir = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run_dir)
    evaluate_run(EvaluateArgs(run_dir=run_dir, max_views=3, video=True, grid=True,
                              save_renders=False))  # fmt: skip
    frames = read_video(run_dir / "renders_test.mp4")
    assert frames.shape == (3, 32, 3 * 32, 3)  # prediction | ground truth | depth
    # The prediction looks like the ground truth.
    assert np.abs(frames[:, :, :32].astype(int) - frames[:, :, 32:64]).mean() < 10
    grid = iio.imread(run_dir / "renders_test_grid.png")
    assert grid.shape == (2 * 32, 3 * 32, 3)  # three views, prediction over ground truth


def test_output_tools_bad_input(sphere_run, tmp_path):
    cfg, _ = sphere_run
    missing = tmp_path / "missing_run"
    result = run_cli("render_360.py", "--run-dir", str(missing), "--out", str(tmp_path / "a.mp4"))
    assert_one_line_error(result, "config.json")
    empty = tmp_path / "no_checkpoint"
    checkpoint.save_config(empty, override(cfg, run_dir=empty))
    result = run_cli("-m", "tensorf.export_mesh", "--run-dir", str(empty),
                     "--out", str(tmp_path / "m.ply"))  # fmt: skip
    assert_one_line_error(result, "no checkpoint")
    unwritable = tmp_path / "no_such_folder" / "orbit.mp4"
    result = run_cli("render_360.py", "--run-dir", str(cfg.run.run_dir), "--out", str(unwritable))
    assert_one_line_error(result, "cannot write")
    result = run_cli("render_360.py", "--run-dir", str(cfg.run.run_dir), "--out", "orbit.avi")
    assert_one_line_error(result, ".mp4")


def test_run_dir_from_before_full_intrinsics_still_renders(sphere_run, tmp_path):
    """Old runs saved one `focal` per run, one component count for all pairs, and none of
    the options added since (decomposition, NDC, TV, ...)."""
    cfg, _ = sphere_run
    old = tmp_path / "old_run"
    shutil.copytree(cfg.run.run_dir, old)
    cameras = json.loads((old / checkpoint.CAMERAS_FILE).read_text())
    k = cameras.pop("intrinsics")
    assert k["fx"] == k["fy"] and k["cx"] == k["width"] / 2
    for key in ("kind", "depth_bounds"):
        cameras.pop(key)
    cameras.update(focal=k["fx"], width=k["width"], height=k["height"])
    (old / checkpoint.CAMERAS_FILE).write_text(json.dumps(cameras))
    config = flat_dict(checkpoint.load_config(old))  # as old runs saved it
    model = config["model"]
    model["density_components"] = model["density_components"][0]
    model["appearance_components"] = model["appearance_components"][0]
    for key in ("density_activation", "decomposition", "cp_components"):
        model.pop(key)
    for key in ("tv_density", "tv_appearance", "ortho_weight"):
        config.pop(key)
    for key in ("ndc", "background"):
        config["render"].pop(key)
    (old / checkpoint.CONFIG_FILE).write_text(json.dumps(config))

    frames = {}
    for name, run_dir in (("new", cfg.run.run_dir), ("old", old)):
        out = tmp_path / f"{name}.gif"
        render_orbit(OrbitArgs(run_dir=run_dir, out=out, frames=2, width=24, depth=False))
        frames[name] = read_video(out)
    np.testing.assert_array_equal(frames["old"], frames["new"])
    assert checkpoint.load_cameras(old)["intrinsics"] == checkpoint.load_cameras(
        cfg.run.run_dir
    )["intrinsics"]
