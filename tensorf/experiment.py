"""A training run end to end: data, schedule, logging, checkpoints, time budget, evaluation."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from tensorf import alpha_mask, checkpoint, data, training
from tensorf.cli import ConfigError, TrainingError
from tensorf.config import TrainConfig, to_dict
from tensorf.evaluate import depth_image, evaluate_views
from tensorf.render import fit_capacity

# Options that may differ between a run and its --resume.
RESUMABLE = {"resume", "max_minutes", "run_dir", "dataset_path", "eval_max_views", "log_every"}


def check_config(cfg: TrainConfig) -> None:
    problems = []
    if cfg.batch_size <= 0 or cfg.n_iters <= 0:
        problems.append("--batch-size and --n-iters must be positive")
    if cfg.grid_final < cfg.grid_init:
        problems.append("--grid-final must be >= --grid-init")
    for name in ("upsample_steps", "mask_steps"):
        steps = getattr(cfg, name)
        if list(steps) != sorted(set(steps)) or any(s <= 0 for s in steps):
            problems.append(f"--{name.replace('_', '-')} must be increasing positive steps")
    if cfg.downscale < 1:
        problems.append("--downscale must be >= 1")
    if problems:
        raise ConfigError("; ".join(problems))


def _check_run_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite a run; on --resume check the saved config against ours."""
    has_run = (cfg.run_dir / checkpoint.CONFIG_FILE).exists()
    if not cfg.resume:
        if has_run:
            raise ConfigError(
                f"{cfg.run_dir} already holds a run; pass --resume to continue it "
                "or choose another --run-dir"
            )
        return
    if not has_run:
        raise ConfigError(f"{cfg.run_dir}: nothing to resume; drop --resume to start a new run")
    saved = checkpoint.load_config(cfg.run_dir)
    ours, theirs = to_dict(cfg), to_dict(saved)
    differ = sorted(k for k in ours if k not in RESUMABLE and ours[k] != theirs[k])
    if differ:
        raise ConfigError(
            f"--resume with options that differ from the saved run: {', '.join(differ)}; "
            "use the same options (or a new --run-dir)"
        )


