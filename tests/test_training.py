"""The training schedule, the optimisation step, grid events and config round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic import write_sphere_scene

from tensorf import data, experiment, training
from tensorf.cli import ConfigError
from tensorf.config import PRESETS, ModelConfig, RenderConfig, TrainConfig, from_dict, to_dict

SMALL_MODEL = ModelConfig(density_components=4, appearance_components=4, appearance_dim=6,
                          mlp_width=16)  # fmt: skip
N_STEPS = 100


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
    return TrainConfig(**values)


# --- schedule -----------------------------------------------------------------------------


def test_voxel_schedule_paper():
    cfg = PRESETS["paper"][1]
    counts = training.voxel_schedule(cfg)
    assert len(counts) == len(cfg.upsample_steps) == 5
    assert [round(c ** (1 / 3)) for c in counts] == [152, 180, 213, 253, 300]
    assert counts[-1] == 300**3
    # Log-linear: constant ratio between consecutive counts, starting from 128^3.
    ratios = np.diff(np.log([128**3, *counts]))
    np.testing.assert_allclose(ratios, np.log((300 / 128) ** 3) / 5, rtol=1e-6)


def test_voxel_schedule_quick():
    cfg = PRESETS["quick"][1]
    counts = training.voxel_schedule(cfg)
    assert len(counts) == len(cfg.upsample_steps)
    assert counts[-1] == cfg.grid_final**3
    assert all(a < b for a, b in zip([cfg.grid_init**3, *counts], counts, strict=False))


# --- train_step on the sphere scene --------------------------------------------------------


@pytest.fixture(scope="module")
def sphere_pool(tmp_path_factory: pytest.TempPathFactory):
    root = write_sphere_scene(tmp_path_factory.mktemp("sphere"), size=32)
    return root, experiment.make_pool(data.load_views(root, "train"))


@pytest.fixture(scope="module")
def trained(sphere_pool):
    """N_STEPS train steps from scratch; the metrics of every step, and the final state."""
    root, pool = sphere_pool
    cfg = small_config(dataset_path=root)
    state = training.init_state(cfg)
    settings = training.settings_for(cfg, state)
    history = []
    for _ in range(N_STEPS):
        state, metrics = training.train_step(state, pool, cfg, settings)
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


def test_train_step_after_upsample_restarts_the_learning_rate(trained, sphere_pool):
    cfg, state, _ = trained
    _, pool = sphere_pool
    # A copy: train_step donates its state and the fixture's state is shared.
    state = jax.tree.map(jnp.array, state)
    state = training.upsample(state, cfg, 20**3)
    assert state.resolution == (20, 20, 20)
    assert int(state.lr_reset_step) == int(state.step) == N_STEPS
    settings = training.settings_for(cfg, state)
    for i in range(2):
        state, metrics = training.train_step(state, pool, cfg, settings)
        assert float(metrics["lr_grid"]) == pytest.approx(0.02 * 0.1 ** (i / N_STEPS), 1e-5)
        assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == N_STEPS + 2
    assert int(state.lr_reset_step) == N_STEPS


# --- grid events --------------------------------------------------------------------------


def with_moments(state: training.TrainState, value: float, count: int) -> training.TrainState:
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
    state = with_moments(training.init_state(cfg), 0.3, 5)
    old_density = state.params["density"]
    new = training.upsample(state, cfg, 20**3)
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
    assert isinstance(values["aabb"], list) and isinstance(values["dataset_path"], str)
    back = from_dict(TrainConfig, values)
    assert back == cfg
    assert isinstance(back.dataset_path, Path) and isinstance(back.upsample_steps, tuple)
    assert isinstance(back.model, ModelConfig) and isinstance(back.render, RenderConfig)


def test_config_round_trip_non_defaults():
    cfg = dataclasses.replace(
        PRESETS["quick"][1],
        run_dir=Path("runs/x y"),
        max_minutes=1.5,
        eval_max_views=3,
        upsample_steps=(7,),
        aabb=(-1.0, -2.0, -3.0, 1.0, 2.0, 3.5),
        adam_on_upsample="resample",
        model=ModelConfig(density_shift=-5.5),
        render=RenderConfig(unselected="black", near=0.5),
    )
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
    ],
)
def test_check_config_rejects(overrides):
    with pytest.raises(ConfigError):
        experiment.check_config(dataclasses.replace(PRESETS["quick"][1], **overrides))
    experiment.check_config(PRESETS["quick"][1])
