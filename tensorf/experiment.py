"""The training command line (train.py, train_lego.py, tensorf-train): check the options and
the data before any work, then hand the run to the training loop (`tensorf.loop`)."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import tyro

from tensorf import data, parallel
from tensorf.cli import run_main
from tensorf.config import DataConfig, DistributedConfig, EvalConfig, RenderConfig, TrainConfig
from tensorf.data.resolution import nearest_downscale
from tensorf.errors import ConfigError
from tensorf.loop import rundir, training_loop
from tensorf.presets import PRESETS
from tensorf.render.sampling import ndc_for
from tensorf.train import checks, timing


def main() -> None:
    """The training command line (train.py, train_lego.py, tensorf-train): a preset, then
    any option. Returns nothing: a console script exits with what its function returns."""
    run_main(lambda: train(tyro.extras.overridable_config_cli(PRESETS)))


def check_distributed(cfg: DistributedConfig) -> None:
    if cfg.num_processes < 1 or not 0 <= cfg.process_id < cfg.num_processes:
        raise ConfigError(
            "--distributed.num-processes must be >= 1 and --distributed.process-id between 0 "
            f"and {cfg.num_processes - 1}"
        )


_KIND_NAMES = {"object": "an object scene", "capture": "a 360-degree capture"}


def check_scene_kind(scene: DataConfig, render: RenderConfig, views: data.Views) -> None:
    """Forward-facing captures need NDC rays, and objects world rays."""
    if views.kind == "forward-facing" and not render.ndc:
        raise ConfigError(
            f"{scene.dataset_path} is a forward-facing (LLFF) capture, which needs NDC rays: "
            "use a preset made for it (llff, llff-quick) or pass --render.ndc"
        )
    if views.kind != "forward-facing" and render.ndc:
        raise ConfigError(
            f"{scene.dataset_path} is {_KIND_NAMES[views.kind]}, which NDC cannot represent "
            "(it needs cameras that all look the same way): drop --render.ndc or use a "
            "preset made for it"
        )


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and evaluate; returns the final metrics (also in metrics.json).

    With several processes (cfg.distributed), every process runs this: each loads its
    share of the training views, and process 0 alone writes logs, metrics and renders.
    """
    check_distributed(cfg.distributed)
    try:
        parallel.initialize(cfg.distributed)
    except (RuntimeError, ValueError) as error:  # jax.distributed's errors
        reason = " ".join(str(error).split())[:160]
        raise ConfigError(f"--distributed: could not join the other processes ({reason}); "
                          "check --distributed.coordinator-address") from error  # fmt: skip
    checks.check_config(cfg)
    fitted = cfg.data.fits_downscale
    cfg = dataclasses.replace(cfg, data=fit_downscale(cfg.data))  # saved: --resume keeps it
    rundir.check_run_dir(cfg)
    timing.use_compile_cache(cfg.run.compile_cache)
    shard = (jax.process_index(), jax.process_count())
    load_start = time.perf_counter()
    views = data.load_views(cfg.data.dataset_path, "train", downscale=cfg.data.downscale,
                            shard=shard, drop_missing=cfg.data.drop_missing_images)  # fmt: skip
    check_scene_kind(cfg.data, cfg.render, views)
    if fitted and parallel.is_primary():
        print(f"images: {views.width}x{views.height} (--downscale {cfg.data.downscale}, the "
              f"nearest to --target-long-side {cfg.data.target_long_side})")  # fmt: skip
    checks.check_memory(cfg, views.images.nbytes)
    load_seconds = time.perf_counter() - load_start
    projection = ndc_for(cfg.render, views.intrinsics)
    if cfg.eval.eval_split not in data.available_splits(cfg.data.dataset_path):
        splits = ", ".join(data.available_splits(cfg.data.dataset_path))
        raise ConfigError(f"--eval-split {cfg.eval.eval_split}: {cfg.data.dataset_path} has the "
                          f"splits {splits}")  # fmt: skip
    load_seconds += check_eval_views(cfg.data, cfg.eval)
    parallel.sync("run dir checked")  # by every process, before process 0 writes to it
    # The viewer binds its address before the lock is taken, so a trainer never holds the
    # run while it waits on the network. Single-process only (checks.py).
    viewer = start_viewer(cfg, views) if cfg.live.viewer else None
    lock = None
    try:
        # Only process 0 writes to the run directory, so it alone holds the lock.
        lock = rundir.lock(cfg.run.run_dir) if parallel.is_primary() else None
        return training_loop.run(cfg, views, load_seconds, projection, viewer)
    finally:
        if viewer is not None:
            viewer.close()
        if lock is not None:
            lock.close()


def fit_downscale(scene: DataConfig) -> DataConfig:
    """`scene` with --target-long-side turned into its --downscale (see `fits_downscale`)."""
    if not scene.fits_downscale:
        return scene
    size = data.full_size(scene.dataset_path, scene.drop_missing_images)
    return dataclasses.replace(scene, downscale=nearest_downscale(size, scene.target_long_side))


def check_eval_views(scene: DataConfig, evaluation: EvalConfig) -> float:
    """Read the views the final evaluation will read, before the first step: a bad test
    image found after training would cost the whole run. They are read again at the end
    rather than held, which would keep their memory from training. Returns the seconds."""
    start = time.perf_counter()
    data.load_views(scene.dataset_path, evaluation.eval_split, downscale=scene.downscale,
                    max_views=evaluation.eval_max_views,
                    drop_missing=scene.drop_missing_images)  # fmt: skip
    return time.perf_counter() - start


def start_viewer(cfg: TrainConfig, views: data.Views):
    """The live viewer (--viewer) of this run, showing the training cameras."""
    from tensorf.viewer.server import FieldViewer

    cameras = {"intrinsics": views.intrinsics, "c2w": np.asarray(views.c2w, np.float64),
               "kind": views.kind, "depth_bounds": views.depth_bounds}  # fmt: skip
    viewer = FieldViewer(cfg, cameras, cfg.live.viewer_host, cfg.live.viewer_port, training=True,
                         flags=("--viewer-host", "--viewer-port"))  # fmt: skip
    print(f"viewer: open {viewer.url} to watch training (pause it from the page)")
    return viewer
