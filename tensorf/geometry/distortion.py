"""Lens distortion of real cameras, as OpenCV (and COLMAP) model it.

Both models act on normalised image coordinates (x, y) = (X / Z, Y / Z) of a point in
the camera frame (OpenCV's: +z forward, +y down):

- "opencv" (radial-tangential; coefficients k1 k2 p1 p2 k3, OpenCV's distCoeffs order):
  x' = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2), y' alike.
- "fisheye" (Kannala-Brandt, OpenCV's cv2.fisheye; coefficients k1 k2 k3 k4):
  theta = atan(r), theta' = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8),
  (x', y') = theta' / r (x, y).

Neither has a closed-form inverse; `undistort` solves it by Newton's method in float64,
once per camera (see `tensorf.geometry.cameras.camera_directions`), so rays go through the exact
undistorted direction of every pixel and images are never resampled.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

Model = Literal["opencv", "fisheye"]
N_COEFFICIENTS = {"opencv": 5, "fisheye": 4}
_ITERATIONS = 30


@dataclasses.dataclass(frozen=True)
class Distortion:
    """A lens model and its coefficients (hashable, so cameras stay static in jit)."""

    model: Model
    coefficients: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in N_COEFFICIENTS:
            raise ValueError(f"unknown distortion model {self.model!r}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if len(self.coefficients) != N_COEFFICIENTS[self.model]:
            raise ValueError(f"{self.model} distortion takes {N_COEFFICIENTS[self.model]} "
                             f"coefficients, got {len(self.coefficients)}")  # fmt: skip
        if not np.all(np.isfinite(self.coefficients)):
            raise ValueError(f"distortion coefficients must be finite, got {self.coefficients}")


def distort(xy: np.ndarray, lens: Distortion) -> np.ndarray:
    """Normalised coordinates (..., 2) of ideal pinhole points -> where the lens images them."""
    xy = np.asarray(xy, np.float64)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    if lens.model == "opencv":
        k1, k2, p1, p2, k3 = lens.coefficients
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([dx, dy], axis=-1)
    r = np.sqrt(r2)
    theta = np.arctan(r)
    scale = np.where(r > 1e-12, fisheye_theta(theta, lens.coefficients) / np.maximum(r, 1e-12),
                     1.0)  # fmt: skip
    return xy * scale[..., None]


def undistort(xy: np.ndarray, lens: Distortion) -> np.ndarray:
    """Inverse of `distort`: measured normalised coordinates (..., 2) -> ideal ones."""
    xy = np.asarray(xy, np.float64)
    if lens.model == "fisheye":
        theta = undistort_fisheye_angle(xy, lens)
        r_d = np.linalg.norm(xy, axis=-1)
        scale = np.where(r_d > 1e-12, np.tan(theta) / np.maximum(r_d, 1e-12), 1.0)
        return xy * scale[..., None]
    k1, k2, p1, p2, k3 = lens.coefficients
    p = xy.copy()
    for _ in range(_ITERATIONS):
        x, y = p[..., 0], p[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
        residual = distort(p, lens) - xy
        # The Jacobian of `distort`, entry by entry.
        jxx = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        jxy = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        jyx = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        jyy = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        det = jxx * jyy - jxy * jyx
        step_x = jyy * residual[..., 0] - jxy * residual[..., 1]
        step_y = jxx * residual[..., 1] - jyx * residual[..., 0]
        p = p - np.stack([step_x, step_y], axis=-1) / det[..., None]
    return p


def undistort_fisheye_angle(xy: np.ndarray, lens: Distortion) -> np.ndarray:
    """The angle (...,) from the optical axis of the rays that a fisheye lens images at
    measured normalised coordinates (..., 2) (unlike `undistort`, fine beyond 90 degrees)."""
    target = np.linalg.norm(np.asarray(xy, np.float64), axis=-1)
    theta = target.copy()
    k1, k2, k3, k4 = lens.coefficients
    for _ in range(_ITERATIONS):
        t2 = theta * theta
        derivative = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + 9.0 * k4 * t2)))
        theta = theta - (fisheye_theta(theta, lens.coefficients) - target) / derivative
    return theta


def fisheye_theta(theta: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    k1, k2, k3, k4 = coefficients
    t2 = theta * theta
    return theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


def camera_frame_directions(xy: np.ndarray, lens: Distortion | None) -> np.ndarray:
    """Measured normalised coordinates (..., 2) -> OpenCV camera-frame ray directions
    (..., 3) (not unit length)."""
    xy = np.asarray(xy, np.float64)
    if lens is None:
        return np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
    if lens.model == "opencv":
        return np.concatenate([undistort(xy, lens), np.ones_like(xy[..., :1])], axis=-1)
    theta = undistort_fisheye_angle(xy, lens)
    r_d = np.linalg.norm(xy, axis=-1)
    radial = np.where(r_d > 1e-12, np.sin(theta) / np.maximum(r_d, 1e-12), 1.0)
    return np.concatenate([xy * radial[..., None], np.cos(theta)[..., None]], axis=-1)
