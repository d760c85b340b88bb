"""The live viewer, looked at through a real headless browser (Debian's chromium, driven by
Selenium through Debian's chromedriver): a trained sphere appears where and in the colours
the analytic oracle says, it follows the camera, and training with a browser watching (and
pausing, and going away) ends exactly where training without one does.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from synthetic import sphere_config, surface_colour

from tensorf import experiment
from tensorf.config import override
from tensorf.geometry.cameras import pixel_rays
from tensorf.train import checkpoint, steps
from tensorf.viewer import rendering, server
from tensorf.viewer.__main__ import ViewerArgs, serve

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no browser: needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver, which .ci/run does)",
)
SPHERE_RADIUS = 0.6  # write_sphere_scene's


def test_viser_cameras_are_ours_with_opencv_axes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        position = rng.normal(size=3)
        home = rendering.Home(up=np.array([0.0, 0.0, 1.0]), position=position,
                           look_at=rng.normal(size=3) * 0.1, fov=0.8)  # fmt: skip
        c2w = home.c2w()
        np.testing.assert_allclose(server.c2w_from_viser(server.viser_wxyz(c2w), position), c2w,
                                   atol=1e-9)  # fmt: skip
        # The centre pixel's ray runs through the point looked at; image up is world up.
        k = rendering.frame_intrinsics(home.fov, 1.5, 64)  # 64 x 43: the centre is (31.5, 21)
        assert (k.width, k.height) == (64, 43)
        rays = pixel_rays(c2w[None], np.array([31.5]), np.array([21.0]), k)
        origin, direction = (np.asarray(x, np.float64)[0] for x in rays)
        to_target = home.look_at - origin
        np.testing.assert_allclose(direction, to_target / np.linalg.norm(to_target), atol=1e-5)
        assert c2w[2, 1] > 0
    k = rendering.frame_intrinsics(2 * np.arctan(0.5), 0.5, 100)  # 45 degrees, portrait
    assert (k.width, k.height, k.fy) == (50, 100, pytest.approx(100.0))


def assert_first_view_shows_the_scene(run_dir, images: np.ndarray) -> None:
    """The viewer's first view of a run (rendered without a browser) shows the scene: RGB
    near the training images' mean colour and far from flat, a depth map that varies."""
    cfg, state = checkpoint.load_run(run_dir)
    cameras = checkpoint.load_cameras(run_dir)
    v = server.FieldViewer(cfg, cameras, "127.0.0.1", 0)
    try:
        v.show(state, int(state.step))
        home = rendering.home_view(cfg, cameras)
        train = cameras["intrinsics"]
        k = rendering.frame_intrinsics(home.fov, train.width / train.height, 64)
        rgb, depth = (v.render(home.c2w(), k, mode) for mode in ("RGB", "depth"))
    finally:
        v.close()
    rgb = rgb / 255.0
    assert abs(rgb.mean() - images.mean()) < 0.08 and rgb.std() > 0.05, (rgb.mean(), rgb.std())
    assert depth.std() > 5


@contextmanager
def browser(url: str):
    """Headless chromium showing `url`, with WebGL in software (SwiftShader)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=800,600", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Recorded(server.FieldViewer):
    """The viewer, remembered so that the test can reach its clients and handles."""

    made: list[Recorded] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.paused_seconds = 0.0
        self.held_at = None  # the step at which training waited for a pause to end
        Recorded.made.append(self)

    def hold(self, state, step: int, stop) -> float:
        if self._paused.is_set():
            self.held_at = step
        waited = super().hold(state, step, stop)
        self.paused_seconds += waited
        return waited


@pytest.fixture
def recorded(monkeypatch):
    Recorded.made = []
    monkeypatch.setattr(server, "FieldViewer", Recorded)
    return Recorded.made


def the_client(v: server.FieldViewer):
    wait_for(lambda: v._clients, 60, "the browser to connect")
    return next(iter(v._clients.values()))


def sharp_frame_shown(client) -> bool:
    return bool(client.shown) and client.shown[0] == client.moves and client.shown[3]


def wait_for_settled_frame(client, what: str, camera_there=lambda: True) -> None:
    """Wait until the camera is where the test put it, a sharp frame of it is on screen and
    no camera update has come for a second since: the browser may answer one move with
    several updates, the last of them after a frame of an earlier one was shown."""
    deadline = time.monotonic() + 180
    while True:
        wait_for(lambda: camera_there() and sharp_frame_shown(client),
                 deadline - time.monotonic(), what)  # fmt: skip
        moves = client.moves
        time.sleep(1.0)  # the browser draws what it was sent
        if client.moves == moves and sharp_frame_shown(client):
            return


def oracle(camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The sphere as the browser's camera sees it, on a (height, width) grid of screen pixels:
    colour (H, W, 3) and how far inside the silhouette each pixel's ray passes (H, W), in
    units of the radius (negative: it misses)."""
    c2w = server.c2w_from_viser(camera.wxyz, camera.position)
    k = rendering.frame_intrinsics(camera.fov, width / height, max(width, height))
    rows, cols = np.mgrid[0:height, 0:width]
    origins, dirs = (np.asarray(x, np.float64) for x in pixel_rays(c2w, cols, rows, k))
    b = np.sum(origins * dirs, -1)
    closest = np.linalg.norm(origins - b[..., None] * dirs, axis=-1)
    t = -b - np.sqrt(np.maximum(SPHERE_RADIUS**2 - closest**2, 0.0))
    normals = (origins + t[..., None] * dirs) / SPHERE_RADIUS
    inside = 1.0 - closest / SPHERE_RADIUS
    return np.where(inside[..., None] > 0, surface_colour(normals), 1.0), inside


