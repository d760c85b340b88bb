"""Camera paths as files, in nerfstudio's `camera_path.json` format, and paths through
keyframes.

The format (what nerfstudio's viewer saves and `ns-render camera-path` reads): a list
`camera_path` of frames, each a row-major 4 x 4 OpenGL `camera_to_world` (camera looking
down -z, +y up, as ours) and a vertical field of view `fov` in degrees; one image size
`render_width` x `render_height` with the principal point at its centre; `seconds` (the
video's frame rate is frames / seconds, as ns-render's) and `fps`; `camera_type`
(only "perspective" is rendered here); and the `keyframes` it was made from.

Which world: a path written here (`render_360.py --save-path`, the viewer) is in the run's
world, the one its checkpoints and `cameras.json` live in. A path made by nerfstudio is in
nerfstudio's world: its dataparser maps the capture's world x to
`scale * (transform @ [x, 1])` (its `dataparser_transforms.json`, where `transform`
already includes the capture's `applied_transform`, so it starts from COLMAP's world, as
our placement does); `from_nerfstudio` undoes that and applies our placement.

Keyframes are spaced evenly in time. Positions (and the field of view) follow a cardinal
cubic spline whose tangents are `smoothness` times Catmull-Rom's (1: Catmull-Rom; 0: the
camera eases to a stop at each keyframe); orientations follow Shoemake's squad (spherical
cubic) with its inner control points pulled in by the same factor, over a time warp that
eases exactly as the positions do at smoothness 0. Every keyframe lies on the path.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from tensorf import outputs, safe_json
from tensorf.errors import ConfigError
from tensorf.geometry import quaternions
from tensorf.geometry.cameras import Intrinsics

MAX_SIZE = 8192  # pixels per side, as --width / --height
MAX_FRAMES = 10**6  # as --frames
# nerfstudio's camera types other than perspective: rendered by other projections.
OTHER_TYPES = ("fisheye", "equirectangular", "omnidirectional", "vr180", "orthophoto")


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """A camera the path passes through: (4, 4) OpenGL camera-to-world and vertical field
    of view in radians."""

    c2w: np.ndarray
    fov: float


@dataclasses.dataclass(frozen=True, eq=False)
class CameraPath:
    """Cameras to render: c2w (frames, 4, 4) OpenGL camera-to-world and fov (frames,)
    vertical field of view in radians, at width x height pixels, lasting `seconds`."""

    c2w: np.ndarray
    fov: np.ndarray
    width: int
    height: int
    seconds: float
    keyframes: tuple[Keyframe, ...] = ()
    smoothness: float = 1.0
    loop: bool = False

    @property
    def fps(self) -> float:
        return len(self.c2w) / self.seconds

    def intrinsics(self, i: int, width: int | None = None) -> Intrinsics:
        """Frame i's pinhole (principal point at the centre, square pixels, as ns-render's),
        at `width` pixels wide (default: the path's) with the same vertical field of view."""
        width = width or self.width
        height = max(1, round(self.height * width / self.width))
        focal = 0.5 * height / math.tan(0.5 * float(self.fov[i]))
        return Intrinsics(focal, focal, 0.5 * width, 0.5 * height, width, height)

    def with_world(self, transform: np.ndarray) -> CameraPath:
        """The same path with every camera (and keyframe) moved by the similarity
        `transform` (4, 4)."""
        moved = [Keyframe(move_cameras(transform, k.c2w[None])[0], k.fov) for k in self.keyframes]
        return dataclasses.replace(self, c2w=move_cameras(transform, self.c2w),
                                   keyframes=tuple(moved))  # fmt: skip


def from_keyframes(
    keyframes: list[Keyframe], seconds: float, fps: float, width: int, height: int,
    smoothness: float = 1.0, loop: bool = False,
) -> CameraPath:  # fmt: skip
    """The path through `keyframes` lasting `seconds` at `fps` (at least one frame)."""
    n = max(1, round(seconds * fps))
    c2w, fov = interpolate(keyframes, n, smoothness, loop)
    return CameraPath(c2w, fov, int(width), int(height), n / fps, tuple(keyframes), smoothness,
                      loop)  # fmt: skip


def from_poses(c2w: np.ndarray, intrinsics: Intrinsics, fps: float) -> CameraPath:
    """A path of the cameras (frames, 4, 4), all with `intrinsics`' vertical field of view
    and image size (a principal point off the centre is not kept: the format has none)."""
    fov = 2.0 * math.atan(0.5 * intrinsics.height / intrinsics.fy)
    c2w = np.asarray(c2w, np.float64)
    return CameraPath(c2w, np.full(len(c2w), fov), intrinsics.width, intrinsics.height,
                      len(c2w) / fps)  # fmt: skip


# --- interpolation ---------------------------------------------------------------------


def frame_times(n_keyframes: int, n: int, loop: bool) -> np.ndarray:
    """(n,) spline parameter of each frame: keyframe k at k; an open path runs from the
    first keyframe to the last, a loop from the first back to (not including) it."""
    segments = n_keyframes if loop else n_keyframes - 1
    if loop:
        return np.arange(n) * segments / n
    return np.linspace(0.0, segments, n) if n > 1 else np.zeros(1)


def interpolate(
    keyframes: list[Keyframe], n: int, smoothness: float = 1.0, loop: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """n frames along the path through `keyframes`: c2w (n, 4, 4) and fov (n,)."""
    if not keyframes:
        raise ConfigError("a camera path needs at least one keyframe")
    k = len(keyframes)
    poses = np.stack([np.asarray(f.c2w, np.float64) for f in keyframes])
    # Positions and field of view as one 4-vector per keyframe.
    points = np.concatenate([poses[:, :3, 3], [[f.fov] for f in keyframes]], axis=1)
    quats = quaternions.aligned([quaternions.from_matrix(p[:3, :3]) for p in poses])
    # Catmull-Rom tangents (one-sided at the ends of an open path), scaled by smoothness.
    index = np.arange(k)
    after = (index + 1) % k if loop else np.minimum(index + 1, k - 1)
    before = (index - 1) % k if loop else np.maximum(index - 1, 0)
    spans = np.full(k, 2.0) if loop else np.maximum(after - before, 1).astype(np.float64)
    tangents = smoothness * (points[after] - points[before]) / spans[:, None]
    # Squad's inner control points: a_i = q_i exp(-(log(q_i^-1 q_i+1) + log(q_i^-1 q_i-1)) / 4).
    mul, log, conj = quaternions.mul, quaternions.log, quaternions.conj
    logs = [log(mul(conj(q), quats[after[i]])) + log(mul(conj(q), quats[before[i]]))
            for i, q in enumerate(quats)]  # fmt: skip
    if not loop:  # no neighbour beyond the ends: no bend there
        logs[0] = logs[-1] = np.zeros(3)
    inner = np.stack([mul(quats[i], quaternions.exp(-smoothness * logs[i] / 4.0))
                      for i in range(k)])  # fmt: skip

    c2w, fov = np.tile(np.eye(4), (n, 1, 1)), np.empty(n)
    for j, t in enumerate(frame_times(k, n, loop)):
        i = min(int(t), k - 1 if loop else max(k - 2, 0))
        u, nxt = t - i, (i + 1) % k
        # The cubic Hermite basis.
        h01, h10, h11 = u * u * (3.0 - 2.0 * u), u * (1.0 - u) ** 2, u * u * (u - 1.0)
        a, b = points[i], points[nxt]
        point = a + h01 * (b - a) + h10 * tangents[i] + h11 * tangents[nxt]
        # At smoothness 0 the points ease (h01 is smoothstep); orientations follow suit.
        w = smoothness * u + (1.0 - smoothness) * h01
        slerp = quaternions.slerp
        q = slerp(slerp(quats[i], quats[nxt], w), slerp(inner[i], inner[nxt], w),
                  2.0 * w * (1.0 - w))  # fmt: skip
        c2w[j, :3, :3], c2w[j, :3, 3], fov[j] = quaternions.to_matrix(q), point[:3], point[3]
    return c2w, fov


# --- worlds ------------------------------------------------------------------------------


def move_cameras(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Cameras (n, 4, 4) moved by a similarity (4, 4): positions mapped, orientations turned
    by its rotation (its scale divided out, so they stay rotations)."""
    transform = np.asarray(transform, np.float64)
    scale = np.cbrt(np.linalg.det(transform[:3, :3]))
    out = transform @ np.asarray(c2w, np.float64)
    out[:, :3, :3] /= scale
    return out


def placement_matrix(placement: dict | None) -> np.ndarray:
    """(4, 4) of a capture's placement (`tensorf.data.placement`: x -> scale R (x - centre));
    the identity for scenes we do not move (objects)."""
    if placement is None:
        return np.eye(4)
    rotation, centre = np.asarray(placement["rotation"]), np.asarray(placement["centre"])
    matrix = np.eye(4)
    matrix[:3, :3] = placement["scale"] * rotation
    matrix[:3, 3] = -placement["scale"] * rotation @ centre
    return matrix


def from_nerfstudio(dataparser_transforms: Path, placement: dict | None) -> np.ndarray:
    """(4, 4) similarity from nerfstudio's world (of its `dataparser_transforms.json`) to
    the run's: nerfstudio's scale and transform undone, then our placement."""
    values = _read_object(dataparser_transforms)
    where = f"{dataparser_transforms}"
    transform, scale = values.get("transform"), values.get("scale")
    rows = np.array(transform, dtype=object) if isinstance(transform, list) else None
    numeric = rows is not None and rows.shape == (3, 4) and all(_is_number(x) for x in rows.flat)
    if not numeric or not _is_number(scale) or not 0 < scale < 1e9:
        raise ConfigError(f"{where}: needs 'transform' (3 rows of 4 numbers) and a positive "
                          "'scale', as nerfstudio writes them")  # fmt: skip
    forward = np.eye(4)
    forward[:3] = np.asarray(transform, np.float64)
    rotation = forward[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise ConfigError(f"{where}: 'transform' must be a rotation and a translation")
    forward[:3] *= scale
    return placement_matrix(placement) @ np.linalg.inv(forward)


# --- files -------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_object(path: Path) -> dict:
    try:
        values = safe_json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError too
        reason = " ".join(str(error).split())[:160]
        raise ConfigError(f"{path}: not readable JSON ({reason})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level is a JSON {type(values).__name__}, expected an "
                          "object")  # fmt: skip
    return values


def _pose(value: Any, where: str) -> np.ndarray:
    """A row-major list of 16 numbers (or 4 rows of 4) -> a rigid (4, 4) camera-to-world."""
    flat = np.array(value, dtype=object).ravel() if isinstance(value, list) else None
    if flat is None or flat.size != 16 or not all(_is_number(x) for x in flat):
        raise ConfigError(f"{where}: needs 16 finite numbers (a row-major 4 x 4 matrix)")
    c2w = flat.astype(np.float64).reshape(4, 4)
    rotation = c2w[:3, :3]
    rigid = (np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6)
             and np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3)
             and np.linalg.det(rotation) > 0)  # fmt: skip
    if not rigid:
        raise ConfigError(f"{where}: not a rigid camera-to-world (its rotation must be "
                          "orthonormal with determinant +1, its last row 0 0 0 1)")  # fmt: skip
    # Re-orthonormalised: files carry a few digits, and renders assume a rotation.
    u, _, vt = np.linalg.svd(rotation)
    c2w[:3, :3] = u @ vt
    return c2w


def _fov(value: Any, where: str) -> float:
    if not _is_number(value) or not 0 < value < 180:
        raise ConfigError(f"{where}: 'fov' must be a vertical field of view in degrees, "
                          f"between 0 and 180 (got {value!r})")  # fmt: skip
    return math.radians(value)


def read(path: Path) -> CameraPath:
    """A nerfstudio camera_path.json, checked: anything it lacks or that cannot be
    rendered is one ConfigError naming the file and the entry."""
    values = _read_object(path)
    missing = [k for k in ("camera_path", "render_width", "render_height") if k not in values]
    if "seconds" not in values and "fps" not in values:
        missing.append("seconds")
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(map(repr, missing))}; is it a "
                          "nerfstudio camera_path.json?")  # fmt: skip
    kind = values.get("camera_type", "perspective")
    if not isinstance(kind, str) or kind.lower() != "perspective":
        raise ConfigError(f"{path}: camera_type {kind!r} is not supported; only perspective "
                          "cameras are rendered")  # fmt: skip
    width, height = values["render_width"], values["render_height"]
    for key, size in (("render_width", width), ("render_height", height)):
        if not _is_number(size) or size != int(size) or not 1 <= size <= MAX_SIZE:
            raise ConfigError(f"{path}: '{key}' must be a whole number of pixels from 1 to "
                              f"{MAX_SIZE} (got {size!r})")  # fmt: skip
    frames = values["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise ConfigError(f"{path}: 'camera_path' has no frames; add cameras or save the "
                          "path again with keyframes")  # fmt: skip
    if len(frames) > MAX_FRAMES:
        raise ConfigError(f"{path}: {len(frames)} frames, more than {MAX_FRAMES}")
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        where = f"{path}: camera_path[{i}]"
        if not isinstance(frame, dict) or "camera_to_world" not in frame or "fov" not in frame:
            raise ConfigError(f"{where}: needs 'camera_to_world' and 'fov'")
        poses.append(_pose(frame["camera_to_world"], f"{where}.camera_to_world"))
        fovs.append(_fov(frame["fov"], where))
    seconds = values.get("seconds")
    if seconds is None:  # frames / fps, as nerfstudio would time them
        fps = values["fps"]
        if not _is_number(fps) or fps <= 0:
            raise ConfigError(f"{path}: 'fps' must be a positive number (got {fps!r})")
        seconds = len(frames) / fps
    if not _is_number(seconds) or seconds <= 0:
        raise ConfigError(f"{path}: 'seconds' must be a positive number (got {seconds!r})")
    smoothness = values.get("smoothness_value", 1.0)
    return CameraPath(np.stack(poses), np.array(fovs), int(width), int(height), float(seconds),
                      _keyframes(values.get("keyframes"), path),
                      float(smoothness) if _is_number(smoothness) else 1.0,
                      values.get("is_cycle") is True)  # fmt: skip


def _keyframes(values: Any, path: Path) -> tuple[Keyframe, ...]:
    """The keyframes nerfstudio's viewer saved (to edit the path again), when well formed;
    the frames are what gets rendered, so malformed keyframes are only left out."""
    if not isinstance(values, list):
        return ()
    try:
        return tuple(Keyframe(_pose(k["matrix"], ""), _fov(k["fov"], "")) for k in values)
    except (ConfigError, KeyError, TypeError):
        return ()


def to_dict(path: CameraPath) -> dict:
    """The nerfstudio camera_path.json contents of a path."""
    aspect = path.width / path.height

    def flat(c2w: np.ndarray) -> list[float]:
        return [float(x) for x in np.asarray(c2w).ravel()]

    keyframes = [
        {"matrix": flat(k.c2w), "fov": math.degrees(k.fov), "aspect": aspect,
         "override_transition_enabled": False, "override_transition_sec": None}
        for k in path.keyframes
    ]  # fmt: skip
    n_segments = max(len(path.keyframes) - (0 if path.loop else 1), 1)
    return {
        "camera_type": "perspective",
        "render_width": path.width,
        "render_height": path.height,
        "fps": path.fps,
        "seconds": path.seconds,
        "smoothness_value": path.smoothness,
        "is_cycle": path.loop,
        "default_fov": math.degrees(float(path.fov[0])),
        "default_transition_sec": path.seconds / n_segments,
        "keyframes": keyframes,
        "camera_path": [{"camera_to_world": flat(c2w), "fov": math.degrees(float(fov)),
                         "aspect": aspect} for c2w, fov in zip(path.c2w, path.fov, strict=True)],
    }  # fmt: skip


def write(path: CameraPath, file: Path) -> Path:
    """Write `path` as a camera_path.json (its folder made if needed); returns `file`."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_json(file, to_dict(path), indent=1)  # a reader never sees half a file
    return file
