"""A live view of a radiance field in the browser, served with viser.

python -m tensorf.viewer --run-dir R       # a finished (or running) run's latest checkpoint
python train.py quick ... --viewer         # the field while it trains

The browser's camera drives the render: a small preview while it moves, then a sharp frame
(abandoned as soon as the camera moves again) once it has stood still. The "Camera path"
panel (`tensorf.path_panel`) records keyframes, plays, saves and renders paths through them.

viser, not nerfview (which wraps viser for the same purpose): nerfview 0.1.3 imports torch in
its render panel without declaring it (a 2 GB install for a JAX project), ends the whole
process with `os._exit` when a render raises (a client that vanished mid-render would stop
training), and interrupts renders with `sys.settrace`, which slows every line its render
thread runs. The render loop we need over viser is short, and is below.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np
import tyro
import viser

from tensorf import checkpoint, cli, parallel
from tensorf.camera_path import CameraPath
from tensorf.cameras import Intrinsics, average_pose, look_at, spiral_focus
from tensorf.config import CHUNK, TrainConfig
from tensorf.frames import render_frames
from tensorf.path_panel import PathPanel
from tensorf.render import baked, render_image
from tensorf.training import TrainState, image_settings, ndc_for, render_settings
from tensorf.viser_cameras import c2w_from_viser, viser_wxyz
from tensorf.visualize import colorize_depth, depth_range, to_uint8

PREVIEW = 128  # longest side of the frames rendered while the camera moves
STILL = 0.25  # seconds without a camera update before the frame sharpens
MAX_FRUSTUMS = 300  # training cameras drawn (evenly spaced among them)

def frame_intrinsics(fov: float, aspect: float, longest: int) -> Intrinsics:
    """A pinhole with the browser's vertical field of view (radians) and aspect (width /
    height), `longest` pixels along its longer side."""
    if aspect >= 1.0:
        width, height = longest, max(1, round(longest / aspect))
    else:
        width, height = max(1, round(longest * aspect)), longest
    focal = 0.5 * height / np.tan(0.5 * fov)
    return Intrinsics(focal, focal, 0.5 * width, 0.5 * height, width, height)


@dataclasses.dataclass(frozen=True)
class Home:
    """Where the first view stands: the scene's up direction, a camera position, the point
    it looks at, and the training cameras' vertical field of view."""

    up: np.ndarray
    position: np.ndarray
    look_at: np.ndarray
    fov: float

    def c2w(self) -> np.ndarray:
        """(4, 4) OpenGL camera-to-world of this view, its image up along `up`."""
        return look_at(self.position, self.look_at, self.up)


def home_view(cfg: TrainConfig, cameras: dict) -> Home:
    """From the training cameras: their mean up vector; objects are looked at towards the
    box's centre, captures towards the placed centre (the origin), from a fifth further out
    than the cameras' median distance (the photos saw the whole scene from there) in the
    widest gap between two neighbouring cameras (`open_direction`): the cameras beside it
    are out of view, and none stands in front of the scene; forward-facing scenes from the
    average camera towards the spiral's focus."""
    c2w, train = cameras["c2w"], cameras["intrinsics"]
    up = c2w[:, :3, 1].mean(0)
    up = up / max(np.linalg.norm(up), 1e-9)
    fov = 2.0 * np.arctan(0.5 * train.height / train.fy)
    if cameras["kind"] == "forward-facing":
        position = average_pose(c2w)[:3, 3]
        target = spiral_focus(c2w, cameras["depth_bounds"])
    else:
        box_centre = np.reshape(cfg.schedule.aabb, (2, 3)).mean(0)
        target = np.zeros(3) if cameras["kind"] == "capture" else box_centre
        offsets = c2w[:, :3, 3] - target
        distance = 1.2 * float(np.median(np.linalg.norm(offsets, axis=-1)))
        position = target + distance * open_direction(offsets)
    return Home(up, np.asarray(position, np.float64), np.asarray(target, np.float64), fov)


