"""The training schedule, the optimisation step, grid events and config round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import jmp
import numpy as np
import pytest
from synthetic import write_sphere_scene

from tensorf import data, parallel
from tensorf.cli import ConfigError
from tensorf.config import ModelConfig, RenderConfig, TrainConfig, override
from tensorf.config_json import from_dict, to_dict
from tensorf.field import alpha_mask, field
from tensorf.presets import PRESETS
from tensorf.train import checks, events, ray_pool, steps, train_state

SMALL_MODEL = ModelConfig(density_components=4, appearance_components=4, appearance_dim=6,
                          mlp_width=16)  # fmt: skip
N_STEPS = 100
MESH = parallel.data_mesh()


def small_config(**overrides) -> TrainConfig:
    values = dict(
        batch_size=512,
        n_iters=N_STEPS,
        grid_init=16,
        grid_final=20,
        upsample_steps=(N_STEPS,),
        mask_steps=(N_STEPS,),
        model=SMALL_MODEL,
        render=RenderConfig(appearance_samples=8),
        aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        # A 16^3 grid has so few values that the default L1 weight flattens it before the
        # colour loss can grow any density (the per-value L1 gradient scales as 1 / size).
        l1_initial=0.0,
    )
    values.update(overrides)
    return override(TrainConfig(), **values)


# --- schedule -----------------------------------------------------------------------------


def test_voxel_schedule_paper():
    cfg = PRESETS["paper"][1]
    counts = events.voxel_schedule(cfg.schedule)
    assert len(counts) == len(cfg.schedule.upsample_steps) == 5
    assert [round(c ** (1 / 3)) for c in counts] == [152, 180, 213, 253, 300]
    assert counts[-1] == 300**3
    # Log-linear: constant ratio between consecutive counts, starting from 128^3.
    ratios = np.diff(np.log([128**3, *counts]))
    np.testing.assert_allclose(ratios, np.log((300 / 128) ** 3) / 5, rtol=1e-6)


def test_voxel_schedule_quick():
    cfg = PRESETS["quick"][1]
    counts = events.voxel_schedule(cfg.schedule)
    assert len(counts) == len(cfg.schedule.upsample_steps)
    assert counts[-1] == cfg.schedule.grid_final**3
    assert all(a < b for a, b in zip([cfg.schedule.grid_init**3, *counts], counts, strict=False))


# --- train_step on the sphere scene --------------------------------------------------------


def train_step(state, pool, cfg, settings):
    batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, int(state.step), MESH)
    return steps.train_step(state, batch, cfg, settings, MESH)


@pytest.fixture(scope="module")
def sphere_pool(tmp_path_factory: pytest.TempPathFactory):
    root = write_sphere_scene(tmp_path_factory.mktemp("sphere"), size=32)
    return root, ray_pool.make_pool(data.load_views(root, "train"))


@pytest.fixture(scope="module")
def trained(sphere_pool):
    """N_STEPS train steps from scratch; the metrics of every step, and the final state."""
    root, pool = sphere_pool
    cfg = small_config(dataset_path=root)
    state = train_state.init_state(cfg)
    settings = train_state.settings_for(cfg, state)
    history = []
    for _ in range(N_STEPS):
        state, metrics = train_step(state, pool, cfg, settings)
        history.append({k: float(v) for k, v in metrics.items()})
    return cfg, state, history


def test_learning_rate_decay(trained):
    cfg, state, history = trained
    assert int(state.step) == N_STEPS
    assert history[0]["lr_grid"] == pytest.approx(0.02, rel=1e-7)
    assert history[0]["lr_network"] == pytest.approx(1e-3, rel=1e-7)
    for step in (1, 10, 57, N_STEPS - 1):
        assert history[step]["lr_grid"] == pytest.approx(0.02 * 0.1 ** (step / N_STEPS), 1e-5)
        assert history[step]["lr_network"] == pytest.approx(1e-3 * 0.1 ** (step / N_STEPS), 1e-5)


def test_train_steps_reduce_the_loss(trained):
    _, state, history = trained
    losses = np.array([h["loss"] for h in history])
    assert np.isfinite(losses).all()
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < 0.75 * first, (first, last)
    assert history[-1]["psnr"] == pytest.approx(-10 * np.log10(history[-1]["mse"]), abs=1e-3)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_non_finite_step_is_skipped_not_applied(trained, sphere_pool):
    cfg, state, _ = trained
    _, pool = sphere_pool
    settings = train_state.settings_for(cfg, state)
    before = jax.tree.map(np.asarray, state)
    # A NaN target makes the loss and every gradient NaN.
    poisoned = dataclasses.replace(pool, rgb=np.full_like(pool.rgb, np.nan))
    after, metrics = train_step(jax.tree.map(jnp.array, before), poisoned, cfg, settings)
    assert not bool(metrics["finite"]) and not np.isfinite(float(metrics["loss"]))
    assert int(after.step) == int(before.step) + 1
    assert int(after.skipped_steps) == int(before.skipped_steps) + 1
    for a, b in zip(jax.tree.leaves((after.params, after.opt_state)),
                    jax.tree.leaves((before.params, before.opt_state)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), b)
    # The same step on good data is applied.
    applied, metrics = train_step(jax.tree.map(jnp.array, before), pool, cfg, settings)
    assert bool(metrics["finite"]) and int(applied.skipped_steps) == int(before.skipped_steps)
    assert not np.array_equal(np.asarray(applied.params["basis"]), before.params["basis"])


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.03), ("f16", 0.005)])
def test_reduced_precision_tracks_f32(trained, sphere_pool, precision, tolerance):
    """The same step in bf16 / f16: the loss and the update match f32 to within the
    dtype's precision (grid values and MLP in low precision, compositing in f32)."""
    cfg, state, _ = trained
    _, pool = sphere_pool
    low_cfg = override(cfg, precision=precision)
    settings = train_state.settings_for(cfg, state)
    assert train_state.settings_for(low_cfg, state).precision == precision
    low_state = dataclasses.replace(state, loss_scale=train_state.initial_loss_scale(low_cfg.run))
    ref, ref_metrics = train_step(jax.tree.map(jnp.array, state), pool, cfg, settings)
    low_settings = dataclasses.replace(settings, precision=precision)
    low, low_metrics = train_step(jax.tree.map(jnp.array, low_state), pool, low_cfg, low_settings)
    assert bool(low_metrics["finite"])
    assert float(low_metrics["loss"]) == pytest.approx(float(ref_metrics["loss"]), rel=tolerance)
    step_ref = np.asarray(ref.params["basis"]) - np.asarray(state.params["basis"])
    step_low = np.asarray(low.params["basis"]) - np.asarray(state.params["basis"])
    assert np.corrcoef(step_ref.ravel(), step_low.ravel())[0, 1] > 0.9


