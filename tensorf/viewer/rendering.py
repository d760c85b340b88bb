"""What the viewer shows, apart from the server and its threads: the first view of a scene, the
pinhole of a browser's camera, and a frame (RGB or depth) of a field rendered through it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from tensorf.config import TrainConfig
from tensorf.geometry.cameras import Intrinsics, average_pose, look_at, spiral_focus
from tensorf.render.image import baked, render_image
from tensorf.render.sampling import image_settings, render_settings
from tensorf.render.visualize import colorize_depth, depth_range, to_uint8


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
class Field:
    """A copy of the field to render (the trainer's own arrays are donated to the next
    step), with what rendering it needs, prepared on the render thread."""

    version: int
    step: int
    params: dict
    aabb: jax.Array
    mask: object
    resolution: tuple[int, int, int]
    settings: object = None  # RenderSettings, fitted frame after frame


def render_frame(cfg: TrainConfig, cameras: dict, field: Field, c2w: np.ndarray, k: Intrinsics,
                 mode: str, ndc: tuple[float, float] | None, mesh: Mesh,
                 cancelled: Callable[[], bool] | None = None) -> np.ndarray | None:  # fmt: skip
    """A frame (H, W, 3) uint8 of `field` from camera `c2w` (4, 4) through `k`: RGB, or depth
    colour-mapped over the scene's depth bounds (`cameras` as `checkpoint.load_cameras`
    returns them); None once `cancelled()` (asked between chunks of rays). The field's
    first frame fits its render settings and bakes its density grid, once."""
    if field.settings is None:
        density = field.params["density"]
        settings = render_settings(cfg, np.asarray(field.aabb), density.resolution, ndc,
                                   field.mask)  # fmt: skip
        field.settings = image_settings(settings, cfg.render)
        field.params = baked(field.params)  # once, not once per frame
    out, field.settings = render_image(
        field.params, cfg.model, field.settings, field.aabb, field.mask, c2w, k,
        cfg.render.chunk, mesh, cancelled,
    )  # fmt: skip
    if out is None:
        return None
    if mode == "RGB":
        return to_uint8(out["rgb"])
    if cameras["depth_bounds"] is not None:
        near, far = cameras["depth_bounds"]
    else:
        near, far = depth_range(c2w[None], np.asarray(field.aabb))
    return colorize_depth(out["depth"], out["acc"], near, far)
