"""The jitted optimisation step: one step on a batch of rays split over the devices, and
many steps in one call, each drawing its batch on the devices. What shapes the step is a
small static `StepSpec`; the run's numbers are a traced `Hyper`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jmp
import numpy as np
from jax.sharding import Mesh

from tensorf.config import ModelConfig, TrainConfig
from tensorf.field import field
from tensorf.parallel import AXIS, REPLICATED, SHARDED
from tensorf.render.march import render_rays
from tensorf.render.sampling import RenderSettings
from tensorf.train import pose_refinement
from tensorf.train.ray_pool import Batch, Cameras, DevicePool
from tensorf.train.train_state import ADAM, TrainState

# No parameter of a sane field comes near this (grid values stay within tens, weights
# within ones); one beyond it means the optimisation diverged.
PARAMETER_LIMIT = 1e6


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
    distortion: bool
    refine_poses: bool  # off, the step is the one of before: no pose in its computation

    @classmethod
    def of(cls, cfg: TrainConfig) -> StepSpec:
        opt = cfg.optimiser
        return cls(opt.batch_size, cfg.model, cfg.render.background == "random",
                   opt.tv_density > 0, opt.tv_appearance > 0, opt.ortho_weight > 0,
                   opt.distortion_weight > 0, opt.refine_poses)  # fmt: skip


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
    distortion_weight: jax.Array  # () float32
    lr_poses: jax.Array  # () float32 (--refine-poses)
    pose_warmup_steps: jax.Array  # () int32 (--refine-poses)

    @classmethod
    def of(cls, cfg: TrainConfig) -> Hyper:
        opt = cfg.optimiser
        rates = (opt.lr_grid, opt.lr_network, opt.lr_decay_ratio, opt.tv_density,
                 opt.tv_appearance, opt.ortho_weight, opt.distortion_weight,
                 opt.lr_poses)  # fmt: skip
        return cls(np.int32(cfg.schedule.n_iters), *map(np.float32, rates),
                   np.int32(opt.pose_warmup_steps))  # fmt: skip


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

    def local(params, poses, aabb, mask, source, jitter, background):
        """This device's rays: squared error and sample counts, summed over all devices,
        and with the distortion loss its sum over the rays. `poses`: the pose correction
        table (--refine-poses), or None."""
        # Explicitly what shard_map does implicitly (and transposes to a sum over the
        # devices): the custom gradient of `tensor_vm.weighted_rows` must see it.
        params = jax.lax.pcast(params, AXIS, to="varying")
        cameras, ids, target = rows(source)
        if poses is not None:
            # The world rays are corrected; NDC (LLFF) projects them later, in render_rays.
            cameras = cameras.corrected(jax.lax.pcast(poses, AXIS, to="varying"))
        origins, dirs = cameras.rays(ids)
        views = _training_views(cameras, ids, mesh) if spec.model.appearance_codes else None
        out = render_rays(params, spec.model, settings, aabb, mask, origins, dirs, jitter,
                          background, views, spec.distortion)  # fmt: skip
        sse = jnp.sum((out["rgb"] - target) ** 2)
        counts = jnp.stack([out["density_count"], out["appearance_count"]])
        capacity = jnp.array([settings.density_capacity, settings.appearance_capacity])
        dropped = jnp.maximum(counts - capacity, 0).sum()
        psum = functools.partial(jax.lax.psum, axis_name=AXIS)
        sums = (psum(sse),) + ((psum(out["distortion"].sum()),) if spec.distortion else ())
        return sums, psum(counts), jax.lax.pmax(counts, AXIS), psum(dropped)

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(REPLICATED,) * 4 + (source_specs, SHARDED, REPLICATED),
        out_specs=REPLICATED,
    )  # fmt: skip
    # Official: the TV weights decay by the learning-rate factor every step, from the
    # first, and are not reset when the grid is upsampled.
    tv_decay = hyper.lr_decay_ratio ** ((state.step + 1) / hyper.n_iters)

    def loss_fn(trainable):
        # Differentiating through shard_map sums the replicated parameters' gradients
        # over the devices (the transpose of replicating them).
        params, poses = trainable if spec.refine_poses else (trainable, None)
        sums, *counts = sharded(params, poses, state.aabb, state.mask, source, jitter,
                                background)  # fmt: skip
        mse = sums[0] / n_values
        loss = mse + state.l1_weight * field.density_l1(params)
        terms = ((spec.tv_density, hyper.tv_density, "density"),
                 (spec.tv_appearance, hyper.tv_appearance, "appearance"))  # fmt: skip
        for on, weight, key in terms:
            if on:
                loss = loss + weight * tv_decay * field.grid_tv(params, key)
        if spec.ortho:
            loss = loss + hyper.ortho_weight * field.orthogonality(params)
        logged = {"mse": mse}
        if spec.distortion:  # the mean over the rays
            logged["distortion"] = sums[1] / spec.batch_size
            loss = loss + hyper.distortion_weight * logged["distortion"]
        return state.loss_scale.scale(loss), (loss, logged, counts)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if spec.refine_poses:
        (_, (loss, logged, counts)), (grads, pose_grads) = grad_fn((state.params,
                                                                    state.poses.table))
        return _update(state, grads, rng, hyper, loss, logged, counts, pose_grads)
    (_, (loss, logged, counts)), grads = grad_fn(state.params)
    return _update(state, grads, rng, hyper, loss, logged, counts)


def _training_views(cameras: Cameras, ids: jax.Array, mesh: Mesh) -> jax.Array:
    """Inside shard_map: each pixel id's (n,) view as its index in the whole training split,
    the row of its appearance code. Process p loads views p, p + P, p + 2P, ... of the P
    processes (`data.load_views`' shard) and its pixel ids count those alone; the mesh lists
    each process's devices together, in process order. One process: the local index."""
    process = jax.lax.axis_index(AXIS) // (mesh.size // jax.process_count())
    return cameras.view_of(ids) * jax.process_count() + process


def _update(
    state: TrainState, grads: field.Params, rng: jax.Array, hyper: Hyper, loss: jax.Array,
    logged: dict[str, jax.Array], counts: tuple[jax.Array, jax.Array, jax.Array],
    pose_grads: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:  # fmt: skip
    """The step's Adam update with its (scaled) gradients, unless something is not finite;
    `logged`: the loss terms to log (mse, and the distortion loss where it is on);
    `counts`: the samples that needed each buffer (summed, and the most on one device)
    and those dropped; `pose_grads` (views, 6): the pose corrections' (--refine-poses).
    Returns the next state and the step's metrics."""
    counts, peaks, dropped = counts
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
    poses, pose_metrics = state.poses, {}
    if pose_grads is not None:
        pose_grads = state.loss_scale.unscale(pose_grads)
        finite = finite & jmp.all_finite(pose_grads)
        lr_poses = pose_refinement.learning_rate(hyper.lr_poses, hyper.pose_warmup_steps,
                                                 hyper.lr_decay_ratio, hyper.n_iters,
                                                 state.step)  # fmt: skip
        poses = keep(state.poses.step(pose_grads, lr_poses), state.poses)
        pose_metrics = {"lr_poses": lr_poses, **_pose_sizes(poses.table)}
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
        poses=poses,
    )
    metrics = {
        "finite": finite,
        "loss": loss,
        **logged,
        "psnr": -10.0 * jnp.log10(logged["mse"]),
        "lr_grid": hyper.lr_grid * decay,
        "lr_network": hyper.lr_network * decay,
        "loss_scale": state.loss_scale.loss_scale,
        "density_count": counts[0],
        "appearance_count": counts[1],
        "density_peak": peaks[0],
        "appearance_peak": peaks[1],
        "skipped_steps": new_state.skipped_steps,
        "dropped_samples": new_state.dropped_samples,
        **pose_metrics,
    }
    return new_state, metrics


def _pose_sizes(table: jax.Array) -> dict[str, jax.Array]:
    """How far the pose corrections (views, 6) move the cameras: the mean rotation
    (degrees) and translation (world units) over the views."""
    rotation = jnp.degrees(jnp.linalg.norm(table[:, :3], axis=1))
    return {"pose_rotation_deg": jnp.mean(rotation),
            "pose_translation": jnp.mean(jnp.linalg.norm(table[:, 3:], axis=1))}  # fmt: skip


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
