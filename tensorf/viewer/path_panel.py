"""The viewer's camera path panel: keyframes taken from the browser's view, a path through
them (`tensorf.geometry.camera_path`) played in the page, saved as `<run>/camera_paths/NAME.json`,
and rendered to a video or PNG frames in the background of the viewer's process.

The render button writes what `render_360.py --camera-path <run>/camera_paths/NAME.json
--no-depth` writes (the viewer's `render_path` and the command line share
`tensorf.render.frames.render_frames`), from the field the viewer shows.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import viser

from tensorf.errors import ConfigError
from tensorf.geometry import camera_path
from tensorf.geometry.camera_path import CameraPath, Keyframe
from tensorf.viewer.viser_cameras import c2w_from_viser, viser_wxyz

FOLDER = "camera_paths"  # in the run directory, as nerfstudio's viewer names it
NAME = re.compile(r"[A-Za-z0-9._-]+")
# While training runs, a render job spends at most a fifth of the time rendering (as the
# viewer's own frames of training's progress), so training is not slowed beyond that.
TRAINING_SHARE = 0.2


class PathPanel:
    """Keyframes and the path through them, in the run's world (OpenGL camera-to-world)."""

    def __init__(self, server: viser.ViserServer, run_dir: Path, size: tuple[int, int],
                 viewer) -> None:  # fmt: skip
        """`size`: the default render (width, height); `viewer`: the FieldViewer, for its
        field, config and whether training runs."""
        self.server, self.run_dir, self.viewer = server, Path(run_dir), viewer
        self.keyframes: list[Keyframe] = []
        self.job: threading.Thread | None = None
        self._aspect = size[0] / size[1]
        self._drawn: list = []
        self._drawing = threading.Lock()  # buttons and fields call back on viser's threads
        gui = server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            add = gui.add_button("Add keyframe (this view)")
            self._list = gui.add_markdown("no keyframes yet")
            self.selected = gui.add_number("Keyframe", 1, min=1, max=1, step=1)
            move, go, delete = (gui.add_button(label) for label in
                                ("Move it to this view", "Go to it", "Delete it"))  # fmt: skip
            self.seconds = gui.add_number("Duration (s)", 4.0, min=0.1, max=3600.0, step=0.1)
            self.fps = gui.add_number("Frames per second", 30, min=1, max=240, step=1)
            self.smoothness = gui.add_slider("Smoothness", min=0.0, max=1.0, step=0.05,
                                             initial_value=1.0)  # fmt: skip
            self.loop = gui.add_checkbox("Loop", False)
            # A tiny training image (a downscaled test scene) is a valid default too.
            width = min(max(int(size[0]), 1), camera_path.MAX_SIZE)
            self.width = gui.add_number("Width (px)", width, min=1, max=camera_path.MAX_SIZE,
                                        step=1)  # fmt: skip
            play = gui.add_button("Play")
            self.name = gui.add_text("Name", "path")
            save = gui.add_button("Save")
            self.output = gui.add_dropdown("Render to", ("video (.mp4)", "PNG frames"))
            render = gui.add_button("Render")
            self.progress = gui.add_progress_bar(0.0, visible=False)
            self.status = gui.add_markdown("")

        def view(event: viser.GuiEvent) -> tuple[np.ndarray, float]:
            camera = event.client.camera
            return c2w_from_viser(camera.wxyz, camera.position), float(camera.fov)

        add.on_click(lambda event: self._safely(lambda: self.add(*view(event))))
        move.on_click(lambda event: self._safely(
            lambda: self.move(self._index(), *view(event))))  # fmt: skip
        delete.on_click(lambda _: self._safely(lambda: self.delete(self._index())))
        go.on_click(lambda event: self._safely(
            lambda: self._show(event.client, self.keyframes[self._index()].c2w)))  # fmt: skip
        play.on_click(lambda event: self._safely(lambda: self._play(event.client)))
        save.on_click(lambda _: self._safely(lambda: self._report_saved(self.save())))
        render.on_click(lambda _: self._safely(lambda: self.render(
            frames=self.output.value == "PNG frames")))  # fmt: skip
        for handle in (self.seconds, self.fps, self.smoothness, self.loop):
            handle.on_update(lambda _: self._refresh())

    # --- what the buttons do (and tests call) ------------------------------------------

    def add(self, c2w: np.ndarray, fov: float) -> None:
        self.keyframes.append(Keyframe(np.asarray(c2w, np.float64), fov))
        self._refresh(select=len(self.keyframes))

    def move(self, i: int, c2w: np.ndarray, fov: float) -> None:
        self.keyframes[i] = Keyframe(np.asarray(c2w, np.float64), fov)
        self._refresh()

    def delete(self, i: int) -> None:
        del self.keyframes[i]
        self._refresh()

    def path(self) -> CameraPath:
        """The path through the keyframes with the panel's settings."""
        if not self.keyframes:
            raise ConfigError("add a keyframe first")
        width = int(self.width.value)
        height = max(1, round(width / self._aspect))
        return camera_path.from_keyframes(
            self.keyframes, float(self.seconds.value), float(self.fps.value), width, height,
            float(self.smoothness.value), bool(self.loop.value),
        )  # fmt: skip

    def file(self, suffix: str = ".json") -> Path:
        """<run>/camera_paths/<name><suffix>."""
        name = self.name.value.strip()
        if not NAME.fullmatch(name):
            raise ConfigError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
        return self.run_dir / FOLDER / f"{name}{suffix}"

    def save(self) -> Path:
        """Write the path; returns where."""
        return camera_path.write(self.path(), self.file())

    def render(self, frames: bool = False, done: Callable[[Path], None] | None = None) -> Path:
        """Save the path, then render it from the field shown now, on a thread of its own:
        to <run>/camera_paths/<name>.mp4, or numbered PNGs in <run>/camera_paths/<name>/.
        Returns the output's path; `done(out)` is called when it is written."""
        if self.job is not None and self.job.is_alive():
            raise ConfigError("a render is running; wait for it to finish")
        field = self.viewer.current_field()
        if field is None:
            raise ConfigError("no field to render yet")
        path = self.path()
        self.save()
        out = self.file("" if frames else ".mp4")
        self.job = threading.Thread(target=self._render_job, args=(path, out, field, done),
                                    daemon=True)  # fmt: skip
        self.job.start()
        return out

    # --- the page ---------------------------------------------------------------------

    def _index(self) -> int:
        if not self.keyframes:
            raise ConfigError("no keyframes yet")
        return min(max(int(self.selected.value), 1), len(self.keyframes)) - 1

    def _safely(self, action: Callable[[], object]) -> None:
        """A button's action; what cannot be done is said on the page."""
        try:
            action()
        except ConfigError as error:
            self.status.content = f"**cannot**: {error}"

    def _report_saved(self, file: Path) -> None:
        self.status.content = f"saved `{file}`"

    def _refresh(self, select: int | None = None) -> None:
        """The list, the keyframe selector and, in the scene, the keyframes and the path."""
        with self._drawing:
            n = len(self.keyframes)
            self.selected.max = max(n, 1)
            if select is not None:
                self.selected.value = select
            elif self.selected.value > max(n, 1):
                self.selected.value = max(n, 1)
            self._list.content = "  \n".join(
                f"{i + 1}. at ({', '.join(f'{x:.2f}' for x in k.c2w[:3, 3])}), "
                f"{np.degrees(k.fov):.0f} deg" for i, k in enumerate(self.keyframes)
            ) or "no keyframes yet"  # fmt: skip
            for handle in self._drawn:
                handle.remove()
            self._drawn = []
            scene = self.server.scene
            size = self.viewer.scene_size
            for i, key in enumerate(self.keyframes):
                self._drawn.append(scene.add_camera_frustum(
                    f"/camera_path/key_{i}", fov=key.fov, aspect=self._aspect, scale=0.06 * size,
                    thickness=0.003 * size, color=(40, 120, 255), wxyz=viser_wxyz(key.c2w),
                    position=key.c2w[:3, 3],
                ))  # fmt: skip
            if n > 1:
                smoothness, loop = float(self.smoothness.value), bool(self.loop.value)
                c2w, _ = camera_path.interpolate(self.keyframes, 40 * n, smoothness, loop)
                self._drawn.append(scene.add_spline_catmull_rom(
                    "/camera_path/spline", c2w[:, :3, 3], thickness=0.004 * size,
                    color=(40, 120, 255),
                ))  # fmt: skip

    def _show(self, client: viser.ClientHandle, c2w: np.ndarray) -> None:
        with client.atomic():
            client.camera.wxyz = viser_wxyz(c2w)
            client.camera.position = c2w[:3, 3]

    def _play(self, client: viser.ClientHandle) -> None:
        """Move this browser's camera along the path in real time, on a thread of its own."""
        path = self.path()

        def play() -> None:
            start = time.monotonic()
            for i, c2w in enumerate(path.c2w):
                time.sleep(max(0.0, start + i / path.fps - time.monotonic()))
                self._show(client, c2w)

        threading.Thread(target=play, daemon=True).start()

    def _render_job(self, path: CameraPath, out: Path, field, done) -> None:
        n = len(path.c2w)
        self.progress.value, self.progress.visible = 0.0, True
        self.status.content = f"rendering {n} frames to `{out}`"
        last = [time.monotonic()]

        def after_frame(i: int) -> None:
            self.progress.value = 100.0 * (i + 1) / n
            self.status.content = f"rendering frame {i + 1} of {n} to `{out}`"
            if self.viewer.training_runs():
                spent = time.monotonic() - last[0]
                time.sleep(spent * (1.0 - TRAINING_SHARE) / TRAINING_SHARE)
            last[0] = time.monotonic()

        try:
            self.viewer.render_path(field, path, out, after_frame)
        except Exception as error:  # noqa: BLE001 (a full disk, say: the page says so)
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            self.status.content = f"**render failed**: {reason}"
            print(f"viewer: the render of {out} failed ({reason})", file=sys.stderr)
            return
        finally:
            self.progress.visible = False
        self.status.content = f"written: `{out}`"
        if done is not None:
            done(out)
