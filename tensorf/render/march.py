"""Volume rendering with static shapes: ray sampling, empty-space skipping, compositing.

Per ray we take `n_samples` evenly spaced samples through the aabb (for forward-facing
scenes, evenly spaced in normalised device coordinates, see `tensorf.ndc`; for unbounded
captures, evenly inside the inner box and by disparity beyond it, looked up in contracted
space, see `tensorf.contraction`). Only the samples that lie in the alpha mask are packed
(batch-wide, cumulative-sum compaction) into a fixed-size buffer that gets density
evaluations; compositing then runs on the dense (rays, samples) grid. The shading MLP
runs only on each ray's top-k samples by weight that pass the official 1e-4 weight
threshold, packed the same way. Every shape is static, so a render
or training step is one jitted program; the buffer sizes adapt between calls.

Once an alpha mask is known, rays march only the samples that cover its occupied box
(`RenderSettings.window`), and `render_image` does not march rays that miss the box. It
marches in two passes (`RenderSettings.segment`): the rays that have ended on a surface in
the first (transmittance below the weight threshold) skip the second.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import jmp
import numpy as np
from jax.sharding import Mesh

from tensorf import contraction, decomposition, field
from tensorf.alpha_mask import AlphaMask, is_occupied
from tensorf.cameras import Intrinsics, pixel_rays
from tensorf.config import CHUNK, ModelConfig, Precision
from tensorf.ndc import ndc_rays, world_distance
from tensorf.parallel import AXIS, REPLICATED, SHARDED, data_mesh, fetch, split_rows


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """Static (hashable) sampling settings: jit specialises on them."""

    n_samples: int  # evenly spaced samples per ray through the aabb
    step_size: float  # in world units, or in NDC ray parameter t
    density_capacity: int  # occupied samples per batch that get a density evaluation
    appearance_capacity: int  # samples per batch that get the shading MLP
    appearance_samples: int  # top-k by weight per ray considered for shading
    unselected: Literal["renormalize", "black"]
    near: float
    far: float
    weight_threshold: float = 1e-4  # official rm_weight_mask_thre
    precision: Precision = "f32"  # compute dtype of grid lookups and the MLP
    ndc: tuple[float, float] | None = None  # NDC projection (`ndc.projection`), or world rays
    background: float = 1.0  # colour where rays end on nothing (1 white, 0 black)
    contract: bool = False  # unbounded: the aabb is contracted space (`tensorf.contraction`)
    outer_samples: int = 0  # with `contract`: samples per ray beyond the inner box
    # The box holding the alpha mask's occupied cells (xmin ymin zmin xmax ymax zmax, in
    # lookup coordinates; None: unknown), and how many samples cover any ray's way through
    # it (0: the whole ray). See `training.occupied_window`.
    occupied: tuple[float, ...] | None = None
    window: int = 0
    # Two passes (`render_image`; 0: one): the first marches this many samples of every
    # ray; the rays still visible after it that have samples left in the occupied box
    # march the rest, packed into `rest_rays` rays with `rest_density_capacity` samples.
    segment: int = 0
    rest_rays: int = 0
    rest_density_capacity: int = 0

    @property
    def samples_per_ray(self) -> int:
        """Samples each ray marches (and the size of the dense per-ray arrays)."""
        return self.window or self.n_samples + self.outer_samples


DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}


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
    (a scalar) overrides `settings.background`.
    """
    n_rays, n = origins.shape[0], settings.samples_per_ray
    params = to_compute(params, settings.precision)
    offset = jnp.zeros(n_rays) if jitter is None else jitter
    o, d = origins, dirs
    if settings.contract:
        t_in, t_out = ray_aabb(o, d, contraction.INNER, settings.near, settings.far)
        t_exit = jnp.where(t_in < t_out, t_out, settings.near)
        t, dt = contraction.sample_distances(t_exit, offset, settings.n_samples,
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

    def lookup(rays, t):
        """Where the grid is looked up (world, NDC or contracted coordinates) at distances
        t (rays, samples) along `rays` (indices or a slice) -> (rays, samples, 3)."""
        points = o[rays, None] + d[rays, None] * t[..., None]
        return contraction.contract(points) if settings.contract else points

    grid = n_rays * n  # samples in the (rays, samples) grid; a flat index past it is padding
    dt = jnp.broadcast_to(dt, (n_rays, n)).reshape(-1)

    def optical_depths(rays, ok_rays, start, stop, capacity):
        """The samples start..stop of `rays` (indices, or a slice for all; `ok_rays` masks
        padding) where the alpha mask is occupied, packed into `capacity`: their flat
        indices in the grid, sigma * dt, and the number of samples that needed a slot."""
        points = lookup(rays, t[rays, start:stop])
        valid = in_range[rays, start:stop] & ok_rays & is_occupied(mask, points)
        idx, ok, count = compact(valid, capacity)
        xyz = to_compute(field.normalize(points.reshape(-1, 3)[idx], aabb), settings.precision)
        sigma = jnp.where(ok, field.density(params, cfg, xyz), 0.0)
        width = stop - start
        row = idx // width if isinstance(rays, slice) else rays[idx // width]
        flat = jnp.where(ok, row * n + start + idx % width, grid)
        return flat, sigma * dt[jnp.minimum(flat, grid - 1)] * cfg.distance_scale, count

    split = settings.segment or n
    flat, tau, density_count = optical_depths(slice(None), True, 0, split,
                                              settings.density_capacity)  # fmt: skip
    # The optical depths go to the dense grid at once: XLA then fuses the density lookups
    # into one loop (read twice, it splits them into eight slow gathers).
    dense = jnp.zeros(grid).at[flat].add(tau, mode="drop").reshape(n_rays, n)
    rest_count = rest_density_count = jnp.int32(0)
    if settings.segment:
        # Beyond a transmittance of weight_threshold every weight is below it: such samples
        # are never shaded, and are left out of acc and depth (by less than the threshold).
        visible = dense[:, :split].sum(-1) < -np.log(settings.weight_threshold)
        ahead = visible & in_range[:, split]
        if settings.occupied is not None:
            ahead &= t[:, split] < t_out
        rest, rest_ok, rest_count = compact(ahead, settings.rest_rays)
        more, tau, rest_density_count = optical_depths(rest, rest_ok[:, None], split, n,
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
    distance = world_distance(t, origins, dirs) if settings.ndc else t
    depth = (weights * distance).sum(-1)

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
    points = lookup(ray, t[ray, sample][:, None])[:, 0]
    xyz, viewdirs = to_compute((field.normalize(points, aabb), dirs[ray]), settings.precision)
    rgb = field.radiance(params, cfg, xyz, viewdirs)  # (capacity, 3)
    background = settings.background if background is None else background
    rgb = jnp.zeros((n_rays, 3)).at[ray].add(w[:, None] * rgb) + (1.0 - acc)[:, None] * background
    return {
        "rgb": rgb,
        "depth": depth,
        "acc": acc,
        "density_count": density_count,
        "appearance_count": appearance_count,
        "rest_count": rest_count,
        "rest_density_count": rest_density_count,
    }


# The buffers of a render (RenderSettings fields) and the counts (of render_rays) they hold.
BUFFERS = {
    "density_capacity": "density_count",
    "appearance_capacity": "appearance_count",
    "rest_rays": "rest_count",
    "rest_density_capacity": "rest_density_count",
}


@functools.partial(jax.jit, static_argnames=("cfg", "settings", "mesh"))
def _render_chunk(params, aabb, mask, origins, dirs, cfg, settings, mesh):
    """Rays split over the devices; returns rgb, depth, acc and the counts of BUFFERS
    summed over devices and the largest on one device."""

    def local(params, aabb, mask, origins, dirs):
        out = render_rays(params, cfg, settings, aabb, mask, origins, dirs)
        counts = jnp.stack([out[count] for count in BUFFERS.values()])
        return (out["rgb"], out["depth"], out["acc"],
                jax.lax.psum(counts, AXIS), jax.lax.pmax(counts, AXIS))  # fmt: skip

    return jax.shard_map(
        local, mesh=mesh, in_specs=(REPLICATED,) * 3 + (SHARDED,) * 2,
        out_specs=(SHARDED,) * 3 + (REPLICATED,) * 2,
    )(params, aabb, mask, origins, dirs)  # fmt: skip


def bucket(n: int) -> int:
    """Round a buffer size up to (1, 1.25, 1.5 or 1.75) * 2^i, at least 1024: four sizes per
    octave waste at most 25% while bounding recompilations."""
    size = 1024
    while size * 2 < n:
        size *= 2
    return next(size * q // 4 for q in (4, 5, 6, 7, 8) if size * q // 4 >= n)


def fit_capacity(settings: RenderSettings, peaks: dict[str, int], shrink: bool) -> RenderSettings:
    """Buffers (named as in BUFFERS) with ~25% headroom over the counts a batch needed.
    They grow whenever a count overflowed; with `shrink`, they also shrink once they
    exceed 1.6x the count, a margin a freshly fitted buffer (1.25x, then up to 1.25x by
    `bucket`) stays under."""

    def fit(cap: int, count: int) -> int:
        if count > cap or (shrink and 1.6 * count < cap):
            return bucket(int(count * 1.25) + 1)
        return cap

    return dataclasses.replace(
        settings, **{k: fit(getattr(settings, k), count) for k, count in peaks.items()}
    )


def carry_capacity(
    settings: RenderSettings, before: RenderSettings, peaks: tuple[int, int] | None
) -> RenderSettings:
    """Buffers for a new grid (`settings`, sized for the worst case) from the peaks counted
    just before it: the density count scaled by the change in samples per ray, with the
    usual 25% headroom. Compiling the worst case and then the fitted size would cost two
    compilations (and a very slow step) per grid event; this usually costs one."""
    if peaks is None:
        return settings
    scale = settings.samples_per_ray / before.samples_per_ray
    return dataclasses.replace(
        settings,
        density_capacity=min(settings.density_capacity, bucket(int(peaks[0] * scale * 1.25) + 1)),
        appearance_capacity=min(settings.appearance_capacity, bucket(int(peaks[1] * 1.25) + 1)),
    )


# Renders sum the density grid into a dense volume once (`decomposition.bake`) up to this
# many voxels (256 MB of float32); larger grids, such as LLFF's 640^3, keep their factors.
BAKE_MAX_VOXELS = 2**26

# The rays left over after the full chunks of an image go in chunks this many times
# smaller: a chunk costs the same however many of its rays are padding.
TAIL = 4


def baked(params: field.Params) -> field.Params:
    """The field with its density grid summed into a volume, for renders (see
    BAKE_MAX_VOXELS); bake once before rendering many images of one field."""
    density = params["density"]
    if isinstance(density, decomposition.Baked) or np.prod(density.resolution) > BAKE_MAX_VOXELS:
        return params
    return {**params, "density": decomposition.bake(density)}


def _scaled(settings: RenderSettings, factor: int) -> RenderSettings:
    """Buffers for a chunk `factor` times smaller (shuffled rays: proportional counts)."""
    return dataclasses.replace(
        settings, **{k: bucket(-(-getattr(settings, k) // factor)) for k in BUFFERS}
    )


def render_image(
    params: field.Params,
    cfg: ModelConfig,
    settings: RenderSettings,
    aabb: jax.Array,
    mask: AlphaMask,
    c2w: np.ndarray,
    intrinsics: Intrinsics,
    chunk: int = CHUNK,
    mesh: Mesh | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[dict[str, np.ndarray] | None, RenderSettings]:
    """Render a full view in fixed-size chunks of rays, each split over the devices of
    `mesh` (default: all); a chunk whose buffers overflowed is rendered again with larger
    ones, so the image is exact.

    The rays are shuffled before chunking: every chunk then holds about the image's mean
    number of occupied samples, so the buffers (whose size sets the cost) fit all chunks
    tightly, instead of fitting the chunk through the middle of the object. The rays left
    after the full chunks go in chunks TAIL times smaller, with buffers scaled to match.

    Once the occupied box is known, rays march in two passes: the first covers 3/8 of the
    samples, and only the rays still visible, with samples left in the box, march the
    rest. What that skips weighs less than the weight threshold in all, so pixels change
    by less than 2e-4 (an official-code departure that only makes renders faster).

    Returns rgb (H, W, 3), depth (H, W) and acc (H, W) as numpy arrays with the mean
    density evaluations and shaded samples per ray, and the settings with the buffer
    sizes (per device, for a full chunk) that fitted: pass them on to the next image to
    avoid retries. `cancelled` is asked before each chunk; once it says yes, the image is
    None (the viewer's camera moved on).
    """
    mesh = mesh or data_mesh()
    tail = -(-chunk // (TAIL * mesh.size)) * mesh.size
    chunk = tail * TAIL
    params = baked(params)
    height, width = intrinsics.height, intrinsics.width
    n = height * width
    pixels = np.arange(n)
    c2w = jnp.asarray(c2w, jnp.float32)[None]
    rays = pixel_rays(c2w, pixels % width, pixels // width, intrinsics)
    origins, dirs = (np.asarray(x) for x in rays)
    # Rays that miss the occupied box end on the background: only the others are marched.
    known = settings.occupied is not None
    hit = np.asarray(_reaches_occupied(origins, dirs, settings)) if known else None
    order = np.random.default_rng(0).permutation(pixels if hit is None else pixels[hit])
    m = len(order)
    full = m // chunk * chunk
    starts = [(i, chunk) for i in range(0, full, chunk)]
    starts += [(i, tail) for i in range(full, m, tail)]
    pad = sum(size for _, size in starts) - m
    origins = np.pad(origins[order], ((0, pad), (0, 0)))
    dirs = np.pad(dirs[order], ((0, pad), (0, 0)), constant_values=1.0)

    # Settings that no render has sized yet (training's) are fitted to the first chunk;
    # after that, buffers only grow: the views of a scene need different sizes (the
    # second pass's differ by up to 4x), and each size is a compilation.
    fresh = settings.rest_rays == 0
    if known and not settings.segment:
        # The first pass ends where most rays have left the box; the rays that see
        # further march on, unless they have ended on a surface.
        settings = dataclasses.replace(settings, segment=settings.samples_per_ray * 3 // 8,
                                       rest_rays=chunk // mesh.size,
                                       rest_density_capacity=settings.density_capacity)  # fmt: skip

    outs, total = [], np.zeros(2)
    for i, size in starts:
        if cancelled is not None and cancelled():
            return None, settings
        rays = split_rows(mesh, origins[i : i + size], dirs[i : i + size])
        factor = chunk // size
        while True:
            used = settings if factor == 1 else _scaled(settings, factor)
            *out, counts, peaks = _render_chunk(params, aabb, mask, *rays, cfg, used, mesh)
            # What a full chunk would need, to size the buffers of both chunk sizes.
            needs = {k: int(p) * factor for k, p in zip(BUFFERS, peaks, strict=True)}
            overflow = any(p > getattr(used, k) for k, p in zip(BUFFERS, peaks, strict=True))
            if i == 0 and fresh:
                # Shuffled chunks vary little in occupancy: size the buffers for the rest
                # of the image from the first chunk, with 5% headroom.
                settings = dataclasses.replace(
                    settings, **{k: bucket(int(p * 1.05) + 1) for k, p in needs.items()}
                )
            elif overflow:
                settings = fit_capacity(settings, needs, shrink=False)
            if not overflow:
                break
        outs.append(fetch(*out))
        counts = np.asarray(counts)
        total += counts[0] + counts[3], counts[1]
    image = {
        "rgb": np.full((n, 3), settings.background, np.float32),
        "depth": np.zeros((n, 1), np.float32),
        "acc": np.zeros((n, 1), np.float32),
    }
    for key, values in zip(image, zip(*outs, strict=True), strict=True) if outs else ():
        image[key][order] = np.concatenate(values)[:m].reshape(m, -1)
    image = {key: values.reshape(height, width, -1) for key, values in image.items()}
    image["depth"], image["acc"] = image["depth"][..., 0], image["acc"][..., 0]
    image["density_evals_per_ray"] = total[0] / n
    image["shaded_samples_per_ray"] = total[1] / n
    return image, settings


@functools.partial(jax.jit, static_argnames="settings")
def _reaches_occupied(origins: jax.Array, dirs: jax.Array, settings: RenderSettings) -> jax.Array:
    """(rays,) whether each ray passes through settings.occupied between near and far."""
    o, d = (origins, dirs) if settings.ndc is None else ndc_rays(origins, dirs, settings.ndc)
    box = jnp.reshape(jnp.array(settings.occupied), (2, 3))
    t_in, t_out = ray_aabb(o, d, box, settings.near, settings.far)
    return t_in < t_out
