"""Volume rendering against hand-worked numbers and a brute-force numpy renderer, the alpha
mask against an analytic ball, and the pinhole camera."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic import sphere_config

from tensorf import data, experiment
from tensorf.config import ModelConfig, RenderConfig, TrainConfig, override
from tensorf.eval.scoring import psnr
from tensorf.field import alpha_mask, decomposition, field
from tensorf.geometry.cameras import Intrinsics, focal_from_fov, pixel_rays
from tensorf.render import image, march, sampling
from tensorf.train import checkpoint, events, train_state

AABB = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32)
RESOLUTION = (16, 16, 16)
MODEL = ModelConfig(
    density_components=4,
    appearance_components=4,
    appearance_dim=9,
    mlp_width=32,
    density_shift=-4.0,
    init_scale=0.5,
)
N_RAYS = 64


# --- compositing and ray/box intersection ------------------------------------------------


def test_compositing_weights_hand_worked():
    tau = [0.0, 0.5, 1.0, 2.0, 0.1]
    # alpha_i = 1 - exp(-tau_i)
    a0 = 1 - math.exp(-0.0)
    a1 = 1 - math.exp(-0.5)
    a2 = 1 - math.exp(-1.0)
    a3 = 1 - math.exp(-2.0)
    a4 = 1 - math.exp(-0.1)
    # T_i = prod_{j<i} (1 - alpha_j)
    t0 = 1.0
    t1 = t0 * (1 - a0)
    t2 = t1 * (1 - a1)
    t3 = t2 * (1 - a2)
    t4 = t3 * (1 - a3)
    expected = [t0 * a0, t1 * a1, t2 * a2, t3 * a3, t4 * a4]
    # Spelled out once more: w_3 = exp(-1.5) * (1 - exp(-2)).
    assert expected[3] == pytest.approx(math.exp(-1.5) * (1 - math.exp(-2.0)), rel=1e-12)
    assert expected == pytest.approx(
        [0.0, 0.39346934, 0.38340050, 0.19293278, 0.00287366], abs=1e-8
    )

    tau_batch = jnp.array([tau, [0.0] * 5, [50.0, 1.0, 1.0, 1.0, 1.0]], jnp.float32)
    w = np.asarray(march.compositing_weights(tau_batch))
    assert w.shape == (3, 5)
    np.testing.assert_allclose(w[0], expected, atol=1e-6)
    np.testing.assert_allclose(w[1], 0.0, atol=1e-7)
    # An opaque first sample takes all the weight.
    np.testing.assert_allclose(w[2], [1.0, 0, 0, 0, 0], atol=1e-6)
    # The weights sum to the opacity 1 - exp(-sum tau).
    assert w[0].sum() == pytest.approx(1 - math.exp(-3.6), abs=1e-6)


def test_ray_aabb_hand_made_rays():
    origins = jnp.array([[-3.0, 0, 0], [-3.0, 2.0, 0], [0, 0, 0], [3.0, 3.0, 3.0], [0, 0, 5.0]])
    dirs = jnp.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [-1.0, -1.0, -1.0], [0, 0, 1.0]])
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    t_min, t_max = map(np.asarray, march.ray_aabb(origins, dirs, jnp.asarray(AABB), 0.0, 10.0))
    # Along +x from (-3, 0, 0): enters at x = -1 (t = 2), leaves at x = 1 (t = 4).
    assert t_min[0] == pytest.approx(2.0) and t_max[0] == pytest.approx(4.0)
    # Parallel to the box at y = 2: a miss.
    assert t_min[1] >= t_max[1]
    # From the centre: starts at near = 0, leaves at y = 1.
    assert t_min[2] == pytest.approx(0.0) and t_max[2] == pytest.approx(1.0)
    # Diagonal from (3, 3, 3): corner (1, 1, 1) at 2 sqrt(3), corner (-1, -1, -1) at 4 sqrt(3).
    assert t_min[3] == pytest.approx(2 * math.sqrt(3), rel=1e-5)
    assert t_max[3] == pytest.approx(4 * math.sqrt(3), rel=1e-5)
    # Pointing away from the box: a miss.
    assert t_min[4] >= t_max[4]
    # near / far clip the interval.
    t_min, t_max = march.ray_aabb(origins[:1], dirs[:1], jnp.asarray(AABB), 2.5, 3.5)
    assert float(t_min[0]) == pytest.approx(2.5) and float(t_max[0]) == pytest.approx(3.5)


# --- sample selection --------------------------------------------------------------------


def test_compact_packs_true_entries_in_order():
    mask = np.zeros((3, 10), bool)
    mask[0, [1, 4]] = True
    mask[2, [0, 9]] = True
    idx, ok, count = march.compact(jnp.asarray(mask), 6)
    assert int(count) == 4
    assert np.asarray(idx)[:4].tolist() == [1, 4, 20, 29]
    assert np.asarray(ok).tolist() == [True] * 4 + [False] * 2
    idx, ok, count = march.compact(jnp.asarray(mask), 3)  # overflow is reported
    assert int(count) == 4 and np.asarray(idx).tolist() == [1, 4, 20]


def test_compact_keeps_true_entries_in_order():
    compact = getattr(march, "compact", None)
    if compact is None:
        pytest.skip("march.compact does not exist in this version")
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) < 0.3
    true = np.flatnonzero(mask)
    for capacity in (len(true) + 5, len(true) - 3):
        idx, ok, count = map(np.asarray, compact(jnp.asarray(mask), capacity))
        assert idx.shape == (capacity,) and ok.shape == (capacity,)
        assert int(count) == len(true)
        n = min(capacity, len(true))
        assert ok.tolist() == [True] * n + [False] * (capacity - n)
        np.testing.assert_array_equal(idx[:n], true[:n])


# --- render_rays against a brute-force renderer ------------------------------------------


def ball_alpha(radius: float):
    return lambda xyz: (jnp.linalg.norm(xyz, axis=-1) < radius).astype(jnp.float32)


@pytest.fixture(scope="module")
def scene():
    params = field.init_params(jax.random.PRNGKey(0), MODEL, RESOLUTION)
    mask, _ = alpha_mask.compute_alpha_mask(ball_alpha(0.7), AABB, (17, 17, 17), 0.5)
    rng = np.random.default_rng(0)
    position = rng.normal(size=(N_RAYS, 3))
    origins = 3.0 * position / np.linalg.norm(position, axis=-1, keepdims=True)
    targets = rng.uniform(-0.8, 0.8, (N_RAYS, 3))
    origins[-1] = [-3.0, 2.5, 0.3]  # the last two rays miss the box
    targets[-1] = [3.0, 2.5, 0.2]
    origins[-2] = [0.2, 0.1, 4.0]
    targets[-2] = [0.2, 0.1, 9.0]
    dirs = targets - origins
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    jitter = rng.uniform(0, 1, N_RAYS)
    return params, mask, origins, dirs, jitter


def make_settings(**render_options) -> sampling.RenderSettings:
    cfg = override(TrainConfig(),
        batch_size=N_RAYS, render=RenderConfig(near=0.0, far=10.0, step_ratio=0.5, **render_options)
    )
    return sampling.render_settings(cfg, AABB, RESOLUTION)


def full_settings(unselected: str) -> sampling.RenderSettings:
    n = make_settings().n_samples
    settings = make_settings(appearance_samples=n, unselected=unselected)
    names = {f.name for f in dataclasses.fields(settings)}
    if "weight_threshold" in names:
        settings = dataclasses.replace(settings, weight_threshold=0.0)
    return settings


_render = jax.jit(march.render_rays, static_argnums=(1, 2))


def brute_force(params, mask, origins, dirs, jitter, settings):
    """Every sample gets density and colour; compositing in float64 numpy."""
    n = settings.n_samples
    # Slab intersection, written out independently of march.ray_aabb.
    with np.errstate(divide="ignore"):
        t0 = (AABB[0] - origins) / dirs
        t1 = (AABB[1] - origins) / dirs
    t_min = np.clip(np.minimum(t0, t1).max(-1), settings.near, settings.far)
    t_max = np.clip(np.maximum(t0, t1).min(-1), settings.near, settings.far)
    t = t_min[:, None] + (np.arange(n)[None] + jitter[:, None]) * settings.step_size
    points = origins[:, None] + dirs[:, None] * t[..., None]
    valid = (t < t_max[:, None]) & np.asarray(
        alpha_mask.is_occupied(mask, jnp.asarray(points, jnp.float32))
    )
    xyz = jnp.asarray(field.normalize(points, AABB).reshape(-1, 3), jnp.float32)
    sigma = np.asarray(jax.jit(field.density, static_argnums=1)(params, MODEL, xyz), np.float64)
    sigma = np.where(valid, sigma.reshape(t.shape), 0.0)
    view = jnp.asarray(np.broadcast_to(dirs[:, None], points.shape).reshape(-1, 3), jnp.float32)
    colour = jax.jit(field.radiance, static_argnums=1)(params, MODEL, xyz, view)
    colour = np.asarray(colour, np.float64).reshape(*t.shape, 3)
    alpha = 1.0 - np.exp(-sigma * settings.step_size * MODEL.distance_scale)
    trans = np.cumprod(np.concatenate([np.ones((len(t), 1)), 1.0 - alpha[:, :-1]], 1), 1)
    weights = alpha * trans
    acc = weights.sum(1)
    return {
        "weights": weights,
        "colour": colour,
        "rgb": (weights[..., None] * colour).sum(1) + (1.0 - acc)[:, None],
        "depth": (weights * t).sum(1),
        "acc": acc,
    }


@pytest.mark.parametrize("use_jitter", [False, True])
def test_all_samples_shaded_equals_brute_force(scene, use_jitter):
    params, mask, origins, dirs, jitter = scene
    jitter = jitter if use_jitter else np.zeros(N_RAYS)
    settings = full_settings("renormalize")
    out = _render(
        params, MODEL, settings, jnp.asarray(AABB), mask,
        jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32),
        jnp.asarray(jitter, jnp.float32) if use_jitter else None,
    )  # fmt: skip
    ref = brute_force(params, mask, origins, dirs, jitter, settings)
    # The scene is neither empty nor opaque, and two rays miss the box.
    assert 0.2 < ref["acc"][:-2].mean() < 0.95 and ref["acc"].max() > 0.5
    np.testing.assert_allclose(ref["acc"][-2:], 0.0)
    np.testing.assert_allclose(out["acc"], ref["acc"], atol=1e-5)
    np.testing.assert_allclose(out["rgb"], ref["rgb"], atol=1e-5)
    np.testing.assert_allclose(out["depth"], ref["depth"], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def top_k_renders(scene):
    params, mask, origins, dirs, jitter = scene
    outs = {}
    for mode in ("renormalize", "black"):
        settings = make_settings(appearance_samples=4, unselected=mode)
        assert settings.n_samples > 20
        outs[mode] = _render(
            params, MODEL, settings, jnp.asarray(AABB), mask,
            jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32),
        )  # fmt: skip
    ref = brute_force(params, mask, origins, dirs, np.zeros(N_RAYS), settings)
    return outs, ref, getattr(settings, "weight_threshold", 0.0)


def test_top_k_modes_against_brute_force(top_k_renders):
    outs, ref, threshold = top_k_renders
    w, colour = ref["weights"], ref["colour"]
    order = np.argsort(-w, axis=1)[:, :4]
    selected = np.zeros_like(w, bool)
    np.put_along_axis(selected, order, True, axis=1)
    selected &= w > threshold
    w_sel = np.where(selected, w, 0.0)
    shaded = (w_sel[..., None] * colour).sum(1)
    total = w_sel.sum(1)
    black = shaded + (1 - ref["acc"])[:, None]
    scale = ref["acc"] / np.maximum(total, 1e-10)
    renormalized = shaded * scale[:, None] + (1 - ref["acc"])[:, None]
    # The skipped samples matter (otherwise this test would not tell the modes apart).
    assert np.abs(renormalized - black).max() > 1e-2
    np.testing.assert_allclose(outs["black"]["rgb"], black, atol=2e-4)
    np.testing.assert_allclose(outs["renormalize"]["rgb"], renormalized, atol=2e-4)
    for out in outs.values():
        np.testing.assert_allclose(out["acc"], ref["acc"], atol=1e-5)
        np.testing.assert_allclose(out["depth"], ref["depth"], atol=1e-5, rtol=1e-5)


def test_top_k_modes_bounds(top_k_renders):
    outs, _, _ = top_k_renders
    black, renorm = np.asarray(outs["black"]["rgb"]), np.asarray(outs["renormalize"]["rgb"])
    for rgb in (black, renorm):
        assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6
    # Renormalising only adds the skipped samples' share of the opacity.
    assert (black <= renorm + 1e-6).all()
    assert (renorm - black).max() > 1e-2


# --- alpha mask ---------------------------------------------------------------------------


def random_directions(n: int, seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_alpha_mask_of_a_ball():
    resolution = (41, 41, 41)  # grid points every 0.05
    mask, bounds = alpha_mask.compute_alpha_mask(ball_alpha(0.5), AABB, resolution, 0.5)
    assert mask.cells.shape == (40, 40, 40)
    dirs = random_directions(200, 0)
    inside = np.asarray(alpha_mask.is_occupied(mask, jnp.asarray(0.2 * dirs, jnp.float32)))
    assert inside.all()
    centre = alpha_mask.is_occupied(mask, jnp.zeros((1, 3)))
    assert bool(centre[0])
    for radius in (0.8, 1.3):
        far = np.asarray(alpha_mask.is_occupied(mask, jnp.asarray(radius * dirs, jnp.float32)))
        assert not far.any()
    # Bounds: the ball's box grown by the 3x3x3 dilation, i.e. by one to two voxels.
    voxel = 0.05
    assert (bounds[0] <= -0.5 + 1e-5).all() and (bounds[0] >= -0.5 - 2 * voxel - 1e-5).all()
    assert (bounds[1] >= 0.5 - 1e-5).all() and (bounds[1] <= 0.5 + 2 * voxel + 1e-5).all()


def test_alpha_mask_empty_and_everything():
    mask, bounds = alpha_mask.compute_alpha_mask(ball_alpha(0.0), AABB, (9, 9, 9), 0.5)
    assert not np.asarray(mask.cells).any()
    np.testing.assert_allclose(bounds, AABB)

    box = np.array([[-1.0, -0.5, 0.0], [1.0, 0.5, 2.0]], np.float32)
    everything = alpha_mask.everything(box)
    rng = np.random.default_rng(0)
    inside = rng.uniform(box[0], box[1], (100, 3))
    outside = rng.uniform(box[0], box[1], (100, 3))
    outside[np.arange(100), rng.integers(0, 3, 100)] += 3.0
    assert np.asarray(alpha_mask.is_occupied(everything, jnp.asarray(inside))).all()
    assert not np.asarray(alpha_mask.is_occupied(everything, jnp.asarray(outside))).any()
    # Faces and corners of the box count as inside.
    assert np.asarray(alpha_mask.is_occupied(everything, jnp.asarray(box))).all()


# --- cameras ------------------------------------------------------------------------------


def test_pixel_rays_identity_camera():
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    focal, h, w = 4.0, 5, 5
    rows, cols = np.mgrid[:h, :w]
    camera = Intrinsics(focal, focal, 0.5 * w, 0.5 * h, w, h)
    origins, dirs = pixel_rays(jnp.asarray(c2w)[None], cols.ravel(), rows.ravel(), camera)
    origins, dirs = np.asarray(origins).reshape(h, w, 3), np.asarray(dirs).reshape(h, w, 3)
    np.testing.assert_allclose(origins, np.broadcast_to([1.0, 2.0, 3.0], (h, w, 3)))
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(dirs[2, 2], [0.0, 0.0, -1.0], atol=1e-6)  # centre looks down -z
    assert dirs[2, 3, 0] > 0 and abs(dirs[2, 3, 1]) < 1e-6  # right of centre: +x
    assert dirs[1, 2, 1] > 0 and abs(dirs[1, 2, 0]) < 1e-6  # above centre (smaller row): +y
    # One pixel right of centre: direction (1 / focal, 0, -1), normalised.
    np.testing.assert_allclose(dirs[2, 3], np.array([0.25, 0, -1]) / math.hypot(0.25, 1), 1e-6)


def test_pixel_rays_rotated_camera_and_focal():
    assert focal_from_fov(2 * math.atan(0.5), 100) == pytest.approx(100.0)
    # Camera at +x looking at the origin: camera -z is world -x, camera +x is world +y.
    c2w = np.array([[0, 0, 1, 3.0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float32)
    camera = Intrinsics(4.0, 4.0, 2.5, 2.5, 5, 5)
    origins, dirs = pixel_rays(jnp.asarray(c2w), jnp.array([2, 3]), jnp.array([2, 2]), camera)
    np.testing.assert_allclose(origins, [[3.0, 0, 0]] * 2)
    np.testing.assert_allclose(dirs[0], [-1.0, 0, 0], atol=1e-6)
    assert float(dirs[1, 1]) > 0


# --- marching only through the occupied box ----------------------------------------------


@pytest.mark.slow
def test_occupied_box_render_matches_the_full_march(sphere_scene, tmp_path):
    """A sphere trained without alpha masks, then masked without shrinking the box, so the
    occupied box is much smaller than the aabb: the fast path (rays that miss the box are
    background, the others march only through it) renders the same image as marching
    every ray through the whole aabb, background pixels included."""
    cfg = override(sphere_config(sphere_scene, tmp_path / "run"), n_iters=150,
                   upsample_steps=(), mask_steps=(), eval_max_views=1)  # fmt: skip
    experiment.train(cfg)
    state = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[0]
    # A high threshold: after 150 steps the empty space is not yet quite transparent.
    state = events.update_mask(state, override(cfg, mask_threshold=0.05),
                                 shrink=False)[0]  # fmt: skip
    views = data.load_views(sphere_scene, "test")
    fast = train_state.settings_for(cfg, state)
    assert fast.occupied is not None and 0 < fast.window < 0.8 * fast.n_samples
    full = dataclasses.replace(fast, occupied=None, window=0)
    for i in range(views.n_views):
        args = (state.params, cfg.model), (state.aabb, state.mask, views.c2w[i], views.intrinsics)
        a, _ = image.render_image(*args[0], fast, *args[1], chunk=512)
        b, _ = image.render_image(*args[0], full, *args[1], chunk=512)
        empty = b["acc"] == 0
        assert 0.1 < empty.mean() < 0.9  # rays that end on nothing, and rays that do not
        np.testing.assert_array_equal(a["rgb"][empty], b["rgb"][empty])
        assert np.abs(a["rgb"] - b["rgb"]).max() < 1e-5
        assert np.abs(a["depth"] - b["depth"]).max() < 1e-4
        assert a["density_evals_per_ray"] == b["density_evals_per_ray"]
        # Rendered in quarter-size tail chunks (a chunk of four images' rays holds no full
        # chunk; its buffers are fitted from a tail chunk), the image is the same.
        pixels = views.intrinsics.width * views.intrinsics.height
        c, _ = image.render_image(*args[0], fast, *args[1], chunk=4 * pixels)
        np.testing.assert_allclose(c["rgb"], a["rgb"], atol=1e-6)
        # Images shade fewer samples (--march.image-threshold), at a small cost.
        d, _ = image.render_image(*args[0], sampling.image_settings(fast, cfg.render), *args[1],
                                   chunk=512)  # fmt: skip
        assert d["shaded_samples_per_ray"] < a["shaded_samples_per_ray"]
        gt = views.images[i]
        assert abs(psnr(d["rgb"], gt) - psnr(a["rgb"], gt)) < 0.02



def test_second_pass_skips_what_opaque_surfaces_hide(scene):
    """An opaque ball (a baked density grid) in a loose alpha mask: marched in two passes,
    the rays that ended on the ball in the first pass march no further, the ones that
    missed it go on, and the image is the one pass render's to within the weight
    threshold, with a fifth fewer density evaluations or more."""
    params = scene[0]
    inside = np.linalg.norm(alpha_mask.dense_points(AABB, RESOLUTION), axis=-1) < 0.5
    params = {**params, "density": decomposition.Baked(jnp.where(inside, 60.0, -60.0))}
    # Loose, as early in training: most of what the mask holds lies behind the surface.
    mask, _ = alpha_mask.compute_alpha_mask(ball_alpha(0.95), AABB, (17, 17, 17), 0.5)
    rng = np.random.default_rng(1)
    origins = rng.normal(size=(N_RAYS, 3))
    origins *= 3.0 / np.linalg.norm(origins, axis=-1, keepdims=True)
    # The first half aims at the ball's middle, the second half passes it at 0.75.
    side = np.cross(origins, rng.normal(size=(N_RAYS, 3)))
    side *= 0.75 / np.linalg.norm(side, axis=-1, keepdims=True)
    targets = np.where(np.arange(N_RAYS)[:, None] < N_RAYS // 2,
                       rng.uniform(-0.2, 0.2, (N_RAYS, 3)), side)  # fmt: skip
    dirs = (targets - origins) / np.linalg.norm(targets - origins, axis=-1, keepdims=True)
    cfg = override(TrainConfig(), batch_size=N_RAYS,
                   render=RenderConfig(near=0.0, far=10.0, step_ratio=0.5))  # fmt: skip
    one = sampling.render_settings(cfg, AABB, RESOLUTION, mask=mask)
    n = one.samples_per_ray
    one = dataclasses.replace(one, density_capacity=N_RAYS * n, appearance_capacity=N_RAYS * 16)
    two = dataclasses.replace(one, segment=n * 3 // 8, rest_rays=N_RAYS,
                              rest_density_capacity=N_RAYS * n)  # fmt: skip
    a = _render(params, MODEL, one, jnp.asarray(AABB), mask, origins, dirs)
    b = _render(params, MODEL, two, jnp.asarray(AABB), mask, origins, dirs)
    hits = np.asarray(a["acc"]) > 0.999
    np.testing.assert_array_equal(hits, np.arange(N_RAYS) < N_RAYS // 2)
    assert int(b["rest_count"]) == N_RAYS // 2  # the rays that missed the ball
    evals = int(b["density_count"]) + int(b["rest_density_count"])
    assert evals < 0.8 * int(a["density_count"])
    threshold = one.weight_threshold
    assert np.abs(np.asarray(a["rgb"]) - np.asarray(b["rgb"])).max() < 2 * threshold
    assert np.abs(np.asarray(a["acc"]) - np.asarray(b["acc"])).max() < threshold
    assert np.abs(np.asarray(a["depth"]) - np.asarray(b["depth"])).max() < threshold * 10.0
    # Where nothing was skipped, nothing changes.
    np.testing.assert_allclose(np.asarray(b["rgb"])[~hits], np.asarray(a["rgb"])[~hits], atol=1e-6)
    # Without an occupied box, the visible rays with samples left in the aabb go on.
    c = _render(params, MODEL, dataclasses.replace(two, occupied=None, window=0),
                jnp.asarray(AABB), mask, origins, dirs)  # fmt: skip
    assert 0 < int(c["rest_count"]) <= N_RAYS // 2
    assert np.abs(np.asarray(a["rgb"]) - np.asarray(c["rgb"])).max() < 2 * threshold
