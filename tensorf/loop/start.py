"""Where a run starts: the training rays (filtered to the box), the run directory's config
and cameras, and the state at step 0 or restored from the latest checkpoint."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import orbax.checkpoint as ocp

from tensorf import data, parallel
from tensorf.config import TrainConfig
from tensorf.errors import ConfigError
from tensorf.field import alpha_mask
from tensorf.train import checkpoint, events, pose_refinement, ray_pool, train_state
from tensorf.train.ray_pool import RayPool
from tensorf.train.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class Start:
    state: TrainState  # on the host's default device
    pool: RayPool
    mngr: ocp.CheckpointManager
    saved: dict  # what the latest checkpoint saved besides the state (buffers, plan)
    filter_rays: bool  # whether alpha masks filter the training rays


def begin(cfg: TrainConfig, views: data.Views) -> Start:
    """Ready to train `views`: the run directory holds the config and cameras once the data
    has loaded (a failed start leaves no run behind)."""
    pool = ray_pool.make_pool(views)
    # Rays that miss the box can never be anything but background (official: bbox_only).
    # In NDC every ray crosses the box, as the official code assumes by not filtering, and
    # a contracted box holds every ray whole.
    filter_rays = not (cfg.render.ndc or cfg.render.contract)
    if filter_rays:
        initial_box = alpha_mask.everything(np.reshape(cfg.schedule.aabb, (2, 3)))
        pool = events.filter_rays(initial_box, pool, cfg.render)
        if not len(pool.index):
            raise ConfigError(
                f"no training ray reaches the box --aabb {' '.join(map(str, cfg.schedule.aabb))} "
                f"between --render.near {cfg.render.near} and --render.far {cfg.render.far}: the "
                "scene is elsewhere; fix those options (or use the preset made for this scene)"
            )
    if parallel.is_primary():
        checkpoint.save_config(cfg.run.run_dir, cfg)
        checkpoint.save_cameras(cfg.run.run_dir, views)
    mngr = checkpoint.manager(cfg.run.run_dir, cfg.run.keep_checkpoints)
    # Only appearance codes and --refine-poses need the whole split's size (a collective
    # with several processes).
    wanted = cfg.model.appearance_codes or cfg.optimiser.refine_poses
    training_views = parallel.total(views.n_views) if wanted else 0
    saved = {}
    if cfg.run.resume and mngr.all_steps():
        unreadable = cfg.run.run_dir / "unreadable_checkpoints"
        state, saved = checkpoint.restore_latest(mngr, cfg, set_aside=unreadable)
        check_codes(state, training_views)
    else:
        if cfg.run.resume and parallel.is_primary():
            print(f"warning: --resume: {cfg.run.run_dir} has no checkpoint yet (the run stopped "
                  "before its first); starting from step 0", file=sys.stderr)  # fmt: skip
        state = train_state.init_state(cfg, training_views)
    if parallel.is_primary():
        export_poses(cfg, views, pool, state)
    if filter_rays and any(s <= int(state.step) for s in cfg.schedule.mask_steps[1:]):
        pool = events.filter_rays(state.mask, pool, cfg.render)
    return Start(state, pool, mngr, saved, filter_rays)


def check_codes(state: TrainState, training_views: int) -> None:
    """A resumed run's appearance codes must be one per training view: another scene (or
    another set of its photos) would shade its rays with other photos' codes."""
    if "codes" in state.params and len(state.params["codes"]) != training_views:
        raise ConfigError(
            f"--resume: the run's appearance codes are for {len(state.params['codes'])} "
            f"training views, the scene has {training_views}; resume with the scene (and "
            "--drop-missing-images) it was trained with"
        )


def export_poses(cfg: TrainConfig, views: data.Views, pool: RayPool, state: TrainState) -> None:
    """refined_poses.json as `state` has them (--refine-poses; process 0); without, none,
    so that an earlier run's in the same folder is not taken for this one's."""
    if state.poses is None:
        (cfg.run.run_dir / pose_refinement.POSES_FILE).unlink(missing_ok=True)
        return
    ids = np.asarray(pool.cameras.view_ids)
    pose_refinement.export(cfg.run.run_dir, views, ids, state.poses, int(state.step))
