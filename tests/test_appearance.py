"""Per-image appearance codes (--model.appearance-codes): off, the field is what it was; on,
they explain exposure that changes between photos, renders outside training use the mean
code, and they are saved and resumed with the rest of the state."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic import tiny_config, write_exposure_scene
from test_reliability import assert_same_state

from tensorf import data, experiment, parallel
from tensorf.config import ModelConfig, TrainConfig, override
from tensorf.errors import ConfigError
from tensorf.field import field
from tensorf.field.alpha_mask import everything
from tensorf.loop import start
from tensorf.render import march
from tensorf.render.sampling import fit_capacity
from tensorf.train import checkpoint, ray_pool, steps, train_state

RESOLUTION = (8, 8, 8)


def with_codes(cfg: TrainConfig, length: int, **model) -> TrainConfig:
    return override(cfg, model=dataclasses.replace(cfg.model, appearance_codes=length, **model))


def test_codes_off_leave_the_field_as_it_was():
    key = jax.random.PRNGKey(3)
    off = field.init_params(key, ModelConfig(), RESOLUTION)
    assert sorted(off) == ["appearance", "basis", "density", "mlp"]
    # The official MLPRender_Fea input: 27 features, the direction, and both encoded twice.
    assert off["mlp"]["Dense_0"]["kernel"].shape == (27 + 3 + 2 * 2 * 27 + 2 * 2 * 3, 128)
    # The number of training views means nothing without codes.
    same = field.init_params(key, ModelConfig(), RESOLUTION, training_views=50)
    for a, b in zip(jax.tree.leaves(off), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)
    on = field.init_params(key, ModelConfig(appearance_codes=5), RESOLUTION, training_views=7)
    np.testing.assert_array_equal(on["codes"], np.zeros((7, 5)))
    assert on["mlp"]["Dense_0"]["kernel"].shape == (27 + 3 + 2 * 2 * 27 + 2 * 2 * 3 + 5, 128)
    # Codes draw no key: the grids and the basis start as they do without them.
    for name in ("density", "appearance", "basis"):
        for a, b in zip(jax.tree.leaves(off[name]), jax.tree.leaves(on[name]), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="training views"):
        field.init_params(key, ModelConfig(appearance_codes=5), RESOLUTION)


def test_renders_outside_training_use_the_mean_code():
    cfg = with_codes(tiny_config(Path("unused"), Path("unused")), 4)
    state = train_state.init_state(cfg, training_views=6)
    codes = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    mean = codes.mean(0)
    # A seventh row holding the mean, for the explicit render.
    params = {**state.params, "codes": jnp.concatenate([codes, mean[None]])}
    settings = train_state.settings_for(cfg, state)
    origins = jnp.tile(jnp.array([[0.0, -3.0, 0.2]]), (16, 1))
    dirs = jnp.stack([jnp.linspace(-0.2, 0.2, 16), jnp.ones(16), jnp.zeros(16)], -1)
    dirs /= jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    # Density everywhere, so every ray is shaded.
    params["density"] = jax.tree.map(lambda x: x + 1.0, params["density"])
    render = jax.jit(march.render_rays, static_argnums=(1, 2))
    args = (cfg.model, settings, state.aabb, everything(np.asarray(state.aabb)), origins, dirs)
    implicit = render({**params, "codes": codes}, *args)["rgb"]
    explicit = render(params, *args, views=jnp.full(16, 6))["rgb"]
    own = render(params, *args, views=jnp.full(16, 0))["rgb"]
    np.testing.assert_allclose(implicit, explicit, atol=1e-6)
    assert float(jnp.abs(own - implicit).max()) > 1e-3  # the code matters


def train_psnr(scene, codes: int) -> float:
    """Mean training PSNR of the last 64 of 384 steps on the exposure scene."""
    views = data.load_views(scene, "train")
    cfg = tiny_config(scene, scene / "unused")
    # No grid events (they need the training loop); a density shift that lets the sphere
    # appear within a hundred steps without them, and no L1 to hold it back. The rates
    # decay over 2000 steps, as at the start of a longer run.
    cfg = override(with_codes(cfg, codes, density_shift=-4.0), n_iters=2000, batch_size=512,
                   grid_init=24, grid_final=24, upsample_steps=(), mask_steps=(),
                   l1_initial=0.0)  # fmt: skip
    mesh = parallel.data_mesh(jax.devices()[:1])
    pool = ray_pool.make_pool(views).on(mesh, cfg.run.seed)
    state = parallel.replicate(train_state.init_state(cfg, views.n_views), mesh)
    settings = train_state.settings_for(cfg, state)
    hyper, spec = steps.Hyper.of(cfg), steps.StepSpec.of(cfg)
    for _ in range(6):
        state, metrics = steps.train_steps(state, pool, 64, hyper, spec, settings, mesh)
        peaks = {"density_capacity": int(metrics["density_peak"].max()),
                 "appearance_capacity": int(metrics["appearance_peak"].max())}  # fmt: skip
        settings = fit_capacity(settings, peaks, False)
    assert int(state.dropped_samples) == 0
    return float(np.mean(metrics["psnr"]))


@pytest.mark.slow
def test_codes_explain_per_image_exposure(tmp_path):
    """Six poses, two photos each with its own gain per channel (0.5 to 1): without codes
    the field can only fit the average of a pose's two photos."""
    gains = np.random.default_rng(0).uniform(0.5, 1.0, (6, 2, 3))
    scene = write_exposure_scene(tmp_path / "scene", gains)
    without, with_ = train_psnr(scene, 0), train_psnr(scene, 4)
    print(f"training PSNR without codes {without:.2f} dB, with {with_:.2f} dB")
    # Measured (2026-12-05): 29.42 dB without, 40.47 dB with.
    assert without < 30.5
    assert with_ > 37.0


@pytest.mark.slow
def test_codes_resume_bit_for_bit(sphere_scene, tmp_path):
    """A run with codes resumed from its step-20 checkpoint ends where the whole run did;
    its metrics say which code shaded the test views."""
    cfg_a = with_codes(tiny_config(sphere_scene, tmp_path / "a"), 3)
    metrics_a = experiment.train(cfg_a)
    assert metrics_a["appearance"] == field.APPEARANCE_RULE == "mean training code"
    state = checkpoint.load_run(cfg_a.run.run_dir)[1]
    codes = np.asarray(state.params["codes"])
    assert codes.shape == (24, 3) and np.all(np.abs(codes).sum(1) > 0)  # every view learned

    cfg_b = override(cfg_a, run_dir=tmp_path / "b", resume=True)
    shutil.copytree(cfg_a.run.run_dir, cfg_b.run.run_dir)
    for step in (40, 60):  # as if killed before the checkpoint of step 40
        shutil.rmtree(cfg_b.run.run_dir / "checkpoints" / str(step))
    metrics_b = experiment.train(cfg_b)
    assert metrics_b["psnr"] == pytest.approx(metrics_a["psnr"], abs=1e-6)
    assert_same_state(cfg_a, cfg_b)


def test_resume_refuses_codes_for_another_number_of_views():
    state = SimpleNamespace(params={"codes": np.zeros((24, 3))})
    start.check_codes(state, 24)
    start.check_codes(SimpleNamespace(params={}), 0)  # no codes: nothing to check
    with pytest.raises(ConfigError, match="codes are for 24 training views, the scene has 20"):
        start.check_codes(state, 20)
