"""A live view of a radiance field in the browser, served with viser.

python -m tensorf.viewer --run-dir R       # a finished (or running) run's latest checkpoint
python train.py quick ... --viewer         # the field while it trains

The browser's camera drives the render: a small preview while it moves, then a sharp frame
(abandoned as soon as the camera moves again) once it has stood still. The "Camera path"
panel (`tensorf.viewer.path_panel`) records keyframes, plays, saves and renders paths through them.

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
import viser

from tensorf import cli, parallel
from tensorf.config import CHUNK, TrainConfig
from tensorf.geometry.camera_path import CameraPath
from tensorf.geometry.cameras import Intrinsics
from tensorf.render.frames import render_frames
from tensorf.render.sampling import ndc_for
from tensorf.train.train_state import TrainState
from tensorf.viewer.path_panel import PathPanel
from tensorf.viewer.rendering import Field, frame_intrinsics, home_view, render_frame
from tensorf.viewer.viser_cameras import c2w_from_viser, viser_wxyz

PREVIEW = 128  # longest side of the frames rendered while the camera moves
STILL = 0.25  # seconds without a camera update before the frame sharpens
MAX_FRUSTUMS = 300  # training cameras drawn (evenly spaced among them)


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
        self._field: Field | None = None
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
            self._field = Field(version, step, params, aabb, mask, tuple(state.resolution))
        self._wake.set()

    def current_field(self) -> Field | None:
        """The field shown now (a camera path render keeps it while newer ones come)."""
        with self._lock:
            return self._field

    def render_path(self, field: Field, path: CameraPath, out: Path,
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

    def _serve(self, client: _Client, field: Field | None) -> None:
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
               field: Field | None = None) -> np.ndarray | None:  # fmt: skip
        """A frame (H, W, 3) uint8 of the field (default: the latest shown) from camera
        `c2w` (4, 4) through `k`, RGB or depth; None once `cancelled()` (asked between
        chunks of rays)."""
        return render_frame(self.cfg, self.cameras, field or self._field, c2w, k, mode,
                            self.ndc, self.mesh, cancelled)  # fmt: skip