def test_f16_overflow_skips_the_step_and_halves_the_loss_scale(trained, sphere_pool):
    cfg, state, _ = trained
    _, pool = sphere_pool
    f16 = override(cfg, precision="f16")
    huge = jmp.DynamicLossScale(jnp.float32(2.0**40))  # scaled gradients overflow f16
    before = jax.tree.map(np.asarray, dataclasses.replace(state, loss_scale=huge))
    settings = train_state.settings_for(f16, state)
    after, metrics = train_step(jax.tree.map(jnp.array, before), pool, f16, settings)
    assert not bool(metrics["finite"])
    assert float(after.loss_scale.loss_scale) == 2.0**39
    assert int(after.skipped_steps) == int(before.skipped_steps) + 1
    np.testing.assert_array_equal(np.asarray(after.params["basis"]), before.params["basis"])


def test_empty_alpha_mask_keeps_the_state(trained):
    """Collapsed density (the official code crashes here): the mask update reports it and
    leaves mask, aabb and grids as they were."""
    cfg, state, _ = trained
    flat = jax.tree.map(jnp.zeros_like, state.params["density"])
    collapsed = dataclasses.replace(state, params={**state.params, "density": flat})
    after, ok = events.update_mask(collapsed, cfg, shrink=True)
    assert not ok
    assert after is collapsed
    # A live field gives a non-empty mask.
    live, ok = events.update_mask(state, cfg, shrink=False)
    assert ok and np.asarray(live.mask.cells).any()


