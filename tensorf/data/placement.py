"""Where a capture's cameras go in our world: centred on what they look at, world +z up,
scaled so that the region of interest fills the inner box of the scene contraction.

A capture's world (COLMAP's, or whatever a transforms.json was written in) has an arbitrary
origin, orientation and scale. We place it by the cameras alone, so that the same capture
read from a COLMAP model or from a transforms.json lands in the same place:

- up: the cameras' mean up vector becomes +z (orbit videos circle about it);
- centre: the point closest, in the least-squares sense, to all the cameras' optical axes,
  i.e. what the capture looks at (the cameras' mean position where the axes are nearly
  parallel and that point is ill-defined);
- scale: the cameras' median distance from the centre becomes `CAMERA_DISTANCE`, so the
  box [-1, 1]^3 holds the inner half of the way from the centre to the cameras.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CAMERA_DISTANCE = 2.0
# Below this smallest eigenvalue (per camera) of the least-squares system the optical axes
# are too close to parallel to meet anywhere well defined.
_MIN_AXIS_SPREAD = 0.02


@dataclasses.dataclass(frozen=True, eq=False)
class Placement:
    """x_ours = scale * rotation @ (x_capture - centre)."""

    rotation: np.ndarray  # (3, 3)
    centre: np.ndarray  # (3,)
    scale: float

    def apply(self, c2w: np.ndarray) -> np.ndarray:
        """(n, 4, 4) capture camera-to-world -> ours (rotations stay proper rotations)."""
        out = np.array(c2w, np.float64)
        out[:, :3, :3] = self.rotation @ out[:, :3, :3]
        out[:, :3, 3] = self.scale * (out[:, :3, 3] - self.centre) @ self.rotation.T
        return out

    def to_dict(self) -> dict:
        return {"rotation": self.rotation.tolist(), "centre": self.centre.tolist(),
                "scale": self.scale}  # fmt: skip


def fit(c2w: np.ndarray) -> Placement:
    """The placement of cameras (n, 4, 4) in OpenGL convention (see the module docstring)."""
    c2w = np.asarray(c2w, np.float64)
    positions, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    rotation = _rotation_to_z(c2w[:, :3, 1].mean(0))
    # Sum over cameras of the projections orthogonal to each axis: A c = b.
    projections = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    a, b = projections.sum(0), np.einsum("nij,nj->i", projections, positions)
    if np.linalg.eigvalsh(a)[0] > _MIN_AXIS_SPREAD * len(c2w):
        centre = np.linalg.solve(a, b)
    else:
        centre = positions.mean(0)
    distance = float(np.median(np.linalg.norm(positions - centre, axis=-1)))
    scale = CAMERA_DISTANCE / distance if distance > 0 else 1.0
    return Placement(rotation, centre, scale)


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the direction `up` to +z (Rodrigues)."""
    norm = np.linalg.norm(up)
    if norm < 1e-9:  # the cameras' up vectors cancel out: keep the capture's orientation
        return np.eye(3)
    u, z = up / norm, np.array([0.0, 0.0, 1.0])
    axis, cos = np.cross(u, z), float(u @ z)
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + cos)
