"""The radiance field: parameters and the point-wise density / colour queries."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tensorf.config import ModelConfig
from tensorf.field import decomposition
from tensorf.field.networks import ShadingMLP

# {"density": grid, "appearance": grid, "basis": (appearance features, F), "mlp": flax
# params}, the grids of the decomposition the config names (see tensorf.field.decomposition).
Params = dict

GRID_KEYS = ("density", "appearance")


def shading_mlp(cfg: ModelConfig) -> ShadingMLP:
    return ShadingMLP(feature_pe=cfg.feature_pe, view_pe=cfg.view_pe, width=cfg.mlp_width)


def init_params(key: jax.Array, cfg: ModelConfig, resolution: tuple[int, int, int]) -> Params:
    k_density, k_app, k_basis, k_mlp = jax.random.split(key, 4)
    if cfg.decomposition == "vm":
        density_components, app_components = cfg.density_components, cfg.appearance_components
        basis_in = sum(app_components)  # the pairs' components, concatenated
    else:
        density_components, app_components = cfg.cp_components
        basis_in = app_components
    init = decomposition.BY_KIND[cfg.decomposition].init
    bound = basis_in**-0.5  # PyTorch's default Linear init, as the official basis matrix.
    return {
        "density": init(k_density, resolution, density_components, cfg.init_scale),
        "appearance": init(k_app, resolution, app_components, cfg.init_scale),
        "basis": jax.random.uniform(
            k_basis, (basis_in, cfg.appearance_dim), minval=-bound, maxval=bound
        ),
        "mlp": shading_mlp(cfg).init(k_mlp, jnp.zeros((1, cfg.appearance_dim)), jnp.zeros((1, 3)))[
            "params"
        ],
    }


def normalize(xyz: jax.Array, aabb: jax.Array) -> jax.Array:
    """World points (..., 3) -> [-1, 1] per axis of the aabb."""
    return (xyz - aabb[0]) / (aabb[1] - aabb[0]) * 2.0 - 1.0


def density(params: Params, cfg: ModelConfig, xyz: jax.Array) -> jax.Array:
    """Normalised points (n, 3) -> sigma (n,), at least float32 (softplus is not safe in
    bf16 / f16)."""
    feature = _at_least_f32(decomposition.density_feature(params["density"], xyz))
    if cfg.density_activation == "relu":
        return jax.nn.relu(feature)
    return jax.nn.softplus(feature + cfg.density_shift)


def radiance(params: Params, cfg: ModelConfig, xyz: jax.Array, viewdirs: jax.Array) -> jax.Array:
    """Normalised points (n, 3) and unit directions (n, 3) -> rgb (n, 3), at least float32."""
    features = decomposition.appearance_feature(params["appearance"], params["basis"], xyz)
    rgb = shading_mlp(cfg).apply({"params": params["mlp"]}, features, viewdirs)
    return _at_least_f32(rgb)


def _at_least_f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def density_l1(params: Params) -> jax.Array:
    """Mean absolute density grid value per factor, summed (official density_L1)."""
    return decomposition.l1(params["density"])


def grid_tv(params: Params, key: str) -> jax.Array:
    """Total variation of the "density" or "appearance" grid, as weighted by the official
    code before its TV_weight."""
    return decomposition.tv(params[key])


def orthogonality(params: Params) -> jax.Array:
    """Official vector_comp_diffs over the density and appearance grids."""
    return sum(decomposition.orthogonality(params[key]) for key in GRID_KEYS)
