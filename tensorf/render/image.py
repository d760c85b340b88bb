"""Whole images: a view rendered in fixed-size chunks of shuffled rays split over the devices,
re-rendered with larger buffers when a chunk overflowed, so the image is exact."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tensorf.config import CHUNK, ModelConfig
from tensorf.field import decomposition, field
from tensorf.field.alpha_mask import AlphaMask
from tensorf.geometry.cameras import Intrinsics, pixel_rays
from tensorf.geometry.ndc import ndc_rays
from tensorf.parallel import AXIS, REPLICATED, SHARDED, data_mesh, fetch, split_rows
from tensorf.render.march import ray_aabb, render_rays
from tensorf.render.sampling import BUFFERS, RenderSettings, bucket, fit_capacity


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
        model = (params, aabb, mask, cfg)
        out, counts, settings = _render_exactly(model, rays, settings, chunk // size, mesh,
                                                i == 0 and fresh)  # fmt: skip
        outs.append(out)
        total += counts[0] + counts[3], counts[1]
    image = _assembled(outs, order, (height, width), settings.background)
    image["density_evals_per_ray"] = total[0] / n
    image["shaded_samples_per_ray"] = total[1] / n
    return image, settings


def _render_exactly(
    model: tuple, rays, settings: RenderSettings, factor: int, mesh: Mesh, first: bool
) -> tuple[tuple[np.ndarray, ...], np.ndarray, RenderSettings]:
    """A chunk of rays `factor` times smaller than a full one (`model`: params, aabb, mask
    and model config), rendered again with larger buffers until none overflowed. Returns
    its rgb, depth and acc on the host, the counts of BUFFERS summed over the devices, and
    the settings, refitted for a full chunk (`first`: to this one, with 5% headroom)."""
    params, aabb, mask, cfg = model
    while True:
        used = settings if factor == 1 else _scaled(settings, factor)
        *out, counts, peaks = _render_chunk(params, aabb, mask, *rays, cfg, used, mesh)
        # What a full chunk would need, to size the buffers of both chunk sizes.
        needs = {k: int(p) * factor for k, p in zip(BUFFERS, peaks, strict=True)}
        overflow = any(p > getattr(used, k) for k, p in zip(BUFFERS, peaks, strict=True))
        if first:
            # Shuffled chunks vary little in occupancy: size the buffers for the rest
            # of the image from the first chunk, with 5% headroom.
            settings = dataclasses.replace(
                settings, **{k: bucket(int(p * 1.05) + 1) for k, p in needs.items()}
            )
        elif overflow:
            settings = fit_capacity(settings, needs, shrink=False)
        if not overflow:
            return fetch(*out), np.asarray(counts), settings


def _assembled(outs: list, order: np.ndarray, shape: tuple[int, int],
               background: float) -> dict[str, np.ndarray]:  # fmt: skip
    """The image's rgb (H, W, 3), depth (H, W) and acc (H, W) from the chunks' rays, which
    are the pixels `order` (and padding); pixels never marched show the background."""
    n, m = shape[0] * shape[1], len(order)
    image = {
        "rgb": np.full((n, 3), background, np.float32),
        "depth": np.zeros((n, 1), np.float32),
        "acc": np.zeros((n, 1), np.float32),
    }
    for key, values in zip(image, zip(*outs, strict=True), strict=True) if outs else ():
        image[key][order] = np.concatenate(values)[:m].reshape(m, -1)
    image = {key: values.reshape(*shape, -1) for key, values in image.items()}
    image["depth"], image["acc"] = image["depth"][..., 0], image["acc"][..., 0]
    return image


@functools.partial(jax.jit, static_argnames="settings")
def _reaches_occupied(origins: jax.Array, dirs: jax.Array, settings: RenderSettings) -> jax.Array:
    """(rays,) whether each ray passes through settings.occupied between near and far."""
    o, d = (origins, dirs) if settings.ndc is None else ndc_rays(origins, dirs, settings.ndc)
    box = jnp.reshape(jnp.array(settings.occupied), (2, 3))
    t_in, t_out = ray_aabb(o, d, box, settings.near, settings.far)
    return t_in < t_out
