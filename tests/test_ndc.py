"""Normalised device coordinates against an independent perspective projection.

The oracle maps a world point p (z < -near) to NDC with the perspective divide
x' = -sx x / z, y' = -sy y / z, z' = 1 + 2 near / z: the plane z = -near goes to z' = -1
and infinity to z' = 1. A world ray is a straight line in NDC, so every projected point of
it lies on o' + t d' with t = (z' + 1) / 2 in [0, 1).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tensorf.geometry.cameras import Intrinsics
from tensorf.geometry.ndc import ndc_rays, projection, world_distance

INTRINSICS = Intrinsics(fx=50.0, fy=40.0, cx=15.0, cy=13.0, width=32, height=24)
SCALE = (2 * 50.0 / 32, 2 * 40.0 / 24)  # (2 fx / W, 2 fy / H), by hand
N_RAYS = 6


def project(points: np.ndarray, scale: tuple[float, float], near: float) -> np.ndarray:
    """The oracle: world points (..., 3) with z < 0 -> NDC (..., 3)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([-scale[0] * x / z, -scale[1] * y / z, 1.0 + 2.0 * near / z], -1)


def make_rays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cameras near the origin looking roughly down -z, rays up to ~35 degrees off-axis."""
    rng = np.random.default_rng(seed)
    origins = rng.uniform(-0.2, 0.2, (N_RAYS, 3))
    dirs = np.concatenate([rng.uniform(-0.7, 0.7, (N_RAYS, 2)), -np.ones((N_RAYS, 1))], -1)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return origins, dirs


def world_points(origins, dirs, near, depths) -> tuple[np.ndarray, np.ndarray]:
    """Points on each ray at world depths z = -depths (all beyond the near plane):
    (rays, k, 3) and their distances (rays, k) from the ray origins."""
    z = -np.asarray(depths, np.float64)
    distance = (z[None, :] - origins[:, 2:3]) / dirs[:, 2:3]
    assert (distance > 0).all()
    points = origins[:, None] + distance[..., None] * dirs[:, None]
    assert (points[..., 2] < -near).all()
    return points, distance


@pytest.mark.parametrize("near", [1.0, 0.5])
def test_world_ray_maps_onto_ndc_ray(near):
    origins, dirs = make_rays()
    o_ndc, d_ndc = (np.asarray(a, np.float64) for a in ndc_rays(
        jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32), SCALE, near=near
    ))  # fmt: skip
    assert o_ndc.shape == d_ndc.shape == (N_RAYS, 3)

    # The origin is the projection of where the ray crosses the near plane z = -near.
    crossing = origins + ((-near - origins[:, 2]) / dirs[:, 2])[:, None] * dirs
    np.testing.assert_allclose(o_ndc, project(crossing, SCALE, near), atol=1e-5)
    np.testing.assert_allclose(o_ndc[:, 2], -1.0, atol=1e-6)
    # The direction reaches the point at infinity (x/z -> dx/dz, z' -> 1) at t = 1.
    at_infinity = np.stack(
        [-SCALE[0] * dirs[:, 0] / dirs[:, 2], -SCALE[1] * dirs[:, 1] / dirs[:, 2],
         np.ones(N_RAYS)], -1,
    )  # fmt: skip
    np.testing.assert_allclose(d_ndc, at_infinity - o_ndc, atol=1e-5)

    depths = near * np.array([1.01, 1.3, 2.0, 3.7, 8.0, 25.0, 100.0, 1e4])
    points, _ = world_points(origins, dirs, near, depths)
    projected = project(points, SCALE, near)  # (rays, k, 3)
    # Solve for t from z', then the point at t must match in x and y too.
    t = (projected[..., 2] - o_ndc[:, None, 2]) / d_ndc[:, None, 2]
    on_ray = o_ndc[:, None] + t[..., None] * d_ndc[:, None]
    np.testing.assert_allclose(on_ray, projected, atol=1e-4)
    assert (t >= 0).all() and (t < 1).all()
    assert (np.diff(t, axis=1) > 0).all()  # same order as along the world ray
    # t = (z' + 1) / 2 = 1 + near / z: the NDC depth of each point, by hand.
    np.testing.assert_allclose(t, 1.0 + near / points[..., 2], atol=1e-5)


@pytest.mark.parametrize("near", [1.0, 0.5])
def test_world_distance_inverts_ndc(near):
    origins, dirs = make_rays(seed=1)
    o32, d32 = jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32)
    o_ndc, d_ndc = (np.asarray(a, np.float64) for a in ndc_rays(o32, d32, SCALE, near=near))
    depths = near * np.array([1.02, 1.5, 2.5, 4.0, 9.0, 20.0, 60.0])
    points, distance = world_points(origins, dirs, near, depths)
    projected = project(points, SCALE, near)
    t = (projected[..., 2] - o_ndc[:, None, 2]) / d_ndc[:, None, 2]
    back = np.asarray(world_distance(jnp.asarray(t, jnp.float32), o32, d32, near=near))
    assert back.shape == (N_RAYS, len(depths))
    np.testing.assert_allclose(back, distance, rtol=1e-4)
    # t = 0 is the near plane crossing, not the camera.
    zero = np.asarray(world_distance(jnp.zeros((N_RAYS, 1)), o32, d32, near=near))[:, 0]
    np.testing.assert_allclose(zero, (-near - origins[:, 2]) / dirs[:, 2], rtol=1e-5)


def test_projection_is_independent_of_image_size():
    assert projection(INTRINSICS) == pytest.approx(SCALE)
    half = INTRINSICS.resized(INTRINSICS.width // 2, INTRINSICS.height // 2)
    assert (half.width, half.height) == (16, 12)
    assert half.fx == pytest.approx(25.0) and half.fy == pytest.approx(20.0)
    assert projection(half) == pytest.approx(SCALE, rel=1e-12)
    # A camera with a wider field of view squeezes x more: the scale halves with fx.
    wide = Intrinsics(25.0, 40.0, 16.0, 12.0, 32, 24)
    assert projection(wide) == pytest.approx((SCALE[0] / 2, SCALE[1]))
