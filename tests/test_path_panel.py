"""The viewer's camera path panel: what its buttons call, and the buttons pressed in a
headless browser (as tests/test_viewer.py drives it); the viewer's first view of a scene."""

from __future__ import annotations

import math
import threading

import imageio.v3 as iio
import numpy as np
import pytest
from test_viewer import browser, needs_browser, the_client, wait_for

from tensorf.cli import ConfigError
from tensorf.geometry import camera_path
from tensorf.geometry.cameras import orbit_pose
from tensorf.orbit import OrbitArgs, render_orbit
from tensorf.train import checkpoint
from tensorf.viewer import rendering, server
from tensorf.viewer.path_panel import PathPanel

SPHERE_RADIUS = 0.6  # write_sphere_scene's


def test_the_first_view_sees_the_object_past_every_training_camera(sphere_run):
    """The first view stands a little further out than the photos were taken, and no
    training camera is in its field of view on this side of the object (the old view, just
    behind the first training camera, had that camera's frustum across the middle)."""
    cfg, _ = sphere_run
    cameras = checkpoint.load_cameras(cfg.run.run_dir)
    home = rendering.home_view(cfg, cameras)
    sight = home.look_at - home.position
    distance = np.linalg.norm(sight)
    positions = cameras["c2w"][:, :3, 3]
    assert distance == pytest.approx(1.2 * np.median(np.linalg.norm(positions, axis=-1)))
    assert math.asin(SPHERE_RADIUS / distance) < 0.8 * home.fov / 2  # the sphere fits
    to_cameras = positions - home.position
    along = to_cameras @ sight / distance
    off_axis = np.degrees(np.arccos(np.clip(along / np.linalg.norm(to_cameras, axis=-1), -1, 1)))
    in_front = along < distance
    assert in_front.any() and off_axis[in_front].min() > np.degrees(home.fov / 2)


def test_open_direction_lies_in_the_widest_gap():
    angles = np.radians([0.0, 30.0, 60.0, 90.0, 200.0])  # the gap is 90 .. 200 degrees
    offsets = np.stack([np.cos(angles), np.sin(angles), np.zeros(5)], -1) * 2.0
    direction = rendering.open_direction(offsets)
    assert math.degrees(math.atan2(direction[1], direction[0])) == pytest.approx(145.0)


@pytest.fixture
def sphere_viewer(sphere_run, tmp_path):
    cfg, _ = sphere_run
    _, state = checkpoint.load_run(cfg.run.run_dir)
    v = server.FieldViewer(cfg, checkpoint.load_cameras(cfg.run.run_dir), "127.0.0.1", 0,
                           run_dir=tmp_path / "viewer_run")  # fmt: skip
    v.show(state, int(state.step))
    yield v
    v.close()


def test_a_tiny_training_image_is_the_default_width(sphere_viewer, tmp_path):
    """A 4-pixel-wide training image (a downscaled test scene) once failed viser's bounds
    and took the viewer down with it (CI, 2026-12-04)."""
    panel = PathPanel(sphere_viewer.server, tmp_path, (4, 3), sphere_viewer)
    assert panel.width.value == 4
    panel.width.value = 1
    assert panel.width.value == 1


def test_keyframes_are_added_moved_deleted_and_saved(sphere_viewer, tmp_path):
    panel = sphere_viewer.paths
    with pytest.raises(ConfigError, match="add a keyframe first"):
        panel.save()
    poses = [orbit_pose(az, 20.0, 3.0, np.zeros(3)) for az in (0.0, 60.0, 120.0, 180.0)]
    for pose in poses[:3]:
        panel.add(pose, 0.7)
    panel.move(1, poses[3], 0.5)
    panel.delete(0)
    assert [k.fov for k in panel.keyframes] == [0.5, 0.7]
    assert panel._list.content.startswith("1. at (") and panel.selected.value == 2
    panel.seconds.value, panel.fps.value, panel.loop.value = 2.0, 5, False
    panel.name.value = "walk"
    file = panel.save()
    assert file == tmp_path / "viewer_run" / "camera_paths" / "walk.json"
    saved = camera_path.read(file)
    assert len(saved.c2w) == 10 and saved.seconds == 2.0
    # The path starts and ends on its keyframes, and they are saved for editing.
    np.testing.assert_allclose(saved.c2w[0], poses[3], atol=1e-9)
    np.testing.assert_allclose(saved.c2w[-1], poses[2], atol=1e-9)
    np.testing.assert_allclose(saved.keyframes[0].c2w, poses[3], atol=1e-9)
    panel.name.value = "../escape"
    with pytest.raises(ConfigError, match="name '../escape'"):
        panel.save()


