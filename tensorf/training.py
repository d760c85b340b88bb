"""Training state, the jitted optimisation step, and the grid events of the schedule
(upsampling, alpha-mask updates with aabb shrinking, training-ray filtering)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jmp
import numpy as np
import optax
from jax.sharding import Mesh

from tensorf import alpha_mask, decomposition, field, ndc, parallel, tensor_vm
from tensorf.alpha_mask import AlphaMask
from tensorf.cameras import Intrinsics, camera_directions, camera_rays, pixel_rays
from tensorf.config import (
    ModelConfig,
    OptimiserConfig,
    Precision,
    RenderConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from tensorf.data.views import Views
from tensorf.parallel import AXIS, REPLICATED, SHARDED
from tensorf.render import RenderSettings, bucket, ray_aabb, render_rays

ADAM = optax.scale_by_adam(b1=0.9, b2=0.99)
# No parameter of a sane field comes near this (grid values stay within tens, weights
# within ones); one beyond it means the optimisation diverged.
PARAMETER_LIMIT = 1e6


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training; a checkpoint is exactly this."""

    params: field.Params
    opt_state: optax.ScaleByAdamState
    aabb: jax.Array  # (2, 3) current scene box (shrinks at the first mask update)
    mask: AlphaMask
    step: jax.Array  # () int32, steps taken
    lr_reset_step: jax.Array  # () int32, step of the last upsample (learning rates restart)
    l1_weight: jax.Array  # () float32
    rng: jax.Array  # PRNG key
    skipped_steps: jax.Array  # () int32, steps skipped for a non-finite loss or gradient
    dropped_samples: jax.Array  # () int32, samples skipped because a buffer was full
    loss_scale: jmp.LossScale  # dynamic for f16, a no-op otherwise

    @property
    def resolution(self) -> tuple[int, int, int]:
        return self.params["density"].resolution


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cameras:
    """The training cameras of this process; rays are generated from pixel ids.

    Ideal pinholes that all views share compute their directions; otherwise (lens
    distortion, per-view intrinsics) each distinct camera's per-pixel directions are
    tabulated once (`camera_directions`) and looked up.
    """

    c2w: jax.Array  # (views, 4, 4)
    directions: jax.Array | None  # (cameras, H * W, 3) camera-frame directions, or None
    camera_of_view: jax.Array | None  # (views,) int32 row of `directions`, or None
    intrinsics: Intrinsics = dataclasses.field(metadata={"static": True})  # the image size

    @classmethod
    def of(cls, views: Views) -> Cameras:
        c2w = jnp.asarray(views.c2w)
        cameras = [views.camera(i) for i in range(views.n_views)]
        if views.per_view is None and views.intrinsics.distortion is None:
            return cls(c2w, None, None, views.intrinsics)
        distinct = list(dict.fromkeys(cameras))
        table = np.stack([camera_directions(c).reshape(-1, 3) for c in distinct])
        index = np.array([distinct.index(c) for c in cameras], np.int32)
        return cls(c2w, jnp.asarray(table), jnp.asarray(index), views.intrinsics)

    def rays(self, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pixel ids (n,) -> origins, directions (n, 3)."""
        height, width = self.intrinsics.height, self.intrinsics.width
        view, pix = jnp.divmod(ids, height * width)
        if self.directions is not None:
            return camera_rays(self.c2w[view], self.directions[self.camera_of_view[view], pix])
        row, col = jnp.divmod(pix, width)
        return pixel_rays(self.c2w[view], col, row, self.intrinsics)


@dataclasses.dataclass(frozen=True)
class RayPool:
    """This process's training pixels on the host, where ray filtering works on them. The
    training loop puts them on the devices (`on`), which draw every batch themselves;
    `sample` / `next_batch` draw one on the host for a single `train_step` (tests,
    benchmarks). The devices generate the rays from pixel ids (with several processes,
    each draws from its own share of the views)."""

    rgb: np.ndarray  # (views * H * W, 3) float32 targets
    index: np.ndarray  # (rays,) int32 pixel ids still used for training
    cameras: Cameras
    # The cameras replicated over each mesh they were used with: put there once.
    placed: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def sample(self, seed: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n pixel ids and their colours; the same for the same seed, step and process."""
        rng = np.random.default_rng((seed, step, jax.process_index()))
        ids = self.index[rng.integers(0, len(self.index), n)]
        return ids, self.rgb[ids]

    def on(self, mesh: Mesh, seed: int) -> DevicePool:
        """The pool on every device of the mesh (see `DevicePool`). The colours and
        cameras go once per mesh; the pixel ids, padded to a few sizes (`bucket`), each
        time (after ray filtering)."""
        if ("rgb", mesh) not in self.placed:
            self.placed["rgb", mesh] = parallel.replicate_per_process(self.rgb, mesh)
        index = np.zeros(bucket(len(self.index)), np.int32)
        index[: len(self.index)] = self.index
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)  # not the state's stream
        placed = parallel.replicate_per_process(
            (index, np.array([len(self.index)], np.int32)), mesh
        )
        return DevicePool(self.placed["rgb", mesh], *placed, parallel.replicate(key, mesh),
                          self.cameras_on(mesh))  # fmt: skip

    def cameras_on(self, mesh: Mesh) -> Cameras:
        """The cameras on every device of the mesh. With several processes each puts its
        own views' cameras on its own devices, which only its own pixel ids index: the
        step reads them inside shard_map, per device, and never moves them."""
        if mesh not in self.placed:
            self.placed[mesh] = parallel.replicate_per_process(self.cameras, mesh)
        return self.placed[mesh]