def test_later_shrink_keeps_occupied_space_and_regrid_spends_the_voxels(trained):
    """A shrink at a later mask update (`--shrink every`) crops the box to the mask's
    occupied cells without cutting any off; regridding then puts the scheduled voxel count
    into the smaller box, keeping the learning-rate restart and the field's values."""
    cfg, state, _ = trained
    state = jax.tree.map(jnp.array, state)
    # A high threshold: after 100 steps the empty space is not yet quite transparent.
    cfg = override(cfg, mask_threshold=0.05)
    masked, ok = events.update_mask(state, cfg, shrink=True)
    assert ok
    box, aabb = alpha_mask.occupied_box(masked.mask), np.asarray(masked.aabb)
    cell = np.asarray(masked.mask.aabb[1] - masked.mask.aabb[0]) / masked.mask.cells.shape
    # A cell is occupied when any of its corners is: the occupied grid points (those of the
    # dilated alpha above the threshold) lie one cell inside the occupied cells' box, and
    # the new box holds every one of them.
    margin = cell * 1.01
    assert (aabb[0] <= box[0] + margin).all() and (aabb[1] >= box[1] - margin).all()
    assert np.prod(aabb[1] - aabb[0]) < np.prod(np.asarray(state.aabb[1] - state.aabb[0]))
    n_voxels = np.prod(state.resolution)
    regridded = events.regrid(masked, int(n_voxels))
    assert np.prod(masked.resolution) < 0.9 * n_voxels
    assert abs(np.prod(regridded.resolution) / n_voxels - 1) < 0.05
    assert int(regridded.lr_reset_step) == int(masked.lr_reset_step)
    # The same field, resampled: density at occupied points barely moves.
    xyz = jax.random.uniform(jax.random.PRNGKey(1), (2000, 3), minval=box[0], maxval=box[1])
    xyz = xyz[np.asarray(alpha_mask.is_occupied(masked.mask, xyz))]
    sigma = [field.density(s.params, cfg.model, field.normalize(xyz, s.aabb))
             for s in (masked, regridded)]  # fmt: skip
    assert float(jnp.abs(sigma[0] - sigma[1]).mean()) < 0.1 * float(jnp.abs(sigma[0]).mean())
    assert events.scheduled_voxels(cfg.schedule, 0) == cfg.schedule.grid_init**3
    last = cfg.schedule.upsample_steps[-1]
    assert events.scheduled_voxels(cfg.schedule, last) == cfg.schedule.grid_final**3


def test_train_step_after_upsample_restarts_the_learning_rate(trained, sphere_pool):
    cfg, state, _ = trained
    _, pool = sphere_pool
    # A copy: train_step donates its state and the fixture's state is shared.
    state = jax.tree.map(jnp.array, state)
    state = events.upsample(state, cfg.optimiser, 20**3)
    assert state.resolution == (20, 20, 20)
    assert int(state.lr_reset_step) == int(state.step) == N_STEPS
    settings = train_state.settings_for(cfg, state)
    for i in range(2):
        state, metrics = train_step(state, pool, cfg, settings)
        assert float(metrics["lr_grid"]) == pytest.approx(0.02 * 0.1 ** (i / N_STEPS), 1e-5)
        assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == N_STEPS + 2
    assert int(state.lr_reset_step) == N_STEPS


# --- grid events --------------------------------------------------------------------------


def with_moments(state: train_state.TrainState, value: float, count: int) -> train_state.TrainState:
    opt = state.opt_state
    opt = opt._replace(
        count=jnp.int32(count),
        mu=jax.tree.map(lambda x: jnp.full_like(x, value), opt.mu),
        nu=jax.tree.map(lambda x: jnp.full_like(x, 2 * value), opt.nu),
    )
    return dataclasses.replace(state, opt_state=opt, step=jnp.int32(7))


@pytest.mark.parametrize("mode", ["reset", "resample"])
def test_upsample_adam_modes(mode):
    cfg = small_config(adam_on_upsample=mode)
    state = with_moments(train_state.init_state(cfg), 0.3, 5)
    old_density = state.params["density"]
    new = events.upsample(state, cfg.optimiser, 20**3)
    assert new.resolution == (20, 20, 20)
    assert int(new.lr_reset_step) == 7 and int(new.step) == 7
    # Corner values survive the aligned-corner resampling.
    corners = np.ix_([0, -1], [0, -1])
    np.testing.assert_allclose(
        np.asarray(new.params["density"].planes[0])[corners],
        np.asarray(old_density.planes[0])[corners],
        atol=1e-6,
    )
    params, mu, nu = (jax.tree.leaves(t) for t in (new.params, new.opt_state.mu, new.opt_state.nu))
    for p, m, v in zip(params, mu, nu, strict=True):
        assert p.shape == m.shape == v.shape
    if mode == "reset":
        assert int(new.opt_state.count) == 0
        assert all(not np.asarray(x).any() for x in mu + nu)
    else:
        assert int(new.opt_state.count) == 5
        # Resampling a constant gives the same constant, grids and networks alike.
        for m, v in zip(mu, nu, strict=True):
            np.testing.assert_allclose(m, 0.3, rtol=1e-6)
            np.testing.assert_allclose(v, 0.6, rtol=1e-6)


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip_presets(name):
    description, cfg = PRESETS[name]
    assert description
    values = json.loads(json.dumps(to_dict(cfg)))
    assert isinstance(values["schedule"]["aabb"], list)
    assert isinstance(values["data"]["dataset_path"], str)
    back = from_dict(TrainConfig, values)
    assert back == cfg
    assert isinstance(back.data.dataset_path, Path)
    assert isinstance(back.schedule.upsample_steps, tuple)
    assert isinstance(back.model, ModelConfig) and isinstance(back.render, RenderConfig)