def test_the_render_button_writes_the_frames_the_command_line_writes(sphere_viewer, sphere_run,
                                                                     tmp_path):  # fmt: skip
    cfg, _ = sphere_run
    panel = sphere_viewer.paths
    for az in (10.0, 100.0, 190.0):
        panel.add(orbit_pose(az, 25.0, 3.0, np.zeros(3)), 0.69)
    panel.seconds.value, panel.fps.value, panel.width.value = 1.0, 5, 32
    panel.name.value = "turn"
    finished = threading.Event()
    out = panel.render(frames=True, done=lambda _: finished.set())
    assert finished.wait(300), panel.status.content
    assert panel.status.content == f"written: `{out}`" and panel.progress.value == 100.0
    frames = sorted(out.iterdir())
    assert [f.name for f in frames] == [f"{i:05d}.png" for i in range(5)]

    cli_out = tmp_path / "cli_frames"
    render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, camera_path=out.with_suffix(".json"),
                           out=cli_out, depth=False))  # fmt: skip
    for ours, theirs in zip(frames, sorted(cli_out.iterdir()), strict=True):
        image = iio.imread(ours)
        assert image.shape == (32, 32, 3) and (image.min(-1) < 200).mean() > 0.05
        np.testing.assert_array_equal(image, iio.imread(theirs))


def click(driver, xpath: str) -> None:
    """Click the page's element (by script: the panel may have scrolled it out of view)."""
    from selenium.webdriver.common.by import By

    driver.execute_script("arguments[0].click()", driver.find_element(By.XPATH, xpath))


def reported_at(reports: list, position: np.ndarray) -> bool:
    """The browser's last report puts its camera at `position`, looking at 0. (The handle's
    setters change its state before the browser moves, and a report the browser sent before
    it moved may still arrive: only a report that says so counts.)"""
    return bool(reports) and bool(np.allclose(reports[-1][0], position, atol=1e-3)
                                  and np.allclose(reports[-1][1], 0.0, atol=1e-3))  # fmt: skip


@pytest.mark.slow
@needs_browser
def test_keyframes_made_in_the_browser_render_as_from_the_command_line(sphere_run, tmp_path):
    """Keyframes added with the page's button from where the browser's camera stands,
    rendered by the page's render button: render_360.py renders the saved path to the same
    frames."""
    cfg, _ = sphere_run
    _, state = checkpoint.load_run(cfg.run.run_dir)
    v = server.FieldViewer(cfg, checkpoint.load_cameras(cfg.run.run_dir), "127.0.0.1", 0,
                           run_dir=tmp_path / "run")  # fmt: skip
    v.show(state, int(state.step))
    panel = v.paths
    try:
        with browser(v.url) as driver:
            client = the_client(v)
            camera = client.handle.camera
            wait_for(lambda: camera.update_timestamp > 0, 60, "the browser's camera")
            reports: list = []  # (position, look_at) as the browser reported them
            camera.on_update(lambda c: reports.append((c.position.copy(), c.look_at.copy())))
            click(driver, "//*[normalize-space(text())='Camera path']")  # open the folder
            for azimuth in (20.0, 80.0, 140.0):
                target = orbit_pose(azimuth, 25.0, 3.0, np.zeros(3))[:3, 3]
                camera.position, camera.look_at = target, np.zeros(3)
                wait_for(lambda t=target: reported_at(reports, t), 60, "the browser's camera")
                count = len(panel.keyframes)
                click(driver, "//button[normalize-space(.)='Add keyframe (this view)']")
                wait_for(lambda n=count: len(panel.keyframes) == n + 1, 60, "a keyframe")
                np.testing.assert_allclose(panel.keyframes[-1].c2w[:3, 3], target, atol=1e-3)
                assert panel.keyframes[-1].fov == pytest.approx(camera.fov)
            panel.seconds.value, panel.fps.value, panel.width.value = 1.0, 5, 32
            panel.output.value, panel.name.value = "PNG frames", "browser"
            click(driver, "//button[normalize-space(.)='Render']")
            wait_for(lambda: panel.status.content.startswith("written:"), 300, "the render")
    finally:
        v.close()
    out = tmp_path / "run" / "camera_paths" / "browser"
    cli_out = tmp_path / "cli_frames"
    render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, camera_path=out.with_suffix(".json"),
                           out=cli_out, depth=False))  # fmt: skip
    frames = sorted(out.iterdir())
    assert len(frames) == 5
    for ours, theirs in zip(frames, sorted(cli_out.iterdir()), strict=True):
        np.testing.assert_array_equal(iio.imread(ours), iio.imread(theirs))
