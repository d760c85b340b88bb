"""Volume rendering with static shapes: ray sampling, empty-space skipping, compositing.

Per ray we take `n_samples` evenly spaced samples through the aabb (for forward-facing
scenes, evenly spaced in normalised device coordinates, see `tensorf.geometry.ndc`; for
unbounded captures, evenly inside the inner box and about evenly in contracted space beyond
it, looked up there, see `tensorf.geometry.contraction`). Only the samples that lie in the
alpha mask are packed (batch-wide, cumulative-sum compaction) into a fixed-size buffer that
gets density evaluations; compositing then runs on the dense (rays, samples) grid. The
shading MLP runs only on each ray's top-k samples by weight that pass the official 1e-4
weight threshold, packed the same way. Every shape is static, so a render or training step
is one jitted program; the buffer sizes adapt between calls.

Once an alpha mask is known, rays march only the samples that cover its occupied box
(`RenderSettings.window`), and `render_image` does not march rays that miss the box. It
marches in two passes (`RenderSettings.segment`): the rays that have ended on a surface in
the first (transmittance below the weight threshold) skip the second.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jmp
import numpy as np

from tensorf.config import ModelConfig, Precision
from tensorf.field import field
from tensorf.field.alpha_mask import AlphaMask, is_occupied
from tensorf.geometry import contraction
from tensorf.geometry.ndc import ndc_rays, world_distance
from tensorf.render.distortion_loss import distortion_loss
from tensorf.render.sampling import DTYPES, RenderSettings


def to_compute(tree, precision: Precision):
    """Floating leaves to the compute dtype with jmp; f32 leaves everything as it is (so
    float64 gradient checks stay float64)."""
    if precision == "f32":
        return tree
    return jmp.Policy(jnp.float32, DTYPES[precision], jnp.float32).cast_to_compute(tree)


def ray_aabb(
    origins: jax.Array, dirs: jax.Array, aabb: jax.Array, near: float, far: float
) -> tuple[jax.Array, jax.Array]:
    """Entry and exit distances (rays,) of rays (rays, 3) through the box, within [near, far].
    A ray that misses the box has t_min >= t_max."""
    safe = jnp.where(jnp.abs(dirs) < 1e-6, 1e-6, dirs)
    t0 = (aabb[0] - origins) / safe
    t1 = (aabb[1] - origins) / safe
    t_min = jnp.clip(jnp.max(jnp.minimum(t0, t1), axis=-1), near, far)
    t_max = jnp.clip(jnp.min(jnp.maximum(t0, t1), axis=-1), near, far)
    return t_min, t_max


def compositing_weights(tau: jax.Array, before: jax.Array | None = None) -> jax.Array:
    """Optical depths tau = sigma * dt (rays, samples) -> weights alpha_i * T_i (rays, samples).

    T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} tau_j), computed as an exclusive
    cumulative sum in f32, which is stabler than a cumulative product of (1 - alpha).
    `before`: that sum where it is already known, for samples tau of any shape.
    """
    tau = tau.astype(jnp.float32)
    if before is None:
        before = jnp.cumsum(tau, axis=-1) - tau
    return jnp.exp(-before.astype(jnp.float32)) * -jnp.expm1(-tau)


def compact(mask: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Flat indices of the True entries of `mask`, in a fixed-size buffer.

    Returns indices (capacity,) (padding points at entry 0), a (capacity,) bool marking real
    entries, and the number of True entries (which exceeds `capacity` on overflow; the
    entries past it are dropped).
    """
    flat = mask.reshape(-1)
    # Each entry's slot is the count of entries before it. One scatter of unique slots:
    # a quarter faster on a CPU than jnp.nonzero(size=...), which counts slots by bincount.
    slot = jnp.cumsum(flat, dtype=jnp.int32) - 1
    count = slot[-1] + 1
    idx = jnp.zeros(capacity, jnp.int32).at[jnp.where(flat, slot, capacity)].set(
        jnp.arange(flat.size, dtype=jnp.int32), mode="drop", unique_indices=True
    )
    return idx, jnp.arange(capacity) < count, count


