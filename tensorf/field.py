"""The radiance field: parameters and the point-wise density / colour queries."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tensorf import tensor_vm
from tensorf.config import ModelConfig
from tensorf.networks import ShadingMLP

# {"density": VMGrid, "appearance": VMGrid, "basis": (3 * C_app, F), "mlp": flax params}
Params = dict

GRID_KEYS = ("density", "appearance")


def shading_mlp(cfg: ModelConfig) -> ShadingMLP:
    return ShadingMLP(feature_pe=cfg.feature_pe, view_pe=cfg.view_pe, width=cfg.mlp_width)


def init_params(key: jax.Array, cfg: ModelConfig, resolution: tuple[int, int, int]) -> Params:
    k_density, k_app, k_basis, k_mlp = jax.random.split(key, 4)
    basis_in = sum(cfg.appearance_components)
    bound = basis_in**-0.5  # PyTorch's default Linear init, as the official basis matrix.
    return {
        "density": tensor_vm.init_vm(k_density, resolution, cfg.density_components, cfg.init_scale),
        "appearance": tensor_vm.init_vm(
            k_app, resolution, cfg.appearance_components, cfg.init_scale
        ),
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
    feature = _at_least_f32(tensor_vm.density_feature(params["density"], xyz))
    if cfg.density_activation == "relu":
        return jax.nn.relu(feature)
    return jax.nn.softplus(feature + cfg.density_shift)


def radiance(params: Params, cfg: ModelConfig, xyz: jax.Array, viewdirs: jax.Array) -> jax.Array:
    """Normalised points (n, 3) and unit directions (n, 3) -> rgb (n, 3), at least float32."""
    features = tensor_vm.appearance_feature(params["appearance"], params["basis"], xyz)
    rgb = shading_mlp(cfg).apply({"params": params["mlp"]}, features, viewdirs)
    return _at_least_f32(rgb)


def _at_least_f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def density_l1(params: Params) -> jax.Array:
    """Mean absolute density grid value per plane and line, summed (official density_L1)."""
    grid = params["density"]
    return sum(jnp.abs(p).mean() for p in grid.planes) + sum(jnp.abs(x).mean() for x in grid.lines)


# The official TV_loss_density / TV_loss_app weigh each plane's TV by this.
TV_SCALE = 1e-2


def plane_tv(params: Params, key: str) -> jax.Array:
    """Total variation of the planes of the "density" or "appearance" grid, as weighted by
    the official code before its TV_weight."""
    return TV_SCALE * tensor_vm.total_variation(params[key])
