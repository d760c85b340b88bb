"""Scene contraction: its geometry, the samples it takes, and that it pays off on an
analytic scene with a far background."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import write_room_capture
from test_viewer import assert_first_view_shows_the_scene
from tiers import examples

from tensorf import experiment
from tensorf.config import override
from tensorf.data import load_views
from tensorf.geometry.contraction import INNER, contract, sample_distances, shell_start
from tensorf.orbit import OrbitArgs, path_poses
from tensorf.presets import PRESETS
from tensorf.render import march
from tensorf.train import checkpoint

coordinate = st.floats(-1e30, 1e30, allow_nan=False, allow_subnormal=False)


@given(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=1, max_size=50))
@settings(max_examples=examples(200), deadline=None)
def test_all_of_space_lands_in_the_outer_box(points):
    out = np.asarray(contract(jnp.asarray(points, jnp.float32)))
    assert np.isfinite(out).all() and np.abs(out).max() <= 2.0


def test_identity_inside_the_inner_box():
    x = np.random.default_rng(0).uniform(-1, 1, (1000, 3)).astype(np.float32)
    x[:10] = np.sign(x[:10])  # corners
    np.testing.assert_array_equal(np.asarray(contract(jnp.asarray(x))), x)


def test_continuous_across_the_inner_box():
    d = np.random.default_rng(1).normal(size=(500, 3))
    d /= np.abs(d).max(-1, keepdims=True)  # on the inner box's surface
    inside = contract(jnp.asarray(d * (1 - 1e-4), jnp.float32))
    outside = contract(jnp.asarray(d * (1 + 1e-4), jnp.float32))
    assert np.abs(np.asarray(outside - inside)).max() < 5e-4


def test_monotone_along_rays_from_the_centre():
    d = np.random.default_rng(2).normal(size=(50, 1, 3))
    t = np.geomspace(1e-3, 1e3, 400)[None, :, None]
    norms = np.abs(np.asarray(contract(jnp.asarray(d * t, jnp.float32)))).max(-1)
    assert (np.diff(norms, axis=-1) > 0).all()
    assert norms[:, -1].min() > 1.99


def rays_from_outside(n: int, distance: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Rays (n, 3) from cameras `distance` from the centre, through points near it."""
    rng = np.random.default_rng(seed)
    origins = rng.normal(size=(n, 3))
    origins *= distance / np.linalg.norm(origins, axis=-1, keepdims=True)
    dirs = rng.uniform(-0.5, 0.5, (n, 3)) - origins
    return origins, dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def outer_samples(origins, dirs, n_outer: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Where `sample_distances` puts the samples beyond the inner box (t and dt)."""
    o, d = jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32)
    t_in, t_exit = march.ray_aabb(o, d, jnp.asarray(INNER), 0.05, 1000.0)
    t_exit = jnp.where(t_in < t_exit, t_exit, 0.05)
    t, dt = sample_distances(t_exit, shell_start(o, d, t_exit), jnp.zeros(len(o)), 10,
                             n_outer, 0.1, 0.05, 1000.0)  # fmt: skip
    return np.asarray(t[:, 10:], np.float64), np.asarray(dt[:, 10:], np.float64)


def test_samples_evenly_inside_the_box():
    t_exit, o = jnp.array([1.0, 2.5, 0.2]), jnp.zeros((3, 3))
    d = jnp.array([[1.0, 0.0, 0.0]] * 3)
    t, dt = sample_distances(t_exit, shell_start(o, d, t_exit), jnp.zeros(3), n_inner=40,
                             n_outer=32, step=0.1, near=0.2, far=1000.0)  # fmt: skip
    inner = np.broadcast_to(0.2 + 0.1 * np.arange(40), (3, 40))
    np.testing.assert_allclose(np.asarray(t[:, :40]), inner, rtol=1e-6)
    # Inner samples stand for one step each up to the exit, nothing beyond it.
    np.testing.assert_array_equal((np.asarray(dt[:, :40]) > 0).sum(-1), [8, 23, 0])


@pytest.mark.parametrize("distance", [1.5, 2.5, 4.0])
def test_samples_beyond_the_box_are_about_even_in_contracted_space(distance):
    """Evenly spaced in disparity from the camera, the first samples beyond the inner box
    of a camera `distance` from the centre came (distance + 1) times as far apart in the
    contracted space as the shell's depth over their number."""
    origins, dirs = rays_from_outside(200, distance)
    t, dt = outer_samples(origins, dirs)
    assert (np.diff(t, axis=-1) > 0).all() and t[:, 0].min() > 0
    points = np.asarray(contract(jnp.asarray(origins[:, None] + dirs[:, None] * t[..., None],
                                             jnp.float32)))  # fmt: skip
    gaps = np.linalg.norm(np.diff(points, axis=1), axis=-1) * 32  # (rays, 31) contracted
    # The shell is 1 deep along a ray from the centre: 32 samples come 1/32 apart there.
    # (In disparity from the camera, the first gap was 2.5, 3.4 and 4.6 and the largest
    # 3.9, 7.0 and 13.4 times the smallest, at these distances.)
    assert gaps.min() > 0.99 and np.median(gaps[:, 0]) < 1.3
    assert np.median(gaps.max(-1) / gaps.min(-1)) < 1.4
    # Each outer sample stands for a length between its gaps to its two neighbours.
    between = np.diff(t, axis=-1)
    assert (between[:, :-1] <= dt[:, 1:-1] * (1 + 1e-4)).all()
    assert (dt[:, 1:-1] <= between[:, 1:] * (1 + 1e-4)).all()


@pytest.mark.slow
def test_contraction_beats_a_plain_box_on_a_far_background(tmp_path):
    """A sphere in a room of radius 8: without contraction the room has to be painted on
    the box's walls, which only looks right from one place."""
    scene = write_room_capture(tmp_path / "room")
    base = override(
        PRESETS["unbounded-quick"][1], dataset_path=scene, downscale=1, n_iters=400,
        batch_size=512, grid_init=32, grid_final=64, upsample_steps=(150,),
        mask_steps=(150, 300), checkpoint_every=400, log_every=100,
    )  # fmt: skip
    psnr = {}
    for contracted in (True, False):
        render = dataclasses.replace(base.render, contract=contracted)
        cfg = override(base, run_dir=tmp_path / f"run_{contracted}", render=render)
        psnr[contracted] = experiment.train(cfg)["psnr"]
    print(f"held-out PSNR: contracted {psnr[True]:.2f} dB, plain box {psnr[False]:.2f} dB")
    assert psnr[True] > psnr[False] + 1.0 and psnr[True] > 20.0

    # The run keeps its placement; the orbit circles the centre at the cameras' height.
    run = tmp_path / "run_True"
    assert_first_view_shows_the_scene(run, load_views(scene, "train").images)
    saved = json.loads((run / "cameras.json").read_text())
    assert saved["kind"] == "capture"
    assert saved["placement"]["scale"] == pytest.approx(1.0, rel=0.05)
    cameras = checkpoint.load_cameras(run)
    poses = path_poses(OrbitArgs(run_dir=run, frames=8), checkpoint.load_config(run), cameras)
    heights = cameras["c2w"][:, 2, 3]
    np.testing.assert_allclose(poses[:, 2, 3], heights.mean(), atol=1e-6)
    ring = np.linalg.norm(cameras["c2w"][:, :2, 3], axis=-1).mean()
    np.testing.assert_allclose(np.linalg.norm(poses[:, :2, 3], axis=-1), ring, rtol=1e-6)