def test_config_round_trip_non_defaults():
    cfg = override(
        PRESETS["quick"][1],
        run_dir=Path("runs/x y"),
        max_minutes=1.5,
        eval_max_views=3,
        upsample_steps=(7,),
        aabb=(-1.0, -2.0, -3.0, 1.0, 2.0, 3.5),
        adam_on_upsample="resample",
        model=ModelConfig(density_shift=-5.5),
        render=RenderConfig(unselected="black", near=0.5),
        steps_per_call=8,
    )
    back = from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and isinstance(back.run.compile_cache, Path)
    cfg = override(cfg, compile_cache=None)  # off
    back = from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg
    assert hash(back) == hash(cfg)  # configs are static jit arguments


@pytest.mark.parametrize(
    "overrides",
    [
        {"batch_size": 0},
        {"n_iters": -1},
        {"grid_final": 8, "grid_init": 16},
        {"upsample_steps": (200, 100)},
        {"mask_steps": (0, 100)},
        {"downscale": 0},
        {"upsample_steps": (500, 10**6)},  # beyond n_iters
        {"mask_steps": (500, 10**6)},
        {"max_bad_steps": 0},
        {"aabb": (1.0, -1.0, -1.0, -1.0, 1.0, 1.0)},
        {"tv_density": -1.0},
        {"tv_appearance": float("nan")},
        {"model": ModelConfig(density_components=(16, 0, 4))},
        {"lr_grid": float("nan")},
        {"lr_network": 0.0},
        {"seed": 2**40},
        {"grid_final": 4000, "model": ModelConfig()},  # VM-192 at 4000^3 does not fit
        {"batch_size": 2**22, "render": RenderConfig(step_ratio=0.01)},
        {"max_minutes": float("inf")},
        {"model": ModelConfig(view_pe=100)},
        {"render": RenderConfig(near=3.0, far=2.0)},
        {"render": RenderConfig(contract=True)},  # the box is not the contracted one
        {"steps_per_call": steps.MAX_STEPS_PER_CALL + 1},
    ],
)
def test_check_config_rejects(overrides):
    with pytest.raises(ConfigError):
        checks.check_config(override(PRESETS["quick"][1], **overrides))
    checks.check_config(PRESETS["quick"][1])


@pytest.mark.parametrize("k", [0, 101])
def test_check_config_rejects_k_outside_the_samples(k):
    quick = PRESETS["quick"][1]
    render = dataclasses.replace(quick.render, appearance_samples=k, max_samples=100)
    with pytest.raises(ConfigError, match="appearance-samples"):
        checks.check_config(dataclasses.replace(quick, render=render))


@pytest.mark.parametrize("term", ["ortho", "tv"])
def test_regulariser_weights_enter_the_loss(trained, sphere_pool, term):
    """The orthogonality and TV weights add exactly weight x term (TV decayed by the
    learning-rate factor from the first step, as the official code) to the loss."""
    cfg, state, _ = trained
    _, pool = sphere_pool
    settings = train_state.settings_for(cfg, state)
    before = jax.tree.map(np.asarray, state)
    if term == "ortho":
        weighted = override(cfg, ortho_weight=0.5)
        expected = 0.5 * float(field.orthogonality(before.params))
    else:
        weighted = override(cfg, tv_density=0.3, tv_appearance=0.7)
        decay = cfg.optimiser.lr_decay_ratio ** ((int(before.step) + 1) / cfg.schedule.n_iters)
        expected = decay * (0.3 * float(field.grid_tv(before.params, "density"))
                            + 0.7 * float(field.grid_tv(before.params, "appearance")))  # fmt: skip
    assert expected > 0
    _, plain = train_step(jax.tree.map(jnp.array, before), pool, cfg, settings)
    _, with_term = train_step(jax.tree.map(jnp.array, before), pool, weighted, settings)
    assert float(with_term["mse"]) == pytest.approx(float(plain["mse"]), rel=1e-6)
    assert float(with_term["loss"]) - float(plain["loss"]) == pytest.approx(expected, rel=1e-4)
