"""The training state: one pytree of parameters, optimiser state, box, alpha mask, step and
keys; its initial value, and the render settings it implies."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jmp
import numpy as np
import optax

from tensorf.config import ModelConfig, RunConfig, TrainConfig
from tensorf.field import alpha_mask, field, tensor_vm
from tensorf.field.alpha_mask import AlphaMask
from tensorf.render.sampling import RenderSettings, precision, render_settings
from tensorf.train.pose_refinement import PoseCorrections

ADAM = optax.scale_by_adam(b1=0.9, b2=0.99)


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
    # --refine-poses: every training view's pose correction; None without (no leaves, so
    # such a run's checkpoints are as before).
    poses: PoseCorrections | None = None

    @property
    def resolution(self) -> tuple[int, int, int]:
        return self.params["density"].resolution


def init_state(cfg: TrainConfig, training_views: int = 0) -> TrainState:
    """The state at step 0; `training_views`: the views of the whole training split (all
    processes'), needed with appearance codes (`field.init_params`) and --refine-poses."""
    if cfg.optimiser.refine_poses and training_views < 1:
        raise ValueError("--refine-poses needs the number of training views")
    aabb = np.array(cfg.schedule.aabb, np.float32).reshape(2, 3)
    resolution = tensor_vm.resolution_for_voxels(cfg.schedule.grid_init**3, aabb)
    key, params, opt_state = _init(cfg.run.seed, cfg.model, resolution, training_views)
    return TrainState(
        params=params,
        opt_state=opt_state,
        aabb=jnp.asarray(aabb),
        mask=alpha_mask.everything(aabb),
        step=jnp.int32(0),
        lr_reset_step=jnp.int32(0),
        l1_weight=jnp.float32(cfg.optimiser.l1_initial),
        rng=key,
        skipped_steps=jnp.int32(0),
        dropped_samples=jnp.int32(0),
        loss_scale=initial_loss_scale(cfg.run),
        poses=PoseCorrections.zeros(training_views) if cfg.optimiser.refine_poses else None,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _init(seed: int, model: ModelConfig, resolution: tuple[int, int, int], training_views: int):
    """The state's key, the field and Adam's state at step 0: one program, where op by op
    each of its ~80 operations was a compilation of its own (3.3 s of every launch here,
    too quick each for the compilation cache to keep)."""
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    params = field.init_params(init_key, model, resolution, training_views)
    return key, params, ADAM.init(params)


def initial_loss_scale(run: RunConfig) -> jmp.LossScale:
    """f16 gradients underflow without loss scaling; bf16 and f32 have f32's range."""
    if precision(run) == "f16":
        return jmp.DynamicLossScale(jnp.float32(2**15))
    return jmp.NoOpLossScale()


def settings_for(
    cfg: TrainConfig, state: TrainState, ndc: tuple[float, float] | None = None
) -> RenderSettings:
    return render_settings(cfg, np.asarray(state.aabb), state.resolution, ndc, state.mask)