def open_direction(offsets: np.ndarray) -> np.ndarray:
    """(3,) unit direction, from the point looked at, between two neighbouring cameras at
    `offsets` (n, 3) from it: of the directions halfway from each camera to its nearest
    neighbour, the one farthest from every camera (the first camera's, with one camera)."""
    units = offsets / np.maximum(np.linalg.norm(offsets, axis=-1, keepdims=True), 1e-12)
    if len(units) == 1:
        return units[0]
    cosines = units @ units.T
    np.fill_diagonal(cosines, -2.0)
    halfway = units + units[np.argmax(cosines, axis=1)]
    halfway /= np.maximum(np.linalg.norm(halfway, axis=-1, keepdims=True), 1e-12)
    clearance = (halfway @ units.T).max(axis=1)  # cosine to the nearest camera
    return halfway[int(np.argmin(clearance))]


@dataclasses.dataclass
class _Field:
    """A copy of the field to render (the trainer's own arrays are donated to the next
    step), with what rendering it needs, prepared on the render thread."""

    version: int
    step: int
    params: dict
    aabb: jax.Array
    mask: object
    resolution: tuple[int, int, int]
    settings: object = None  # RenderSettings, fitted frame after frame


@dataclasses.dataclass
class _Client:
    handle: viser.ClientHandle
    moves: int = 0  # camera updates received
    moved: float = 0.0  # when the last one came
    shown: tuple = ()  # (moves, field version, mode, sharp) of the frame on screen


T = TypeVar("T")
PORTS_TRIED = 100  # a taken port moves to the next free one, this many at most
BIND_SECONDS = 10.0  # resolving the host name and starting the server, at most