def render_rays(
    params: field.Params,
    cfg: ModelConfig,
    settings: RenderSettings,
    aabb: jax.Array,
    mask: AlphaMask,
    origins: jax.Array,
    dirs: jax.Array,
    jitter: jax.Array | None = None,
    background: jax.Array | None = None,
    views: jax.Array | None = None,
    distortion: bool = False,
) -> dict[str, jax.Array]:
    """Render world rays (rays, 3), unit directions -> rgb (rays, 3), depth (rays,) and
    acc (rays,). Depth is the expected distance along the ray, in world units (for NDC
    scenes too: each sample's NDC depth is mapped back to the world first).

    Density is evaluated only on samples inside the aabb and the alpha mask, packed into
    a batch-wide buffer of `density_capacity`; the shading MLP only on each ray's top-k
    samples by weight that have weight > `weight_threshold`, packed into a buffer of
    `appearance_capacity`. `density_count` / `appearance_count` report how many samples
    needed a slot: above the capacity, the excess samples were skipped (treated as empty
    / unshaded), so callers enlarge the buffers and, when exactness matters, render again.
    `jitter` (rays,) in [0, 1) offsets each ray's samples during training; `background`
    (a scalar) overrides `settings.background`. `views` (rays,) int32: each ray's training
    view, whose appearance code shades it (training, with --model.appearance-codes); None:
    the mean code (see `field.radiance`). `distortion`: also each ray's distortion loss
    (rays,) (`tensorf.render.distortion_loss`, in `normalised_distances`).
    """
    n_rays, n = origins.shape[0], settings.samples_per_ray
    params = to_compute(params, settings.precision)
    offset = jnp.zeros(n_rays) if jitter is None else jitter
    s = _samples(settings, aabb, origins, dirs, offset)
    grid = n_rays * n  # samples in the (rays, samples) grid; a flat index past it is padding
    depths = functools.partial(_optical_depths, params, cfg, settings, aabb, mask, s)
    split = settings.segment or n
    flat, tau, density_count = depths(slice(None), True, 0, split, settings.density_capacity)
    # The optical depths go to the dense grid at once: XLA then fuses the density lookups
    # into one loop (read twice, it splits them into eight slow gathers).
    dense = jnp.zeros(grid).at[flat].add(tau, mode="drop").reshape(n_rays, n)
    rest_count = rest_density_count = jnp.int32(0)
    if settings.segment:
        # Beyond a transmittance of weight_threshold every weight is below it: such samples
        # are never shaded, and are left out of acc and depth (by less than the threshold).
        visible = dense[:, :split].sum(-1) < -np.log(settings.weight_threshold)
        ahead = visible & s.in_range[:, split]
        if settings.occupied is not None:
            ahead &= s.t[:, split] < s.t_out
        rest, rest_ok, rest_count = compact(ahead, settings.rest_rays)
        more, tau, rest_density_count = depths(rest, rest_ok[:, None], split, n,
                                               settings.rest_density_capacity)  # fmt: skip
        dense = dense.reshape(-1).at[more].add(tau, mode="drop").reshape(n_rays, n)
        flat = jnp.concatenate([flat, more])
    # Weights only where there is density (elsewhere they are 0), with the transmittance
    # from the exclusive cumulative sum over the dense grid.
    at = jnp.minimum(flat, grid - 1)
    tau = dense.reshape(-1)[at]
    before = (jnp.cumsum(dense, axis=-1) - dense).reshape(-1)[at]
    weights = compositing_weights(tau, before)
    weights = jnp.zeros(grid).at[flat].add(weights, mode="drop").reshape(n_rays, n)
    acc = weights.sum(-1)
    distance = world_distance(s.t, origins, dirs) if settings.ndc else s.t
    depth = (weights * distance).sum(-1)
    rgb, appearance_count = _shade(params, cfg, settings, aabb, s, dirs, weights, acc,
                                   background, views)  # fmt: skip
    out = {
        "rgb": rgb,
        "depth": depth,
        "acc": acc,
        "density_count": density_count,
        "appearance_count": appearance_count,
        "rest_count": rest_count,
        "rest_density_count": rest_density_count,
    }
    if distortion:
        out["distortion"] = distortion_loss(weights, *normalised_distances(settings, s))
    return out


