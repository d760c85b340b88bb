"""Gradients of the training loss against central finite differences in float64."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tensorf.config import ModelConfig, RenderConfig, TrainConfig, override
from tensorf.field import alpha_mask, field
from tensorf.render import march, sampling

AABB = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RESOLUTION = (8, 9, 10)
MODEL = ModelConfig(
    density_components=2,
    appearance_components=2,
    appearance_dim=5,
    mlp_width=16,
    density_shift=-3.0,
    init_scale=0.5,
)
N_RAYS = 12
L1 = 0.01
EPS = 1e-4


def compositing_weights_any_dtype(tau, before=None):
    """march.compositing_weights without its cast to float32 (same formula)."""
    if before is None:
        before = jnp.cumsum(tau, axis=-1) - tau
    return jnp.exp(-before) * -jnp.expm1(-tau)


@pytest.fixture
def x64(monkeypatch):
    # compositing_weights computes in float32 on purpose; under x64 that cast would make
    # finite differences meaningless, so the same formula runs in the input's dtype.
    monkeypatch.setattr(march, "compositing_weights", compositing_weights_any_dtype)
    with jax.enable_x64(True):
        yield


def settings_for(appearance_samples: int | None) -> sampling.RenderSettings:
    def make(k):
        cfg = override(TrainConfig(),
            batch_size=N_RAYS,
            render=RenderConfig(near=0.0, far=10.0, step_ratio=0.6, appearance_samples=k),
        )
        return sampling.render_settings(cfg, AABB, RESOLUTION)

    n = make(1).n_samples
    settings = make(n if appearance_samples is None else appearance_samples)
    if appearance_samples is None and hasattr(settings, "weight_threshold"):
        settings = dataclasses.replace(settings, weight_threshold=0.0)
    return settings


def setup_problem():
    params = field.init_params(jax.random.PRNGKey(1), MODEL, RESOLUTION)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    rng = np.random.default_rng(0)
    position = rng.normal(size=(N_RAYS, 3))
    origins = 3.0 * position / np.linalg.norm(position, axis=-1, keepdims=True)
    dirs = rng.uniform(-0.5, 0.5, (N_RAYS, 3)) - origins
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    target = rng.uniform(0, 1, (N_RAYS, 3))
    return params, jnp.asarray(origins), jnp.asarray(dirs), jnp.asarray(target)


def with_entry(params, group: str, kind: str, i: int, index: tuple, delta: float):
    """params with `delta` added to params[group].<kind>[i][index]."""
    grid = params[group]
    arrays = list(getattr(grid, kind))
    arrays[i] = arrays[i].at[index].add(delta)
    return {**params, group: dataclasses.replace(grid, **{kind: tuple(arrays)})}


@pytest.mark.parametrize("appearance_samples", [None, 6], ids=["all-samples", "top-6"])
def test_loss_gradient_matches_finite_differences(x64, appearance_samples):
    params, origins, dirs, target = setup_problem()
    settings = settings_for(appearance_samples)
    mask = alpha_mask.everything(jnp.asarray(AABB))
    aabb = jnp.asarray(AABB)

    @jax.jit
    def loss_fn(p):
        out = march.render_rays(p, MODEL, settings, aabb, mask, origins, dirs)
        return jnp.mean((out["rgb"] - target) ** 2) + L1 * field.density_l1(p)

    loss = loss_fn(params)
    assert loss.dtype == jnp.float64
    grads = jax.grad(loss_fn)(params)
    checked = 0
    for group, kind, i in (("density", "planes", 0), ("appearance", "lines", 1)):
        g = np.asarray(getattr(grads[group], kind)[i])
        assert g.dtype == np.float64
        # The entries with the largest gradients: ones the rays actually pass through.
        flat = np.argsort(-np.abs(g).ravel())[:4]
        for f in flat:
            index = np.unravel_index(f, g.shape)
            assert abs(g[index]) > 1e-6
            plus = loss_fn(with_entry(params, group, kind, i, index, EPS))
            minus = loss_fn(with_entry(params, group, kind, i, index, -EPS))
            fd = float(plus - minus) / (2 * EPS)
            assert g[index] == pytest.approx(fd, rel=1e-4, abs=1e-9), (group, kind, index)
            checked += 1
    assert checked == 8
    # Entries far from every ray only get the L1 gradient: sign / size of the array.
    g = np.asarray(grads["density"].planes[0])
    l1_only = np.isclose(np.abs(g), L1 / g.size, rtol=1e-6)
    assert l1_only.any()