def _within(seconds: float, fn: Callable[[], T], what: str) -> T:
    """fn() on a thread of its own, given up on after `seconds` (a name server that does
    not answer, a server that never comes up): a hang becomes a one-line error."""
    result: list[tuple[bool, T | BaseException]] = []

    def run() -> None:
        try:
            result.append((True, fn()))
        except BaseException as error:  # handed to the caller's thread
            result.append((False, error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        raise cli.ConfigError(f"{what} did not finish within {seconds:g} s")
    ok, value = result[0]
    if not ok:
        raise value
    return value


def free_port(host: str, port: int, flags: tuple[str, str]) -> int:
    """The first port from `port` that `host` can listen on, found by binding it as the
    server will (viser tries 1000 ports, then waits forever for one of them to start, and
    past 65535 it fails on its own thread): a host that is not this machine's, a name that
    does not resolve, or no free port is a ConfigError naming the option."""
    host_flag, port_flag = flags
    try:
        infos = _within(BIND_SECONDS, lambda: socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ), f"{host_flag} {host}: looking the name up")  # fmt: skip
    except (OSError, UnicodeError) as error:
        raise cli.ConfigError(f"{host_flag} {host}: cannot be resolved ({error}); give an "
                              "address of this machine such as 127.0.0.1") from None  # fmt: skip
    family, _, _, _, address = infos[0]
    last = port if port == 0 else min(port + PORTS_TRIED - 1, 65535)
    for candidate in range(port, last + 1):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As asyncio's server does, so a port in TIME_WAIT counts as free here too.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address[0], candidate, *address[2:]))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    continue
                raise cli.ConfigError(
                    f"{host_flag} {host}: cannot listen there ({error.strerror or error}); "
                    "give an address of this machine such as 127.0.0.1"
                ) from None
            return candidate
    raise cli.ConfigError(f"{port_flag} {port}: ports {port} to {last} are all taken; choose "
                          f"another {port_flag} (0: any free port)")  # fmt: skip


def start_server(host: str, port: int, flags: tuple[str, str]) -> viser.ViserServer:
    """A viser server on the first free port from `port`, or a ConfigError within
    BIND_SECONDS: never a wait for a server that cannot start."""
    port = free_port(host, port, flags)
    return _within(BIND_SECONDS, lambda: viser.ViserServer(host=host, port=port, verbose=False),
                   f"{flags[0]} {host} {flags[1]} {port}: starting the viewer's server")


class FieldViewer:
    """A viser server that renders the field from each browser's camera on a thread of its
    own. The trainer hands it copies of the field (`show`) and its scalars (`report`), and
    waits in `hold` while a browser has paused training."""

    def __init__(self, cfg: TrainConfig, cameras: dict, host: str, port: int,
                 resolution: int = 512, training: bool = False,
                 flags: tuple[str, str] = ("--host", "--port"),
                 run_dir: Path | None = None) -> None:  # fmt: skip
        """`run_dir` (default: the config's) is where camera paths are saved."""
        self.cfg, self.cameras, self.resolution = cfg, cameras, resolution
        self._training = training
        self.ndc = ndc_for(cfg.render, cameras["intrinsics"])
        self.device = jax.local_devices()[0]
        # One device: the viewer's renders then hold no collectives that could interleave
        # with the training step's.
        self.mesh = parallel.data_mesh([self.device])
        self.server = start_server(host, port, flags)
        self.url = f"http://{host}:{self.server.get_port()}"
        self.frames = 0  # frames rendered, for tests and benchmarks
        self._field: _Field | None = None
        self._clients: dict[int, _Client] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._next_show = 0.0  # when the trainer may hand over a new field
        self._scene()
        self._gui(training)
        train = cameras["intrinsics"]
        self.paths = PathPanel(self.server, run_dir or cfg.run.run_dir, (train.width, train.height),
                               self)  # fmt: skip
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._thread = threading.Thread(target=self._render_loop, daemon=True)
        self._thread.start()

    # --- what the trainer and the command line call ------------------------------------

    def show(self, state: TrainState, step: int) -> None:
        """Render this state from now on. The copy is queued behind the step that made it
        and is read only on the render thread: the training loop never waits for it."""
        params, aabb, mask = jax.device_put((state.params, state.aabb, state.mask),
                                            self.device, may_alias=False)  # fmt: skip
        with self._lock:
            version = self._field.version + 1 if self._field else 0
            self._field = _Field(version, step, params, aabb, mask, tuple(state.resolution))
        self._wake.set()

    def current_field(self) -> _Field | None:
        """The field shown now (a camera path render keeps it while newer ones come)."""
        with self._lock:
            return self._field

    def render_path(self, field: _Field, path: CameraPath, out: Path,
                    after_frame: Callable[[int], None]) -> None:  # fmt: skip
        """Write the path's RGB frames of `field` to `out` (a video, or a folder of PNGs) as
        `render_360.py --camera-path --no-depth` does: the same code and chunk size."""
        render_frames(self.cfg, field.params, field.aabb, field.mask, field.resolution, self.ndc,
                      self.cameras["depth_bounds"], path.c2w,
                      [path.intrinsics(i) for i in range(len(path.c2w))], {"rgb": out}, ["rgb"],
                      path.fps, CHUNK, self.mesh, after_frame)  # fmt: skip

    def training_runs(self) -> bool:
        """Whether a trainer is stepping (not paused) beside this viewer."""
        return self._training and not self._paused.is_set()

    def wants_field(self) -> bool:
        """Whether a browser is watching and the renderer is ready for a newer field: it
        spends at most about a fifth of the time rendering training's progress."""
        return bool(self._clients) and time.monotonic() >= self._next_show

    def report(self, step: int, n_iters: int, scalars: dict, grid: tuple[int, int, int]) -> None:
        """The training panel's figures."""
        self._stats.content = (
            f"**step** {step} of {n_iters}  \n**loss** {scalars['loss']:.5f}  \n"
            f"**PSNR** {scalars['psnr']:.2f} dB  \n**rays/s** {scalars['rays_per_s']:.0f}  \n"
            f"**grid** {' x '.join(map(str, grid))}"
        )

    def hold(self, state: TrainState, step: int, stop) -> float:
        """While a browser has paused training, show this state and wait (until `stop()`
        is true, e.g. a signal came); returns the seconds waited."""
        if not self._paused.is_set():
            return 0.0
        start = time.monotonic()
        self.show(state, step)
        while self._paused.is_set() and not stop() and not self._stop.is_set():
            time.sleep(0.05)
        return time.monotonic() - start

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.server.stop()

    # --- the page -------------------------------------------------------------------------

    def _gui(self, training: bool) -> None:
        gui = self.server.gui
        if training:
            with gui.add_folder("Training"):
                self._stats = gui.add_markdown("waiting for the first log step")
                self.pause_button = gui.add_button("Pause training")

                @self.pause_button.on_click
                def _(_) -> None:
                    if self._paused.is_set():
                        self._paused.clear()
                        self.pause_button.label = "Pause training"
                    else:
                        self._paused.set()
                        self.pause_button.label = "Resume training"

        with gui.add_folder("View"):
            self.mode = gui.add_dropdown("Show", ("RGB", "depth"), initial_value="RGB")
            self._sharp = gui.add_slider("Sharp frame (px)", min=64, max=2048, step=32,
                                         initial_value=self.resolution)  # fmt: skip
            self.show_cameras = gui.add_checkbox("Training cameras", initial_value=True)
            self._field_step = gui.add_markdown("")

        @self.show_cameras.on_update
        def _(_) -> None:
            for handle in self._frustums:
                handle.visible = self.show_cameras.value

        for handle in (self.mode, self._sharp):
            handle.on_update(lambda _: self._wake.set())

    def _scene(self) -> None:
        c2w, train = self.cameras["c2w"], self.cameras["intrinsics"]
        home = home_view(self.cfg, self.cameras)
        self.server.scene.set_up_direction(home.up)
        camera = self.server.initial_camera
        camera.position, camera.look_at, camera.up, camera.fov = (
            home.position, home.look_at, home.up, home.fov
        )  # fmt: skip
        size = np.median(np.linalg.norm(c2w[:, :3, 3] - home.look_at, axis=-1))
        self.scene_size = float(size)  # for the sizes of what is drawn in the scene
        shown = np.linspace(0, len(c2w) - 1, min(len(c2w), MAX_FRUSTUMS)).astype(int)
        self._frustums = [
            self.server.scene.add_camera_frustum(
                f"/training_cameras/{i}", fov=home.fov, aspect=train.width / train.height,
                scale=0.05 * size, thickness=0.002 * size, color=(255, 160, 40),
                wxyz=viser_wxyz(c2w[i]), position=c2w[i, :3, 3],
            )
            for i in np.unique(shown)
        ]  # fmt: skip

    def _connect(self, handle: viser.ClientHandle) -> None:
        client = _Client(handle)

        @handle.camera.on_update
        def _(_) -> None:
            client.moves += 1
            client.moved = time.monotonic()
            self._wake.set()

        with self._lock:
            self._clients[handle.client_id] = client
        self._wake.set()

    def _disconnect(self, handle: viser.ClientHandle) -> None:
        with self._lock:
            self._clients.pop(handle.client_id, None)
        self._wake.set()

    # --- the render thread ----------------------------------------------------------------

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            with self._lock:
                field, clients = self._field, list(self._clients.values())
            for client in clients:
                try:
                    self._serve(client, field)
                except Exception as error:  # noqa: BLE001 (a browser gone mid-frame, say)
                    if client.handle.client_id in self._clients:
                        print(f"viewer: a frame failed ({type(error).__name__}: {error})",
                              file=sys.stderr)  # fmt: skip
                        time.sleep(1.0)
                        self._wake.set()  # try again

    def _serve(self, client: _Client, field: _Field | None) -> None:
        """Render what the client should see next, if anything: a preview after the camera
        moved, a sharp frame once it stood still for STILL seconds (or the field changed)."""
        camera = client.handle.camera
        if field is None or camera.update_timestamp == 0.0:
            return
        moves, mode = client.moves, self.mode.value
        shown = client.shown
        if shown[:1] != (moves,):
            sharp = False
        elif shown == (moves, field.version, mode, True):
            return
        elif time.monotonic() - client.moved < STILL:
            self._wake.set()  # come back once it has stood still
            time.sleep(0.02)
            return
        else:
            sharp = True
        c2w = c2w_from_viser(camera.wxyz, camera.position)
        longest = int(self._sharp.value) if sharp else PREVIEW
        k = frame_intrinsics(camera.fov, camera.aspect, min(longest, int(self._sharp.value)))

        def cancelled() -> bool:  # a sharp frame is abandoned once the camera moves again
            return self._stop.is_set() or (sharp and client.moves != moves)

        started = time.monotonic()
        frame = self.render(c2w, k, mode, cancelled, field)
        if frame is None:
            return
        client.handle.scene.set_background_image(frame, format="jpeg",
                                                 jpeg_quality=90 if sharp else 60)  # fmt: skip
        client.shown = (moves, field.version, mode, sharp)
        self.frames += 1
        self._field_step.content = f"field of step {field.step}"
        if sharp:
            self._next_show = time.monotonic() + max(1.0, 4.0 * (time.monotonic() - started))
        self._wake.set()

    def render(self, c2w: np.ndarray, k: Intrinsics, mode: str = "RGB", cancelled=None,
               field: _Field | None = None) -> np.ndarray | None:  # fmt: skip
        """A frame (H, W, 3) uint8 of the field (default: the latest shown) from camera
        `c2w` (4, 4) through `k`, RGB or depth; None once `cancelled()` (asked between
        chunks of rays)."""
        field = field or self._field
        if field.settings is None:
            density = field.params["density"]
            settings = render_settings(self.cfg, np.asarray(field.aabb), density.resolution,
                                       self.ndc, field.mask)  # fmt: skip
            field.settings = image_settings(settings, self.cfg.render)
            field.params = baked(field.params)  # once, not once per frame
        out, field.settings = render_image(
            field.params, self.cfg.model, field.settings, field.aabb, field.mask, c2w, k,
            self.cfg.render.chunk, self.mesh, cancelled,
        )  # fmt: skip
        if out is None:
            return None
        if mode == "RGB":
            return to_uint8(out["rgb"])
        if self.cameras["depth_bounds"] is not None:
            near, far = self.cameras["depth_bounds"]
        else:
            near, far = depth_range(c2w[None], np.asarray(field.aabb))
        return colorize_depth(out["depth"], out["acc"], near, far)


@dataclasses.dataclass(frozen=True)
class ViewerArgs:
    """Look at a run's field in the browser: its latest checkpoint, reloaded as a running
    trainer saves newer ones."""

    run_dir: Path
    """Run directory written by train.py / train_lego.py."""
    host: str = "127.0.0.1"
    """Address to listen on. The default serves this machine only; from another machine,
    forward the port over ssh (`ssh -L 8080:localhost:8080 host`) rather than listen on
    0.0.0.0, which lets anyone who can reach this machine see the scene."""
    port: int = 8080
    """Port to listen on (the next free one of the following 99 if it is taken; 0: any free
    port)."""
    resolution: int = 512
    """Longest side, in pixels, of the sharp frame drawn once the camera stands still
    (also a slider on the page)."""
    reload_seconds: float = 5.0
    """How often to look for a newer checkpoint of a run that is still training."""


def serve(args: ViewerArgs, until=None) -> None:
    """Serve the run until Ctrl-C (or until `until()` is true)."""
    problems = cli.host_problems("--host", args.host)
    if problems:
        raise cli.ConfigError("; ".join(problems))
    cli.check_numbers(("--port", args.port, 0, 65535, int),
                      ("--resolution", args.resolution, 64, 2048, int),
                      ("--reload-seconds", args.reload_seconds, 0.1, 86400.0, float))  # fmt: skip
    cfg, state = checkpoint.load_run(args.run_dir)
    viewer = FieldViewer(cfg, checkpoint.load_cameras(args.run_dir), args.host, args.port,
                         args.resolution, run_dir=args.run_dir)  # fmt: skip
    viewer.show(state, int(state.step))
    print(f"viewer: open {viewer.url} (step {int(state.step)} of {args.run_dir}); Ctrl-C stops")
    mngr, step = checkpoint.manager(args.run_dir, create=False), int(state.step)
    try:
        while not (until and until()):
            time.sleep(args.reload_seconds)
            mngr.reload()
            if (mngr.latest_step() or 0) > step:
                state = checkpoint.restore_latest(mngr, cfg)[0]
                step = int(state.step)
                viewer.show(state, step)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()


def main() -> None:
    """The command line (`python -m tensorf.viewer`, `tensorf-viewer`)."""
    cli.run_main(lambda: serve(tyro.cli(ViewerArgs)))


if __name__ == "__main__":
    main()
