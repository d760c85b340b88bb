"""Camera paths: keyframe splines (against motions whose path is known in closed form),
nerfstudio's camera_path.json (round trip, bad files in one line), nerfstudio's world
mapped into a run's (against the capture loader's own placement), and rendering a path
from the command line (against the evaluation of the same cameras)."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from test_captures import APPLIED, capture_rig, write_transforms

from tensorf.cli import ConfigError
from tensorf.data import load_views
from tensorf.eval.scoring import psnr
from tensorf.geometry import camera_path
from tensorf.geometry.camera_path import Keyframe
from tensorf.geometry.cameras import look_at, orbit_pose
from tensorf.orbit import OrbitArgs, render_orbit


def random_keyframes(n: int, seed: int = 0) -> list[Keyframe]:
    rng = np.random.default_rng(seed)
    return [Keyframe(look_at(rng.normal(size=3) * 3, rng.normal(size=3) * 0.3, (0, 0, 1)),
                     rng.uniform(0.4, 1.2)) for _ in range(n)]  # fmt: skip


def rotation_about_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("smoothness", [0.0, 0.5, 1.0])
def test_the_path_passes_through_its_keyframes(loop, smoothness):
    keyframes = random_keyframes(5)
    per_segment = 7
    n = per_segment * (5 if loop else 4) + (0 if loop else 1)
    c2w, fov = camera_path.interpolate(keyframes, n, smoothness, loop)
    assert c2w.shape == (n, 4, 4) and fov.shape == (n,)
    for i, key in enumerate(keyframes):
        np.testing.assert_allclose(c2w[per_segment * i], key.c2w, atol=1e-9)
        assert fov[per_segment * i] == pytest.approx(key.fov, abs=1e-12)
    rotations = c2w[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(
        np.eye(3), (n, 3, 3)), atol=1e-9)  # fmt: skip
    assert np.allclose(np.linalg.det(rotations), 1.0) and np.allclose(c2w[:, 3], [0, 0, 0, 1])


def test_uniform_motion_is_followed_exactly():
    """Keyframes evenly spaced along a line and turning evenly about one axis: a smooth
    path (Catmull-Rom, squad) moves and turns at constant speed; a path of smoothness 0
    eases in and out of each keyframe (the smoothstep)."""
    keyframes = []
    for i in range(4):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rotation_about_z(0.4 * i), [1.0 * i, 0.5 * i, 0.0]
        keyframes.append(Keyframe(c2w, 0.8))
    n = 31  # 10 frames per segment
    t = np.linspace(0.0, 3.0, n)
    c2w, _ = camera_path.interpolate(keyframes, n, smoothness=1.0)
    np.testing.assert_allclose(c2w[:, :3, 3], np.stack([t, 0.5 * t, 0 * t], -1), atol=1e-12)
    for frame, time in zip(c2w, t, strict=True):
        np.testing.assert_allclose(frame[:3, :3], rotation_about_z(0.4 * time), atol=1e-12)

    c2w, _ = camera_path.interpolate(keyframes, n, smoothness=0.0)
    u = t - np.minimum(np.floor(t), 2)
    eased = np.minimum(np.floor(t), 2) + u * u * (3 - 2 * u)
    np.testing.assert_allclose(c2w[:, :3, 3], np.stack([eased, 0.5 * eased, 0 * t], -1),
                               atol=1e-12)  # fmt: skip
    for frame, time in zip(c2w, eased, strict=True):
        np.testing.assert_allclose(frame[:3, :3], rotation_about_z(0.4 * time), atol=1e-12)


def test_a_smooth_path_has_no_kinks_at_its_keyframes():
    """Velocity and angular velocity just before and just after each inner keyframe agree
    (to the finite difference's own error), where a piecewise-linear path would jump."""
    keyframes = random_keyframes(5, seed=3)
    per_segment = 2000
    c2w, _ = camera_path.interpolate(keyframes, per_segment * 4 + 1, smoothness=1.0)
    for i in (1, 2, 3):
        j = per_segment * i
        before, after = c2w[j] - c2w[j - 1], c2w[j + 1] - c2w[j]
        scale = np.abs(after).max()
        assert np.abs(after - before).max() < 0.01 * scale, (i, np.abs(after - before).max())


def test_camera_path_json_round_trip(tmp_path):
    path = camera_path.from_keyframes(random_keyframes(3), seconds=2.0, fps=12, width=64,
                                      height=48, smoothness=0.7, loop=True)  # fmt: skip
    assert len(path.c2w) == 24 and path.fps == 12
    file = camera_path.write(path, tmp_path / "paths" / "a.json")
    values = json.loads(file.read_text())
    # nerfstudio's layout: flat row-major matrices, fov in degrees, aspect width / height.
    assert values["camera_type"] == "perspective" and values["seconds"] == 2.0
    assert values["camera_path"][5]["camera_to_world"] == path.c2w[5].ravel().tolist()
    assert values["camera_path"][5]["fov"] == pytest.approx(math.degrees(path.fov[5]))
    assert values["camera_path"][0]["aspect"] == pytest.approx(64 / 48)
    back = camera_path.read(file)
    np.testing.assert_allclose(back.c2w, path.c2w, atol=1e-12)
    np.testing.assert_allclose(back.fov, path.fov, atol=1e-12)
    assert (back.width, back.height, back.seconds, back.loop) == (64, 48, 2.0, True)
    assert back.smoothness == 0.7 and len(back.keyframes) == 3
    np.testing.assert_allclose(back.keyframes[1].c2w, path.keyframes[1].c2w, atol=1e-12)
    # The focal length is nerfstudio's: half the height over tan(fov / 2).
    k = back.intrinsics(5)
    assert k.fy == pytest.approx(24 / math.tan(path.fov[5] / 2)) and (k.cx, k.cy) == (32, 24)


def valid_path() -> dict:
    frames = [{"camera_to_world": orbit_pose(a, 20.0, 3.0, np.zeros(3)).ravel().tolist(),
               "fov": 40.0, "aspect": 1.0} for a in (30.0, 40.0)]  # fmt: skip
    return {"camera_type": "perspective", "render_width": 32, "render_height": 32, "fps": 24,
            "seconds": 1.0, "camera_path": frames}  # fmt: skip


def sheared(values: dict) -> dict:
    values["camera_path"][1]["camera_to_world"][1] += 0.2
    return values


BAD_FILES = {
    "missing": (lambda v: {k: x for k, x in v.items() if k != "render_height"}, "'render_height'"),
    "no frames": (lambda v: {**v, "camera_path": []}, "no frames"),
    "huge": (lambda v: {**v, "render_width": 100_000}, "'render_width' must be"),
    "fisheye": (lambda v: {**v, "camera_type": "fisheye"}, "camera_type 'fisheye'"),
    "non-rigid": (sheared, "camera_path[1].camera_to_world: not a rigid"),
    "short matrix": (lambda v: {**v, "camera_path": [{"camera_to_world": [1, 0], "fov": 40}]},
                     "16 finite numbers"),
    "no fov": (lambda v: {**v, "camera_path": [{"camera_to_world": v["camera_path"][0][
        "camera_to_world"]}]}, "needs 'camera_to_world' and 'fov'"),
    "fov": (lambda v: {**v, "camera_path": [{**v["camera_path"][0], "fov": 180}]}, "'fov' must"),
    "seconds": (lambda v: {**v, "seconds": -1}, "'seconds' must"),
    "a list": (lambda v: [v], "expected an object"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_camera_paths_are_refused(tmp_path, case):
    change, fragment = BAD_FILES[case]
    file = tmp_path / "path.json"
    file.write_text(json.dumps(change(valid_path())))
    with pytest.raises(ConfigError, match=None) as error:
        camera_path.read(file)
    assert fragment in str(error.value) and str(file) in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_camera_path_ends_the_command_in_one_line(tmp_path):
    file = tmp_path / "path.json"
    file.write_text(json.dumps(sheared(valid_path())))
    # Checked before the run is read: no run is needed to refuse the file.
    result = run_cli("render_360.py", "--run-dir", str(tmp_path / "no_run"), "--camera-path",
                     str(file), "--out", str(tmp_path / "frames"))  # fmt: skip
    assert_one_line_error(result, "not a rigid camera-to-world", str(file))


def test_a_nerfstudio_path_lands_where_the_capture_placed_its_cameras(tmp_path):
    """nerfstudio's dataparser turns the capture (transforms.json with an applied_transform)
    by an orientation of its own and scales it; the cameras of the capture, written as a
    path in nerfstudio's world, map back onto the loader's placed cameras."""
    root = write_transforms(tmp_path / "capture", capture_rig())
    meta = json.loads((root / "transforms.json").read_text())
    orient = np.eye(4)
    orient[:3, :3] = look_at(np.zeros(3), np.array([0.3, -1.0, 0.4]), (0.2, 0.1, 1.0))[:3, :3]
    orient[:3, 3] = [0.5, -1.5, 2.0]
    scale = 0.37
    frames = []
    for frame in meta["frames"]:
        pose = orient @ np.array(frame["transform_matrix"])  # as nerfstudio orients its poses
        pose[:3, 3] *= scale
        frames.append({"camera_to_world": pose.ravel().tolist(), "fov": 50.0})
    path_file = tmp_path / "camera_path.json"
    path_file.write_text(json.dumps({"render_width": 24, "render_height": 16, "seconds": 1.0,
                                     "camera_path": frames}))  # fmt: skip
    # nerfstudio saves its orientation composed with the applied_transform.
    dataparser = tmp_path / "dataparser_transforms.json"
    dataparser.write_text(json.dumps({"transform": (orient @ APPLIED)[:3].tolist(),
                                      "scale": scale}))  # fmt: skip
    views = load_views(root, "all")
    moved = camera_path.read(path_file).with_world(
        camera_path.from_nerfstudio(dataparser, views.placement))
    np.testing.assert_allclose(moved.c2w, views.c2w, atol=2e-6)

    dataparser.write_text(json.dumps({"transform": np.eye(4)[:3].tolist(), "scale": 0}))
    with pytest.raises(ConfigError, match="positive 'scale'"):
        camera_path.from_nerfstudio(dataparser, views.placement)


def test_test_cameras_as_a_camera_path_render_the_evaluation(sphere_run, sphere_scene, tmp_path):
    """A camera_path.json of the sphere's test cameras, rendered by render_360.py to PNG
    frames, scores the evaluation's PSNR against the test images (to 0.01 dB)."""
    cfg, metrics = sphere_run
    views = load_views(sphere_scene, "test")
    k = views.intrinsics
    fov = math.degrees(2 * math.atan(0.5 * k.height / k.fy))
    frames = [{"camera_to_world": np.asarray(c2w, np.float64).ravel().tolist(), "fov": fov,
               "aspect": k.width / k.height} for c2w in views.c2w]  # fmt: skip
    values = {"camera_type": "perspective", "render_width": k.width, "render_height": k.height,
              "fps": 1, "seconds": views.n_views, "camera_path": frames}  # fmt: skip
    path_file = tmp_path / "test_cameras.json"
    path_file.write_text(json.dumps(values))
    out, saved = tmp_path / "frames", tmp_path / "saved.json"
    render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, camera_path=path_file, out=out, depth=False,
                           save_path=saved))  # fmt: skip
    frames = sorted(out.iterdir())
    assert [f.name for f in frames] == [f"{i:05d}.png" for i in range(views.n_views)]
    scores = [psnr(iio.imread(f) / 255.0, image) for f, image in zip(frames, views.images,
                                                                     strict=True)]  # fmt: skip
    assert np.mean(scores) == pytest.approx(metrics["psnr"], abs=0.01), (scores, metrics)
    # --save-path writes the cameras it rendered.
    np.testing.assert_allclose(camera_path.read(saved).c2w, views.c2w, atol=1e-6)
