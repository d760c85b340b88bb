"""The schedule's grid events: upsampling (log-linear voxel counts), alpha-mask updates with
box shrinking and training-ray filtering, and resampling the grids and Adam's moments
with them."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tensorf import parallel
from tensorf.config import OptimiserConfig, RenderConfig, ScheduleConfig, TrainConfig
from tensorf.field import alpha_mask, decomposition, field, tensor_vm
from tensorf.field.alpha_mask import AlphaMask, Measured
from tensorf.render.march import ray_aabb
from tensorf.render.sampling import RenderSettings, voxel_step
from tensorf.train.ray_pool import DevicePool, RayPool
from tensorf.train.train_state import ADAM, TrainState, settings_for


def _map_grids(state: TrainState, fn, moments: str) -> TrainState:
    """Apply fn (grid -> grid) to both grids; Adam's moments are mapped by the same
    function ('map'), or Adam restarts from scratch ('reset')."""
    params = {k: fn(v) if k in field.GRID_KEYS else v for k, v in state.params.items()}
    if moments == "reset":
        opt_state = ADAM.init(params)
    else:
        opt = state.opt_state
        opt_state = opt._replace(
            mu={k: fn(v) if k in field.GRID_KEYS else v for k, v in opt.mu.items()},
            nu={k: fn(v) if k in field.GRID_KEYS else v for k, v in opt.nu.items()},
        )
    return dataclasses.replace(state, params=params, opt_state=opt_state)


def voxel_schedule(schedule: ScheduleConfig) -> list[int]:
    """Voxel counts after each upsample: log-linear from grid_init^3 to grid_final^3."""
    counts = np.exp(
        np.linspace(
            np.log(schedule.grid_init**3), np.log(schedule.grid_final**3),
            len(schedule.upsample_steps) + 1,
        )
    )
    return [int(round(c)) for c in counts[1:]]


def upsample(state: TrainState, optimiser: OptimiserConfig, n_voxels: int) -> TrainState:
    resolution = tensor_vm.resolution_for_voxels(n_voxels, np.asarray(state.aabb))
    moments = "reset" if optimiser.adam_on_upsample == "reset" else "map"
    state = _map_grids(state, lambda g: decomposition.resize(g, resolution), moments)
    return dataclasses.replace(state, lr_reset_step=state.step.copy())


def scheduled_voxels(schedule: ScheduleConfig, step: int) -> int:
    """The voxel count the upsampling schedule has reached by `step`."""
    counts = [schedule.grid_init**3] + [
        n for s, n in zip(schedule.upsample_steps, voxel_schedule(schedule), strict=True)
        if s <= step
    ]
    return counts[-1]


def regrid(state: TrainState, n_voxels: int) -> TrainState:
    """Resample the grids (and Adam's moments) to n_voxels in the current box; unlike an
    upsample, the learning rates carry on."""
    resolution = tensor_vm.resolution_for_voxels(n_voxels, np.asarray(state.aabb))
    if resolution == state.resolution:
        return state
    return _map_grids(state, lambda g: decomposition.resize(g, resolution), "map")


def alpha_fn(state: TrainState, cfg: TrainConfig, step_size: float):
    """World points (n, 3) -> alpha for a sample of length step_size (0 outside the mask)."""

    @jax.jit
    def fn(xyz):
        sigma = field.density(state.params, cfg.model, field.normalize(xyz, state.aabb))
        sigma = jnp.where(alpha_mask.is_occupied(state.mask, xyz), sigma, 0.0)
        return -jnp.expm1(-sigma * step_size * cfg.model.distance_scale)

    return fn


def measure_mask(state: TrainState, cfg: TrainConfig, step: int) -> Measured:
    """The alpha mask of `state`, for the update at `step`."""
    resolution = state.resolution
    if np.prod(resolution) >= cfg.schedule.mask_max_resolution**3 and state.mask.cells.size > 1:
        resolution = tuple(s + 1 for s in state.mask.cells.shape)
    size = voxel_step(cfg.render, np.asarray(state.aabb), state.resolution)
    mask, bounds = alpha_mask.compute_alpha_mask(
        alpha_fn(state, cfg, size), np.asarray(state.aabb), resolution, cfg.schedule.mask_threshold
    )
    return Measured(step, mask, bounds)


def update_mask(state: TrainState, cfg: TrainConfig, shrink: bool,
                measured: Measured | None = None) -> tuple[TrainState, bool]:  # fmt: skip
    """Set the alpha mask `measured` ahead (None: measure it now); on `shrink`, crop the
    grids to its occupied box.

    Returns the new state and whether anything was occupied. With an empty mask (density
    collapsed) the state keeps its previous mask, so training can go on.
    """
    if measured is None:
        measured = measure_mask(state, cfg, int(state.step))
    mask, bounds = measured.mask, measured.bounds
    if not np.asarray(mask.cells).any():
        return state, False
    state = dataclasses.replace(state, mask=mask)
    # The contracted box is all of space: shrinking it would cut the background away.
    if shrink and not cfg.render.contract:
        state = shrink_to(state, bounds)
    return state, True


def shrink_to(state: TrainState, bounds: np.ndarray) -> TrainState:
    """Crop the grids to the grid points covering `bounds`; the new aabb lies on grid points,
    so the cropped grid represents exactly the same field (official `shrink`)."""
    aabb = np.asarray(state.aabb, np.float64)
    res = np.array(state.resolution)
    units = (aabb[1] - aabb[0]) / (res - 1)
    lo = np.clip(np.round((bounds[0] - aabb[0]) / units).astype(int), 0, res - 2)
    hi = np.clip(np.round((bounds[1] - aabb[0]) / units).astype(int) + 1, lo + 2, res)
    new_aabb = np.stack([aabb[0] + lo * units, aabb[0] + (hi - 1) * units]).astype(np.float32)
    state = _map_grids(state, lambda g: decomposition.crop(g, tuple(lo), tuple(hi)), "map")
    return dataclasses.replace(state, aabb=jnp.asarray(new_aabb))


def at_step(
    state: TrainState, pool: RayPool, cfg: TrainConfig, step: int, voxels: dict[int, int],
    filtering: bool, measured: Measured | None = None,
) -> tuple[TrainState, RayPool, bool]:  # fmt: skip
    """The schedule's alpha-mask updates (shrinking the box, filtering the training rays
    when `filtering`) and upsamples at `step` (`voxels`: each upsample step's voxel count);
    an update sets the mask `measured` for it ahead, or else measures it now.
    Returns the new state and pool, and False when an alpha mask would have been empty
    (and was kept)."""
    ok = True
    if step in cfg.schedule.mask_steps:
        first = step == cfg.schedule.mask_steps[0]
        follow = cfg.schedule.shrink == "every" and not first
        ahead = measured if measured is not None and measured.step == step else None
        state, ok = update_mask(state, cfg, first or follow, ahead)
        if first:
            state = dataclasses.replace(state, l1_weight=jnp.float32(cfg.optimiser.l1_rest))
        elif filtering:
            pool = filter_rays(state.mask, pool, cfg.render)
        if ok and follow and step not in voxels:
            # Spend the voxels the schedule has reached on the smaller box.
            state = regrid(state, scheduled_voxels(cfg.schedule, step))
    if step in voxels:
        state = upsample(state, cfg.optimiser, voxels[step])
    return state, pool, ok


def on_devices(
    state: TrainState, pool: RayPool, cfg: TrainConfig, step: int, voxels: dict[int, int],
    filtering: bool, projection: tuple[float, float] | None, mesh: Mesh,
    measured: Measured | None = None,
) -> tuple[TrainState, RayPool, DevicePool, RenderSettings, bool]:  # fmt: skip
    """`at_step` for the state replicated over `mesh`: the events run in each process, on
    its own copy. Returns the new state (replicated), host pool, device pool and render
    settings (buffers sized for the worst case), and whether the alpha mask was kept."""
    state, pool, ok = at_step(parallel.local_copy(state), pool, cfg, step, voxels, filtering,
                              measured)  # fmt: skip
    state, device_pool = parallel.replicate(state, mesh), pool.on(mesh, cfg.run.seed)
    return state, pool, device_pool, settings_for(cfg, state, projection), ok


def filter_rays(mask: AlphaMask, pool: RayPool, render: RenderConfig,
                chunk: int = 65536) -> RayPool:  # fmt: skip
    """Keep the training rays that pass through an occupied mask cell.

    The official code marches every ray through the full-resolution mask; here the mask is
    first max-pooled to cells about 4x larger and marched at half that cell size, which keeps
    a superset of the same rays at a small fraction of the cost (this runs on a CPU too).
    """
    coarse = _coarsen(mask)
    cell = np.asarray(coarse.aabb[1] - coarse.aabb[0]) / np.array(coarse.cells.shape)
    step = float(cell.min() / 2)
    diag = float(np.linalg.norm(np.asarray(coarse.aabb[1] - coarse.aabb[0])))
    n = int(diag / step) + 2

    @jax.jit
    def hits(ids):
        o, d = pool.cameras.rays(ids)
        t_min, t_max = ray_aabb(o, d, coarse.aabb, render.near, render.far)
        t = t_min[:, None] + step * jnp.arange(n)
        pts = o[:, None] + d[:, None] * t[..., None]
        return ((t <= t_max[:, None]) & alpha_mask.is_occupied(coarse, pts)).any(-1)

    index = pool.index
    pad = (-len(index)) % chunk
    padded = np.concatenate([index, np.zeros(pad, index.dtype)]).reshape(-1, chunk)
    keep = np.concatenate([np.asarray(hits(jnp.asarray(c))) for c in padded])[: len(index)]
    return dataclasses.replace(pool, index=index[keep])


def _coarsen(mask: AlphaMask, factor: int = 4) -> AlphaMask:
    cells = np.asarray(mask.cells)
    factor = min(factor, *cells.shape)
    pad = [(0, (-s) % factor) for s in cells.shape]
    cells = np.pad(cells, pad)
    shape = [s // factor for s in cells.shape]
    coarse = cells.reshape(shape[0], factor, shape[1], factor, shape[2], factor).any((1, 3, 5))
    aabb = np.asarray(mask.aabb)
    # Padding grew the covered box; extend the aabb by the same number of fine cells.
    fine = (aabb[1] - aabb[0]) / np.array(mask.cells.shape)
    hi = aabb[0] + fine * np.array(cells.shape)
    return AlphaMask(jnp.asarray(coarse), jnp.asarray(np.stack([aabb[0], hi]), jnp.float32))
