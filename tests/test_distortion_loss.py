"""mip-NeRF 360's distortion loss: the O(n) form against the definition, its gradient, what
it prefers, the ray distances it is measured in, and a training run with it on."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import tiny_config
from test_gradients import AABB, MODEL, settings_for, setup_problem, with_entry

from tensorf import experiment
from tensorf.config import RenderConfig, TrainConfig, override
from tensorf.field import alpha_mask
from tensorf.geometry import contraction
from tensorf.loop import monitor
from tensorf.render import march, sampling
from tensorf.render.distortion_loss import distortion_loss
from tensorf.train import checkpoint, steps


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def by_definition(w: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i per ray, pair by pair."""
    pairs = np.einsum("ri,rj,rij->r", w, w, np.abs(m[:, :, None] - m[:, None, :]))
    return pairs + (w**2 * d).sum(-1) / 3


def test_a_ray_worked_by_hand():
    # Two halves at 0 and 1: the pairs (0, 1) and (1, 0) give 2 * 0.25 * 1; each interval
    # 0.25 * 0.1 / 3.
    loss = distortion_loss(jnp.array([[0.5, 0.5]]), jnp.array([[0.0, 1.0]]),
                           jnp.array([[0.1, 0.1]]))  # fmt: skip
    assert float(loss[0]) == pytest.approx(0.5 + 2 * 0.025 / 3, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(rays=st.integers(1, 4), samples=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       zeros=st.floats(0.0, 0.9))  # fmt: skip
def test_the_linear_form_is_the_definition(rays, samples, seed, zeros):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, (rays, samples)) * (rng.uniform(size=(rays, samples)) > zeros)
    w /= np.maximum(w.sum(-1, keepdims=True), 1.0)  # at most an opaque ray's
    m = np.sort(rng.uniform(0, 1, (rays, samples)), axis=-1)
    d = rng.uniform(0, 0.1, (rays, samples))
    with jax.enable_x64(True):
        fast = np.asarray(distortion_loss(jnp.asarray(w), jnp.asarray(m), jnp.asarray(d)))
    np.testing.assert_allclose(fast, by_definition(w, m, d), rtol=1e-10, atol=1e-14)


def test_gradient_is_the_definitions(x64):
    rng = np.random.default_rng(3)
    w, m = rng.uniform(0, 0.2, (3, 16)), np.sort(rng.uniform(0, 1, (3, 16)), -1)
    d = rng.uniform(0, 0.1, (3, 16))
    grad = np.asarray(jax.grad(lambda w: distortion_loss(w, m, d).sum())(jnp.asarray(w)))
    # dL/dw_i = 2 sum_j w_j |m_i - m_j| + 2/3 w_i d_i
    exact = 2 * np.einsum("rj,rij->ri", w, np.abs(m[:, :, None] - m[:, None, :])) + 2 * w * d / 3
    np.testing.assert_allclose(grad, exact, rtol=1e-10)


def test_one_surface_scores_lower_than_a_spread(x64):
    n = 32
    m = (np.arange(n) + 0.5) / n
    d = np.full(n, 1 / n)
    one = np.zeros(n)
    one[20] = 0.9
    two = np.zeros(n)
    two[[5, 20]] = 0.45  # a floater in front of the surface
    spread = np.full(n, 0.9 / n)
    loss = np.asarray(distortion_loss(jnp.asarray(np.stack([one, two, spread])),
                                      jnp.asarray(np.tile(m, (3, 1))),
                                      jnp.asarray(np.tile(d, (3, 1)))))  # fmt: skip
    # One interval: 0.81 / 32 / 3; the floater adds 2 * 0.45^2 * 15/32; the spread is
    # 0.81 (1/3 - 1/3 n^-2) (pairs) + 0.81 / 3 n^-2, ~0.27.
    np.testing.assert_allclose(loss, [0.81 / 96, 2 * 0.2025 * 15 / 32 + 2 * 0.2025 / 96,
                                      0.81 / 3], rtol=1e-12)  # fmt: skip


def test_render_gradient_matches_finite_differences(x64):
    params, origins, dirs, _ = setup_problem()
    settings = settings_for(6)
    mask, aabb = alpha_mask.everything(jnp.asarray(AABB)), jnp.asarray(AABB)

    @jax.jit
    def loss_fn(p):
        out = march.render_rays(p, MODEL, settings, aabb, mask, origins, dirs, distortion=True)
        return jnp.mean(out["distortion"])

    loss = loss_fn(params)
    assert loss.dtype == jnp.float64 and float(loss) > 0
    g = np.asarray(jax.grad(loss_fn)(params)["density"].planes[0])
    # Compositing runs in float32 (`march.compositing_weights`), whose rounding swamps a
    # difference at 1e-4 (0.6% off); at 1e-2 the difference agrees to 5e-5.
    eps = 1e-2
    for f in np.argsort(-np.abs(g).ravel())[:4]:
        index = np.unravel_index(f, g.shape)
        assert abs(g[index]) > 1e-6
        plus = loss_fn(with_entry(params, "density", "planes", 0, index, eps))
        minus = loss_fn(with_entry(params, "density", "planes", 0, index, -eps))
        assert g[index] == pytest.approx(float(plus - minus) / (2 * eps), rel=2e-4)