Batch = tuple[Cameras, jax.Array, jax.Array]  # cameras, pixel ids (rays,), colours (rays, 3)


def next_batch(pool: RayPool, run: RunConfig, optimiser: OptimiserConfig, step: int,
               mesh: Mesh) -> Batch:  # fmt: skip
    """The batch of a step: the (replicated) cameras, and pixel ids and target colours split
    over the mesh, every process contributing its share of the rays. Host to device only:
    nothing here waits for the devices."""
    ids, rgb = pool.sample(run.seed, step, optimiser.batch_size // jax.process_count())
    return (pool.cameras_on(mesh), *parallel.shard_rows(mesh, ids, rgb))


def init_state(cfg: TrainConfig) -> TrainState:
    key, init_key = jax.random.split(jax.random.PRNGKey(cfg.run.seed))
    aabb = np.array(cfg.schedule.aabb, np.float32).reshape(2, 3)
    resolution = tensor_vm.resolution_for_voxels(cfg.schedule.grid_init**3, aabb)
    params = field.init_params(init_key, cfg.model, resolution)
    return TrainState(
        params=params,
        opt_state=ADAM.init(params),
        aabb=jnp.asarray(aabb),
        mask=alpha_mask.everything(aabb),
        step=jnp.int32(0),
        lr_reset_step=jnp.int32(0),
        l1_weight=jnp.float32(cfg.optimiser.l1_initial),
        rng=key,
        skipped_steps=jnp.int32(0),
        dropped_samples=jnp.int32(0),
        loss_scale=initial_loss_scale(cfg.run),
    )


def precision(run: RunConfig) -> Precision:
    if run.precision != "auto":
        return run.precision
    return "bf16" if jax.default_backend() == "gpu" else "f32"


def initial_loss_scale(run: RunConfig) -> jmp.LossScale:
    """f16 gradients underflow without loss scaling; bf16 and f32 have f32's range."""
    if precision(run) == "f16":
        return jmp.DynamicLossScale(jnp.float32(2**15))
    return jmp.NoOpLossScale()


def ndc_for(render: RenderConfig, intrinsics: Intrinsics) -> tuple[float, float] | None:
    """The NDC projection of a scene's (training) cameras when the config samples in NDC."""
    return ndc.projection(intrinsics) if render.ndc else None


def voxel_step(render: RenderConfig, aabb: np.ndarray, resolution) -> float:
    """step_ratio times the mean voxel size (official stepSize)."""
    size = np.asarray(aabb, np.float64)[1] - np.asarray(aabb, np.float64)[0]
    return float(np.mean(size / (np.array(resolution) - 1)) * render.step_ratio)


def render_settings(
    cfg: TrainConfig, aabb: np.ndarray, resolution, ndc: tuple[float, float] | None = None,
    mask: AlphaMask | None = None,
) -> RenderSettings:
    """Sample spacing and count for a grid (official update_stepSize); `ndc`: the scene's
    NDC projection, required when cfg.render.ndc is set; `mask`: the alpha mask, whose
    occupied box limits where rays are marched."""
    if cfg.render.ndc != (ndc is not None):
        raise ValueError("an NDC projection must be given exactly when cfg.render.ndc is set")
    aabb = np.asarray(aabb, np.float64)
    size = aabb[1] - aabb[0]
    outer = cfg.render.outer_samples if cfg.render.contract else 0
    if ndc is None:
        # Contracted, these are the inner samples: the (contracted) box's diagonal covers
        # the way through the inner box from a camera up to 2 sqrt(3) outside it.
        near, far = cfg.render.near, cfg.render.far
        step = voxel_step(cfg.render, aabb, resolution)
        n_samples = min(int(np.linalg.norm(size) / step) + 1, cfg.render.max_samples)
    else:
        # Evenly over t in [0, 1] (the near plane to infinity), as many samples as the
        # official cal_n_samples gives.
        near, far = 0.0, 1.0
        n_samples = min(int(np.linalg.norm(resolution) / cfg.render.step_ratio),
                        cfg.render.max_samples)  # fmt: skip
        step = 1.0 / n_samples
    occupied, window = occupied_window(mask, step, n_samples, cfg.render.ndc)
    if cfg.render.contract:
        occupied, window = None, 0
    return RenderSettings(
        n_samples=n_samples,
        step_size=step,
        density_capacity=bucket(cfg.optimiser.batch_size * (window or n_samples + outer)),
        # Top-k takes at most every sample of a ray: a k beyond that sizes nothing.
        appearance_capacity=bucket(cfg.optimiser.batch_size * min(cfg.render.appearance_samples,
                                                         window or n_samples + outer)),
        appearance_samples=cfg.render.appearance_samples,
        unselected=cfg.render.unselected,
        near=near,
        far=far,
        precision=precision(cfg.run),
        ndc=ndc,
        background=1.0 if cfg.render.background == "white" else 0.0,
        contract=cfg.render.contract,
        outer_samples=outer,
        occupied=occupied,
        window=window,
    )


def occupied_window(
    mask: AlphaMask | None, step: float, n_samples: int, ndc: bool
) -> tuple[tuple[float, ...] | None, int]:
    """The mask's occupied box (None: unknown) and the samples that cover the longest way
    through it (0: no fewer than the whole ray): its diagonal for world rays; for NDC rays,
    whose z grows by 2 per unit of t, its z extent over 2. Three samples of margin cover
    where the first one falls."""
    box = None if mask is None else alpha_mask.occupied_box(mask)
    if box is None:
        return None, 0
    extent = box[1] - box[0]
    span = extent[2] / 2 if ndc else np.linalg.norm(extent)
    window = int(np.ceil(span / step)) + 3
    return tuple(float(x) for x in box.reshape(-1)), window if window < n_samples else 0


def settings_for(
    cfg: TrainConfig, state: TrainState, ndc: tuple[float, float] | None = None
) -> RenderSettings:
    return render_settings(cfg, np.asarray(state.aabb), state.resolution, ndc, state.mask)


def image_settings(settings: RenderSettings, render: RenderConfig) -> RenderSettings:
    """Settings for rendering images rather than training (--render.image-threshold)."""
    return dataclasses.replace(settings, weight_threshold=render.image_threshold)


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What shapes the jitted step, and so is static to it: the batch, the model, and which
    loss terms exist. Everything else a step needs is a traced `Hyper` value, so that a run
    of another length, a resumed run with other learning rates, or a --fill-budget plan
    compiles nothing new (the config's paths and logging options never reach the step)."""

    batch_size: int
    model: ModelConfig
    random_background: bool
    tv_density: bool
    tv_appearance: bool
    ortho: bool

    @classmethod
    def of(cls, cfg: TrainConfig) -> StepSpec:
        opt = cfg.optimiser
        return cls(opt.batch_size, cfg.model, cfg.render.background == "random",
                   opt.tv_density > 0, opt.tv_appearance > 0, opt.ortho_weight > 0)  # fmt: skip


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hyper:
    """The step's traced numbers: the run's length and its rates and weights."""

    n_iters: jax.Array  # () int32: the learning rates and TV weights decay over it
    lr_grid: jax.Array  # () float32
    lr_network: jax.Array  # () float32
    lr_decay_ratio: jax.Array  # () float32
    tv_density: jax.Array  # () float32
    tv_appearance: jax.Array  # () float32
    ortho_weight: jax.Array  # () float32

    @classmethod
    def of(cls, cfg: TrainConfig) -> Hyper:
        opt = cfg.optimiser
        rates = (opt.lr_grid, opt.lr_network, opt.lr_decay_ratio, opt.tv_density,
                 opt.tv_appearance, opt.ortho_weight)  # fmt: skip
        return cls(np.int32(cfg.schedule.n_iters), *map(np.float32, rates))


def _learning_rates(hyper: Hyper, params: field.Params) -> field.Params:
    return {
        key: jax.tree.map(
            lambda _, lr=hyper.lr_grid if key in field.GRID_KEYS else hyper.lr_network: lr, sub
        )
        for key, sub in params.items()
    }


def train_step(
    state: TrainState, batch: Batch, cfg: TrainConfig, settings: RenderSettings, mesh: Mesh
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`jit_train_step` with the spec and numbers of `cfg`."""
    return jit_train_step(state, batch, Hyper.of(cfg), StepSpec.of(cfg), settings, mesh)


@functools.partial(jax.jit, static_argnames=("spec", "settings", "mesh"), donate_argnums=0)
def jit_train_step(
    state: TrainState,
    batch: Batch,
    hyper: Hyper,
    spec: StepSpec,
    settings: RenderSettings,
    mesh: Mesh,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on a batch of pixels split over the devices of `mesh` (see
    `next_batch`); the state is replicated.

    The buffer sizes in `settings` are per device. Returned counts: `*_count` summed over
    devices (for logging), `*_peak` the largest on one device (for sizing the buffers).
    """
    specs = (REPLICATED, SHARDED, SHARDED)
    return _step(state, batch, specs, lambda batch: batch, hyper, spec, settings, mesh)


def _step(
    state: TrainState, source, source_specs, rows, hyper: Hyper, spec: StepSpec,
    settings: RenderSettings, mesh: Mesh,
) -> tuple[TrainState, dict[str, jax.Array]]:  # fmt: skip
    """A step whose rays come from `source` (split over the devices by `source_specs`):
    `rows(source)` gives each device its cameras, pixel ids and target colours."""
    rng, key_jitter = jax.random.split(state.rng)
    jitter = jax.random.uniform(key_jitter, (spec.batch_size,))
    background = jnp.float32(settings.background)
    if spec.random_background:
        # Drawn from the step's jitter key, so the jitter stream is the same as without.
        background = jax.random.bernoulli(jax.random.fold_in(key_jitter, 1)).astype(jnp.float32)
    n_values = spec.batch_size * 3

    def local(params, aabb, mask, source, jitter, background):
        """This device's rays: squared error and sample counts, summed over all devices."""
        # Explicitly what shard_map does implicitly (and transposes to a sum over the
        # devices): the custom gradient of `tensor_vm.weighted_rows` must see it.
        params = jax.lax.pcast(params, AXIS, to="varying")
        cameras, ids, target = rows(source)
        origins, dirs = cameras.rays(ids)
        out = render_rays(
            params, spec.model, settings, aabb, mask, origins, dirs, jitter, background
        )
        sse = jnp.sum((out["rgb"] - target) ** 2)
        counts = jnp.stack([out["density_count"], out["appearance_count"]])
        capacity = jnp.array([settings.density_capacity, settings.appearance_capacity])
        dropped = jnp.maximum(counts - capacity, 0).sum()
        psum = functools.partial(jax.lax.psum, axis_name=AXIS)
        return psum(sse), psum(counts), jax.lax.pmax(counts, AXIS), psum(dropped)

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(REPLICATED,) * 3 + (source_specs, SHARDED, REPLICATED),
        out_specs=REPLICATED,
    )  # fmt: skip
    # Official: the TV weights decay by the learning-rate factor every step, from the
    # first, and are not reset when the grid is upsampled.
    tv_decay = hyper.lr_decay_ratio ** ((state.step + 1) / hyper.n_iters)

    def loss_fn(params):
        # Differentiating through shard_map sums the replicated parameters' gradients
        # over the devices (the transpose of replicating them).
        sse, *counts = sharded(params, state.aabb, state.mask, source, jitter, background)
        mse = sse / n_values
        loss = mse + state.l1_weight * field.density_l1(params)
        terms = ((spec.tv_density, hyper.tv_density, "density"),
                 (spec.tv_appearance, hyper.tv_appearance, "appearance"))  # fmt: skip
        for on, weight, key in terms:
            if on:
                loss = loss + weight * tv_decay * field.grid_tv(params, key)
        if spec.ortho:
            loss = loss + hyper.ortho_weight * field.orthogonality(params)
        return state.loss_scale.scale(loss), (loss, mse, counts)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (loss, mse, (counts, peaks, dropped))), grads = grad_fn(state.params)
    grads = state.loss_scale.unscale(grads)
    updates, opt_state = ADAM.update(grads, state.opt_state)
    # Exponential decay to lr_decay_ratio over n_iters, restarting at each upsample.
    decay = hyper.lr_decay_ratio ** ((state.step - state.lr_reset_step) / hyper.n_iters)
    params = jax.tree.map(
        lambda p, u, lr: p - lr * decay * u,
        state.params,
        updates,
        _learning_rates(hyper, state.params),
    )
    # A non-finite loss or gradient, or parameters that blew up, skip the update: params
    # and Adam stay as they were. (Steps far too large can leave the loss finite for a
    # while, as the grids run off to ~1e30.)
    largest = jnp.max(jnp.stack([jnp.max(jnp.abs(p)) for p in jax.tree.leaves(params)]))
    finite = jnp.isfinite(loss) & jmp.all_finite(grads) & (largest < PARAMETER_LIMIT)
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    new_state = dataclasses.replace(
        state,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        rng=rng,
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        # Overflowing samples were treated as empty / unshaded; the buffers grow next step.
        dropped_samples=state.dropped_samples + dropped,
        loss_scale=state.loss_scale.adjust(finite),
    )
    metrics = {
        "finite": finite,
        "loss": loss,
        "mse": mse,
        "psnr": -10.0 * jnp.log10(mse),
        "lr_grid": hyper.lr_grid * decay,
        "lr_network": hyper.lr_network * decay,
        "loss_scale": state.loss_scale.loss_scale,
        "density_count": counts[0],
        "appearance_count": counts[1],
        "density_peak": peaks[0],
        "appearance_peak": peaks[1],
        "skipped_steps": new_state.skipped_steps,
        "dropped_samples": new_state.dropped_samples,
    }
    return new_state, metrics


# Steps one call of `train_steps` can run at most: the size of its per-step metrics, static
# so that neither the run's schedule nor its logging compiles the call again.
MAX_STEPS_PER_CALL = 64


@functools.partial(jax.jit, static_argnames=("spec", "settings", "mesh"), donate_argnums=0)
def train_steps(
    state: TrainState,
    pool: DevicePool,
    n: jax.Array,
    hyper: Hyper,
    spec: StepSpec,
    settings: RenderSettings,
    mesh: Mesh,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`n` (<= MAX_STEPS_PER_CALL, traced) steps in one call, each drawing its batch on the
    devices from `pool` (see `DevicePool.draw`): the host only dispatches. A non-finite
    step is skipped inside, as by `jit_train_step`.

    Returns the state and each metric of `jit_train_step` per step, (MAX_STEPS_PER_CALL,)
    of which the first `n` are the steps taken. The loop over steps is a while loop of
    one compiled body whatever `n` is, so a run computes the same however it is cut into
    calls (which --resume relies on).
    """
    specs = (REPLICATED, REPLICATED)

    def one(state):
        source = (pool, state.step)
        return _step(state, source, specs, functools.partial(_draw, mesh=mesh, spec=spec),
                     hyper, spec, settings, mesh)  # fmt: skip

    shapes = jax.eval_shape(one, state)[1]
    rows = {k: jnp.zeros((MAX_STEPS_PER_CALL,), v.dtype) for k, v in shapes.items()}

    def body(i, carry):
        state, rows = carry
        state, metrics = one(state)
        return state, {k: rows[k].at[i].set(v) for k, v in metrics.items()}

    return jax.lax.fori_loop(0, n, body, (state, rows))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DevicePool:
    """This process's training pixels on the devices: each device holds its process's
    colours and pixel ids whole and draws its own share of every batch (`_draw`), so a
    step copies nothing from the host. Whole rather than split, so that a batch is the same
    on 1 device as on 4; it costs 16 bytes per pixel per device (256 MB for the 400x400
    lego). Colours stay float32: Blender's images composited on the background are not
    multiples of 1/255, and uint8 would change the targets."""

    rgb: jax.Array  # (pixels, 3) float32 target colour of every training pixel
    index: jax.Array  # (rows,) int32 pixel ids still used for training, then padding
    count: jax.Array  # (1,) int32 how many of `index` are used
    key: jax.Array  # PRNG key of the batches (a step's is folded with its number)
    cameras: Cameras


def _draw(source: tuple[DevicePool, jax.Array], mesh: Mesh, spec: StepSpec):
    """Inside shard_map: this device's cameras, pixel ids and colours of the step. Every
    process draws batch / processes pixels from its own pool, from the key folded with the
    step and the process, and each of its devices takes its slice (the mesh lists each
    process's devices together, in process order), as `RayPool.sample` did on the host."""
    pool, step = source
    per_process = spec.batch_size // jax.process_count()
    local_devices = mesh.size // jax.process_count()
    process, slot = jnp.divmod(jax.lax.axis_index(AXIS), local_devices)
    key = jax.random.fold_in(jax.random.fold_in(pool.key, step), process)
    picks = jax.random.randint(key, (per_process,), 0, pool.count[0])
    per_device = per_process // local_devices
    mine = jax.lax.dynamic_slice(picks, (slot * per_device,), (per_device,))
    ids = pool.index[mine]
    return pool.cameras, ids, pool.rgb[ids]


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


def update_mask(state: TrainState, cfg: TrainConfig, shrink: bool) -> tuple[TrainState, bool]:
    """Recompute the alpha mask; on `shrink`, crop the grids to its occupied box.

    Returns the new state and whether anything was occupied. With an empty mask (density
    collapsed) the state keeps its previous mask, so training can go on.
    """
    resolution = state.resolution
    if np.prod(resolution) >= cfg.schedule.mask_max_resolution**3 and state.mask.cells.size > 1:
        resolution = tuple(s + 1 for s in state.mask.cells.shape)
    step = voxel_step(cfg.render, np.asarray(state.aabb), state.resolution)
    mask, bounds = alpha_mask.compute_alpha_mask(
        alpha_fn(state, cfg, step), np.asarray(state.aabb), resolution, cfg.schedule.mask_threshold
    )
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