def make_pool(views: data.Views) -> training.RayPool:
    n = views.n_views * views.height * views.width
    return training.RayPool(
        rgb=jnp.asarray(views.images.reshape(-1, 3)),
        c2w=jnp.asarray(views.c2w),
        index=jnp.arange(n, dtype=jnp.int32),
        focal=views.focal,
        height=views.height,
        width=views.width,
    )


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and evaluate; returns the final metrics (also in metrics.json)."""
    check_config(cfg)
    _check_run_dir(cfg)
    views = data.load_views(cfg.dataset_path, "train", downscale=cfg.downscale)
    # Written only once the data loaded, so a failed start leaves no run behind.
    checkpoint.save_config(cfg.run_dir, cfg)
    pool = make_pool(views)
    mngr = checkpoint.manager(cfg.run_dir, cfg.keep_checkpoints)
    resumed = cfg.resume and mngr.latest_step() is not None
    if resumed:
        state = checkpoint.restore_latest(mngr, cfg)
    else:
        state = training.init_state(cfg)
    # Rays that miss the box can never be anything but background (official: bbox_only).
    initial_box = alpha_mask.everything(np.reshape(cfg.aabb, (2, 3)))
    pool = training.filter_rays(initial_box, pool, cfg)
    step = int(state.step)
    if any(s <= step for s in cfg.mask_steps[1:]):
        pool = training.filter_rays(state.mask, pool, cfg)

    writer = SummaryWriter(str(cfg.run_dir / "tensorboard"))
    voxels = dict(zip(cfg.upsample_steps, training.voxel_schedule(cfg), strict=True))
    settings = training.settings_for(cfg, state)
    if resumed:
        settings = dataclasses.replace(settings, **checkpoint.latest_buffers(mngr))
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    start = last_log = time.perf_counter()
    last_log_step = step
    dropped = 0  # samples skipped because a buffer overflowed (buffers then grow)
    bar = tqdm(total=cfg.n_iters, initial=step, desc="training", unit="step", dynamic_ncols=True)
    while step < cfg.n_iters:
        state, metrics = training.train_step(state, pool, cfg, settings)
        step += 1
        bar.update()
        counts = int(metrics["density_count"]), int(metrics["appearance_count"])
        dropped += max(counts[0] - settings.density_capacity, 0)
        dropped += max(counts[1] - settings.appearance_capacity, 0)
        settings = fit_capacity(settings, *counts, shrink=True)
        if step % cfg.log_every == 0 or step == cfg.n_iters:
            now = time.perf_counter()
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not np.isfinite(m["loss"]):
                raise TrainingError(
                    f"the loss became {m['loss']} at step {step}; the last good checkpoint is "
                    f"in {cfg.run_dir}; lower --lr-grid / --lr-network and --resume"
                )
            m["rays_per_s"] = (step - last_log_step) * cfg.batch_size / (now - last_log)
            m["resolution"] = float(np.prod(state.resolution)) ** (1 / 3)
            m["samples_per_ray"] = settings.n_samples
            m["density_evals_per_ray"] = counts[0] / cfg.batch_size
            m["shaded_samples_per_ray"] = counts[1] / cfg.batch_size
            m["dropped_samples"] = dropped
            m["training_rays"] = int(pool.index.shape[0])
            for k, v in m.items():
                writer.add_scalar(f"train/{k}", v, step)
            bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}",
                            rays_s=f"{m['rays_per_s']:.0f}")  # fmt: skip
            last_log, last_log_step = now, step

        changed = False
        if step in cfg.mask_steps:
            first = step == cfg.mask_steps[0]
            state, ok = training.update_mask(state, cfg, shrink=first)
            if not ok:
                tqdm.write(f"step {step}: alpha mask would be empty (density collapsed); kept")
            if first:
                state = dataclasses.replace(state, l1_weight=jnp.float32(cfg.l1_rest))
            else:
                pool = training.filter_rays(state.mask, pool, cfg)
            changed = True
        if step in voxels:
            state = training.upsample(state, cfg, voxels[step])
            changed = True
        if changed:
            settings = training.settings_for(cfg, state)
            tqdm.write(
                f"step {step}: grid {state.resolution}, {settings.n_samples} samples/ray, "
                f"{int(pool.index.shape[0])} training rays"
            )
        out_of_time = budget is not None and time.perf_counter() - start > budget
        if step % cfg.checkpoint_every == 0 or step == cfg.n_iters or out_of_time:
            buffers = {
                "density_capacity": settings.density_capacity,
                "appearance_capacity": settings.appearance_capacity,
            }
            checkpoint.save(mngr, state, buffers)
        if out_of_time:
            tqdm.write(f"--max-minutes {cfg.max_minutes} reached at step {step}")
            break
    bar.close()
    train_seconds = time.perf_counter() - start
    mngr.wait_until_finished()
    return finish(state, cfg, writer, train_seconds)


def finish(state: training.TrainState, cfg: TrainConfig, writer, train_seconds: float) -> dict:
    """Evaluate on cfg.eval_split, log to TensorBoard, write metrics.json."""
    views = data.load_views(
        cfg.dataset_path, cfg.eval_split, downscale=cfg.downscale, max_views=cfg.eval_max_views
    )
    metrics, previews = evaluate_views(state, cfg, views, Path(cfg.run_dir) / "renders")
    metrics = {"split": cfg.eval_split, "train_seconds": train_seconds, **metrics}
    step = metrics["step"]
    writer.add_scalar(f"{cfg.eval_split}/psnr", metrics["psnr"], step)
    writer.add_scalar(f"{cfg.eval_split}/ssim", metrics["ssim"], step)
    for i, out in enumerate(previews):
        writer.add_image(f"{cfg.eval_split}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                         dataformats="HWC")  # fmt: skip
        writer.add_image(f"{cfg.eval_split}/depth_{i}", depth_image(out["depth"], out["acc"]),
                         step, dataformats="HW")  # fmt: skip
    writer.close()
    (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"{cfg.eval_split}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} over "
        f"{metrics['n_views']} views; trained {train_seconds / 60:.1f} min to step {step}"
    )
    return metrics
