"""The radiance field: parameters and the point-wise density / colour queries."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tensorf.config import ModelConfig
from tensorf.field import decomposition
from tensorf.field.networks import ShadingMLP

# {"density": grid, "appearance": grid, "basis": (appearance features, F), "mlp": flax
# params}, the grids of the decomposition the config names (see tensorf.field.decomposition),
# and with --model.appearance-codes C, "codes": (training views, C), row i the code of
# training view i (its index in the whole training split, whichever process loads it).
Params = dict

GRID_KEYS = ("density", "appearance")

# What metrics.json says shaded its views, for a model with appearance codes (`mean_code`).
APPEARANCE_RULE = "mean training code"


def shading_mlp(cfg: ModelConfig) -> ShadingMLP:
    return ShadingMLP(feature_pe=cfg.feature_pe, view_pe=cfg.view_pe, width=cfg.mlp_width)


def init_params(
    key: jax.Array, cfg: ModelConfig, resolution: tuple[int, int, int], training_views: int = 0
) -> Params:
    """The field at step 0. `training_views`: the rows of the appearance code table, which
    only a model with --model.appearance-codes has (and then needs at least one)."""
    if cfg.appearance_codes and training_views < 1:
        raise ValueError(f"appearance codes need the number of training views, got "
                         f"{training_views}")  # fmt: skip
    k_density, k_app, k_basis, k_mlp = jax.random.split(key, 4)
    if cfg.decomposition == "vm":
        density_components, app_components = cfg.density_components, cfg.appearance_components
        basis_in = sum(app_components)  # the pairs' components, concatenated
    else:
        density_components, app_components = cfg.cp_components
        basis_in = app_components
    init = decomposition.BY_KIND[cfg.decomposition].init
    bound = basis_in**-0.5  # PyTorch's default Linear init, as the official basis matrix.
    mlp_inputs = (jnp.zeros((1, cfg.appearance_dim)), jnp.zeros((1, 3)))
    if cfg.appearance_codes:
        mlp_inputs += (jnp.zeros((1, cfg.appearance_codes)),)
    params = {
        "density": init(k_density, resolution, density_components, cfg.init_scale),
        "appearance": init(k_app, resolution, app_components, cfg.init_scale),
        "basis": jax.random.uniform(
            k_basis, (basis_in, cfg.appearance_dim), minval=-bound, maxval=bound
        ),
        "mlp": shading_mlp(cfg).init(k_mlp, *mlp_inputs)["params"],
    }
    if cfg.appearance_codes:
        # Zeros, so that every image starts as the mean; no key is drawn, so the other
        # parameters start as they do without codes (nerfacto and NeRF-W draw theirs from
        # N(0, 1), which makes the mean code, used outside training, a stranger at first).
        params["codes"] = jnp.zeros((training_views, cfg.appearance_codes))
    return params


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


def radiance(
    params: Params, cfg: ModelConfig, xyz: jax.Array, viewdirs: jax.Array,
    codes: jax.Array | None = None,
) -> jax.Array:  # fmt: skip
    """Normalised points (n, 3) and unit directions (n, 3) -> rgb (n, 3), at least float32.

    With appearance codes: `codes` (n, C) are the points' images' codes (training); None
    shades every point with `mean_code` (everything else)."""
    features = decomposition.appearance_feature(params["appearance"], params["basis"], xyz)
    if cfg.appearance_codes and codes is None:
        codes = jnp.broadcast_to(mean_code(params), (xyz.shape[0], cfg.appearance_codes))
    rgb = shading_mlp(cfg).apply({"params": params["mlp"]}, features, viewdirs, codes)
    return _at_least_f32(rgb)


def mean_code(params: Params) -> jax.Array:
    """The appearance code (C,) of every render that is not of a training batch: the mean
    of the training views' codes (summed in float32, cast back to the codes' dtype)."""
    codes = params["codes"]
    return jnp.mean(_at_least_f32(codes), axis=0).astype(codes.dtype)


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