def check_screenshot(driver, camera) -> tuple[np.ndarray, np.ndarray]:
    """The canvas's pixels (H, W, 3) in [0, 1] match the oracle: the sphere's colours well
    inside its silhouette, white well outside it. Returns them, and where the sphere is.

    The canvas fills the page, but viser lowers its resolution (the camera's image size) by
    up to a quarter when software WebGL draws slowly (its adaptive DPR) and stretches it to
    the page: the oracle uses the page's grid."""
    canvas = iio.imread(driver.get_screenshot_as_png())[..., :3] / 255.0
    expected, inside = oracle(camera, *canvas.shape[:2])
    assert abs(camera.aspect / (canvas.shape[1] / canvas.shape[0]) - 1) < 0.01
    # The top rows hold viser's "software WebGL" notice.
    below_notice = np.arange(canvas.shape[0])[:, None] > 160
    on_sphere, off_sphere = (inside > 0.15) & below_notice, (inside < -0.3) & below_notice
    assert on_sphere.sum() > 2000 and off_sphere.sum() > 2000
    error = np.abs(canvas - expected).mean(-1)
    assert np.median(error[on_sphere]) < 0.06, np.median(error[on_sphere])
    assert np.percentile(error[on_sphere], 90) < 0.15
    assert np.median(canvas[off_sphere]) > 0.95
    return canvas, on_sphere


@needs_browser
def test_browser_shows_the_sphere_and_follows_the_camera(sphere_run, recorded):
    cfg, _ = sphere_run
    stop = threading.Event()
    args = ViewerArgs(run_dir=cfg.run.run_dir, port=0, reload_seconds=0.2)
    serving = threading.Thread(target=serve, args=(args, stop.is_set))
    serving.start()
    try:
        wait_for(lambda: recorded, 60, "the viewer to start")
        v = recorded[0]
        assert v.url.startswith("http://127.0.0.1:")
        with browser(v.url) as driver:
            client = the_client(v)
            v.show_cameras.value = False  # frustums would cross the frame
            wait_for_settled_frame(client, "a sharp frame")
            camera = client.handle.camera
            first, on_first = check_screenshot(driver, camera)

            # A quarter turn round the sphere: other colours face the camera.
            moves, position = client.moves, np.array(camera.position)
            target = np.array([-position[1], position[0], position[2]])
            camera.position = target
            camera.look_at = np.zeros(3)

            def camera_there() -> bool:  # the browser's own camera, not just what was sent
                return (client.moves > moves and np.allclose(camera.position, target, atol=1e-3)
                        and np.allclose(camera.look_at, 0.0, atol=1e-3))  # fmt: skip

            wait_for_settled_frame(client, "the frame of the moved camera", camera_there)
            second, on_second = check_screenshot(driver, camera)
            both = on_first & on_second  # the sphere stays in the middle: its colours changed
            assert np.abs(first - second)[both].mean() > 0.1
    finally:
        stop.set()
        serving.join(timeout=60)
    assert not serving.is_alive()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_browser
def test_training_with_a_browser_watching_ends_as_without(sphere_run, sphere_scene, tmp_path,
                                                           recorded, monkeypatch):  # fmt: skip
    reference, reference_metrics = sphere_run
    cfg = override(sphere_config(sphere_scene, tmp_path / "watched"), viewer=True,
                   viewer_port=free_port())  # fmt: skip
    seen = {}
    # The run takes seconds in calls of up to 64 steps, less than a browser may take to
    # start: from its third call on, each call waits up to 5 s here (outside the step) for
    # the page to pause training, so the pause lands mid-run. What it computes is not
    # touched.
    paused = threading.Event()
    real, calls = steps.train_steps, []

    def slowed(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) >= 3:
            paused.wait(timeout=5.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "train_steps", slowed)

    def watch() -> None:
        """Watch; pause; close the tab while paused; resume."""
        wait_for(lambda: recorded, 120, "the viewer to start")
        v, clicked = recorded[0], False
        try:
            with browser(v.url):
                client = the_client(v)
                wait_for(lambda: v.frames >= 2, 120, "frames of the field as it trains")
                v.pause_button.value = True
                clicked = True
                wait_for(v._paused.is_set, 60, "the pause to reach the viewer")
                paused.set()
                wait_for(lambda: v.held_at is not None, 120, "training to stop")
                # Paused, the viewer shows the state training stopped at.
                wait_for(lambda: v._field.step == v.held_at and client.shown[1] == v._field.version
                         and client.shown[3], 120, "a sharp frame of the paused field")  # fmt: skip
                seen["paused_at"] = v.held_at
                time.sleep(1.0)
            time.sleep(0.5)
        finally:
            paused.set()
            if clicked:
                v.pause_button.value = True  # resume, with no browser left

    watcher = threading.Thread(target=watch)
    watcher.start()
    metrics = experiment.train(cfg)
    watcher.join(timeout=60)
    v = recorded[0]
    assert 0 < seen["paused_at"] < 300 and v.paused_seconds >= 1.4, (seen, v.paused_seconds)
    assert v.frames >= 3 and not v._clients

    state = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[0]
    expected = checkpoint.restore_latest(checkpoint.manager(reference.run.run_dir), reference)[0]
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert metrics["psnr"] == reference_metrics["psnr"]