class _Samples(NamedTuple):
    """Where a batch of rays is sampled. The grid is looked up along `o` + t `d` (world or
    NDC rays), in contracted coordinates when `contract`."""

    o: jax.Array  # (rays, 3)
    d: jax.Array  # (rays, 3)
    t: jax.Array  # (rays, samples) distances of the samples along the rays
    dt: jax.Array  # (rays * samples,) their lengths in world units (NDC: of the NDC ray)
    in_range: jax.Array  # (rays, samples) bool: within the box and the ray's samples
    t_out: jax.Array | None  # (rays,) where each ray leaves the occupied box (None: unknown)
    contract: bool

    def lookup(self, rays, t: jax.Array) -> jax.Array:
        """Where the grid is looked up (world, NDC or contracted coordinates) at distances
        t (rays, samples) along `rays` (indices or a slice) -> (rays, samples, 3)."""
        points = self.o[rays, None] + self.d[rays, None] * t[..., None]
        return contraction.contract(points) if self.contract else points


def _samples(settings: RenderSettings, aabb: jax.Array, origins: jax.Array, dirs: jax.Array,
             offset: jax.Array) -> _Samples:  # fmt: skip
    """The samples of world rays (rays, 3), each offset by `offset` (rays,) of a step."""
    n_rays, n = origins.shape[0], settings.samples_per_ray
    o, d, t_out = origins, dirs, None
    if settings.contract:
        t_in, t_exit = ray_aabb(o, d, contraction.INNER, settings.near, settings.far)
        t_exit = jnp.where(t_in < t_exit, t_exit, settings.near)
        shell = contraction.shell_start(o, d, t_exit)
        t, dt = contraction.sample_distances(t_exit, shell, offset, settings.n_samples,
                                             settings.outer_samples, settings.step_size,
                                             settings.near, settings.far)  # fmt: skip
        in_range = dt > 0
    else:
        if settings.ndc is None:
            length = 1.0
        else:
            o, d = ndc_rays(origins, dirs, settings.ndc)
            length = jnp.linalg.norm(d, axis=-1, keepdims=True)  # NDC length per unit of t
        t_min, t_max = ray_aabb(o, d, aabb, settings.near, settings.far)
        k = jnp.arange(n)[None]  # (1 or rays, samples) sample numbers along each ray
        if settings.occupied is not None:
            t_in, t_out = ray_aabb(o, d, jnp.reshape(jnp.array(settings.occupied), (2, 3)),
                                   settings.near, settings.far)  # fmt: skip
        if settings.window:
            # March only where the occupied box is: every sample outside it is empty,
            # so skipping them changes nothing but the cost.
            first = jnp.floor((t_in - t_min) / settings.step_size) - 1
            k = jnp.clip(first, 0, settings.n_samples).astype(jnp.int32)[:, None] + jnp.arange(n)
        t = t_min[:, None] + (k.astype(jnp.float32) + offset[:, None]) * settings.step_size
        dt = settings.step_size * length
        in_range = (t < t_max[:, None]) & (k < settings.n_samples)
    dt = jnp.broadcast_to(dt, (n_rays, n)).reshape(-1)
    return _Samples(o, d, t, dt, in_range, t_out, settings.contract)