def contracted_samples(n_rays: int = 6):
    cfg = override(TrainConfig(), render=RenderConfig(contract=True, near=0.05, far=1000.0,
                                                      outer_samples=16))  # fmt: skip
    settings = sampling.render_settings(cfg, np.reshape(contraction.OUTER_AABB, (2, 3)), (16,) * 3)
    rng = np.random.default_rng(0)
    origins = rng.normal(size=(n_rays, 3))
    origins = 2.0 * origins / np.linalg.norm(origins, axis=-1, keepdims=True)
    origins[-1] = [3.0, 3.0, 0.0]  # a ray that misses the inner box
    dirs = rng.uniform(-0.3, 0.3, (n_rays, 3)) - origins
    dirs[-1] = [0.0, 0.0, 1.0]
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    offset = jnp.asarray(rng.uniform(size=n_rays))
    return settings, march._samples(settings, None, jnp.asarray(origins), jnp.asarray(dirs),
                                    offset)  # fmt: skip


def test_contracted_distances_run_from_0_to_1_in_order():
    settings, s = contracted_samples()
    mids, widths = map(np.asarray, march.normalised_distances(settings, s))
    assert mids.shape == widths.shape == (6, settings.n_samples + 16)
    assert (mids >= 0).all() and (mids < 1).all()
    assert (np.diff(mids, axis=-1) >= -1e-6).all()
    # The widths cover the whole ray: its way through the inner box within a step, and
    # the shell beyond.
    t_in, t_exit = march.ray_aabb(s.o, s.d, contraction.INNER, settings.near, settings.far)
    length = np.where(t_in < t_exit, t_exit, settings.near) - settings.near + 1
    assert np.all(np.abs(widths.sum(-1) - 1) <= settings.step_size / length + 1e-6)
    # The ray that misses the inner box has only the shell: evenly in disparity.
    np.testing.assert_allclose(widths[-1, settings.n_samples :], 1 / 16, rtol=1e-6)
    assert np.count_nonzero(widths[-1, : settings.n_samples]) == 0


def test_world_and_ndc_distances():
    settings = dataclasses.replace(settings_for(6), near=2.0, far=6.0)
    t = jnp.array([[2.0, 3.0, 6.0]])
    s = march._Samples(None, None, t, jnp.zeros(3), None, None, False)
    mids, widths = march.normalised_distances(settings, s)
    np.testing.assert_allclose(mids, [[0.0, 0.25, 1.0]])
    np.testing.assert_allclose(widths, settings.step_size / 4)
    ndc = dataclasses.replace(settings, near=0.0, far=1.0, step_size=0.01)
    mids, widths = march.normalised_distances(ndc, s._replace(t=jnp.array([[0.1, 0.5]])))
    np.testing.assert_allclose(mids, [[0.1, 0.5]])
    np.testing.assert_allclose(widths, 0.01)


def test_off_by_default_and_on_by_weight():
    cfg = TrainConfig()
    assert not steps.StepSpec.of(cfg).distortion
    on = override(cfg, distortion_weight=0.01)
    assert steps.StepSpec.of(on).distortion
    assert float(steps.Hyper.of(on).distortion_weight) == pytest.approx(0.01)
    # Only the flag and the weight change: the rest of the step is today's.
    assert dataclasses.replace(steps.StepSpec.of(on), distortion=False) == steps.StepSpec.of(cfg)


def logged(run_dir) -> list[dict]:
    lines = (run_dir / monitor.LOG_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "rays_per_s"} for line in lines]


@pytest.mark.slow
def test_a_run_with_it_on_is_finite_and_resumes_bit_for_bit(sphere_scene, tmp_path):
    cfg = override(tiny_config(sphere_scene, tmp_path / "a"), distortion_weight=0.01,
                   n_iters=40, mask_steps=(20,), upsample_steps=(20,),
                   checkpoint_every=20, eval_max_views=1)  # fmt: skip
    metrics = experiment.train(cfg)
    log = logged(cfg.run.run_dir)
    assert [line["step"] for line in log] == [10, 20, 30, 40]
    assert all(np.isfinite(line["distortion"]) and line["distortion"] > 0 for line in log)
    assert all(line["loss"] > line["mse"] for line in log)
    # From the checkpoint at step 20, a resumed run ends where this one did.
    shutil.copytree(cfg.run.run_dir, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "40")
    resumed_cfg = override(cfg, run_dir=tmp_path / "b", resume=True)
    resumed = experiment.train(resumed_cfg)
    assert logged(tmp_path / "b") == log
    assert resumed["psnr"] == metrics["psnr"]
    state_a = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[0]
    state_b = checkpoint.restore_latest(checkpoint.manager(tmp_path / "b"), resumed_cfg)[0]
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