def normalised_distances(settings: RenderSettings, s: _Samples) -> tuple[jax.Array, jax.Array]:
    """Where the samples are along their rays, and the lengths they stand for (rays,
    samples), in a distance from 0 at the ray's start to 1 at its end, for the distortion
    loss (mip-NeRF 360 measures it in such a normalised distance, its s-space).

    World rays: (t - near) / (far - near). NDC rays: t itself, 0 on the near plane and 1 at
    infinity. Contracted rays: the contracted distance, over its whole: the way to the edge
    of the inner box as it is (the contraction is the identity there), then beyond it the
    fraction of the way in 1 / r from the edge to `far` (`contraction.sample_distances`:
    the outer samples are spaced evenly in it, and it is about the contracted distance
    across the shell, whose depth is 1), the whole divided by its length."""
    near, far = settings.near, settings.far
    if not s.contract:
        return (s.t - near) / (far - near), jnp.full_like(s.t, settings.step_size / (far - near))
    n_inner = settings.n_samples
    t_in, t_exit = ray_aabb(s.o, s.d, contraction.INNER, near, far)
    t_exit = jnp.where(t_in < t_exit, t_exit, near)[:, None]  # as the samples took it
    inside = jnp.minimum(s.t[:, :n_inner], t_exit) - near
    r0, slope = (x[:, None] for x in contraction.shell_start(s.o, s.d, t_exit[:, 0]))
    r, r_far = (r0 + (t - t_exit) * slope for t in (s.t[:, n_inner:], far))
    beyond = (1.0 / r0 - 1.0 / r) / (1.0 / r0 - 1.0 / r_far)
    length = t_exit - near + 1.0
    mids = jnp.concatenate([inside, t_exit - near + beyond], axis=-1) / length
    inner_widths = s.dt.reshape(s.t.shape)[:, :n_inner]  # the step, or 0 past the box
    outer_widths = jnp.full_like(beyond, 1.0 / settings.outer_samples)
    return mids, jnp.concatenate([inner_widths, outer_widths], axis=-1) / length


def _optical_depths(
    params: field.Params, cfg: ModelConfig, settings: RenderSettings, aabb: jax.Array,
    mask: AlphaMask, s: _Samples, rays, ok_rays, start: int, stop: int, capacity: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """The samples start..stop of `rays` (indices, or a slice for all; `ok_rays` masks
    padding) where the alpha mask is occupied, packed into `capacity`: their flat indices
    in the (rays, samples) grid, sigma * dt, and the number of samples that needed a slot."""
    n = settings.samples_per_ray
    grid = s.t.shape[0] * n
    points = s.lookup(rays, s.t[rays, start:stop])
    valid = s.in_range[rays, start:stop] & ok_rays & is_occupied(mask, points)
    idx, ok, count = compact(valid, capacity)
    xyz = to_compute(field.normalize(points.reshape(-1, 3)[idx], aabb), settings.precision)
    sigma = jnp.where(ok, field.density(params, cfg, xyz), 0.0)
    width = stop - start
    row = idx // width if isinstance(rays, slice) else rays[idx // width]
    flat = jnp.where(ok, row * n + start + idx % width, grid)
    return flat, sigma * s.dt[jnp.minimum(flat, grid - 1)] * cfg.distance_scale, count


def _shade(params: field.Params, cfg: ModelConfig, settings: RenderSettings, aabb: jax.Array,
           s: _Samples, dirs: jax.Array, weights: jax.Array, acc: jax.Array,
           background: jax.Array | None,
           views: jax.Array | None) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """Colours (rays, 3) from each ray's top-k samples by weight (rays, samples) above the
    weight threshold, packed into the appearance buffer, composited over the background;
    and the number of samples that needed a slot there. `views` (rays,): see render_rays."""
    n_rays, n = weights.shape
    k = min(settings.appearance_samples, n)
    top_w, top_idx = jax.lax.top_k(weights, k)  # (rays, k)
    app, app_ok, appearance_count = compact(
        top_w > settings.weight_threshold, settings.appearance_capacity
    )
    ray = app // k
    sample = top_idx.reshape(-1)[app]
    w = jnp.where(app_ok, top_w.reshape(-1)[app], 0.0)
    if settings.unselected == "renormalize":
        shaded = jnp.zeros(n_rays).at[ray].add(w)
        w = w * (acc / jnp.maximum(shaded, 1e-10))[ray]
    # Shading sees the world direction, for NDC rays too (the official code uses the
    # normalised NDC direction, which the projection bends away from the physical one).
    points = s.lookup(ray, s.t[ray, sample][:, None])[:, 0]
    xyz, viewdirs = to_compute((field.normalize(points, aabb), dirs[ray]), settings.precision)
    codes = None if views is None else params["codes"][views[ray]]  # (capacity, C)
    rgb = field.radiance(params, cfg, xyz, viewdirs, codes)  # (capacity, 3)
    background = settings.background if background is None else background
    rgb = jnp.zeros((n_rays, 3)).at[ray].add(w[:, None] * rgb) + (1.0 - acc)[:, None] * background
    return rgb, appearance_count
