"""A training run end to end: data, schedule, logging, checkpoints, time budget, evaluation."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from tensorboardX import SummaryWriter
from tqdm import tqdm

from tensorf import alpha_mask, checkpoint, data, parallel, training
from tensorf.cli import ConfigError, Interrupted, TrainingError, run_main
from tensorf.config import PRESETS, DistributedConfig, TrainConfig, to_dict
from tensorf.evaluate import evaluate_views
from tensorf.render import fit_capacity

LOG_FILE = "log.jsonl"

# Options that may differ between a run and its --resume.
RESUMABLE = {
    "resume", "max_minutes", "run_dir", "dataset_path", "eval_max_views", "log_every",
    "max_bad_steps", "distributed",
}  # fmt: skip


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


def check_config(cfg: TrainConfig) -> None:
    problems = []
    positive = ("batch_size", "n_iters", "grid_init", "checkpoint_every", "keep_checkpoints",
                "log_every", "max_bad_steps", "downscale")  # fmt: skip
    problems += [f"--{_flag(name)} must be positive" for name in positive if getattr(cfg, name) < 1]
    if cfg.batch_size % len(jax.devices()):
        problems.append(f"--batch-size must be a multiple of the {len(jax.devices())} devices")
    if cfg.grid_final < cfg.grid_init:
        problems.append("--grid-final must be >= --grid-init")
    for name in ("upsample_steps", "mask_steps"):
        steps = getattr(cfg, name)
        if list(steps) != sorted(set(steps)) or any(s <= 0 for s in steps):
            problems.append(f"--{_flag(name)} must be increasing positive steps")
        elif steps and steps[-1] > cfg.n_iters:
            problems.append(f"--{_flag(name)} go beyond --n-iters {cfg.n_iters}")
    render = cfg.render
    if not 1 <= render.appearance_samples <= render.max_samples:
        problems.append(
            f"--render.appearance-samples (k = {render.appearance_samples}) must be between 1 "
            f"and --render.max-samples ({render.max_samples})"
        )
    if render.step_ratio <= 0 or render.chunk < 1 or not 0 <= render.near < render.far:
        problems.append("--render needs step-ratio > 0, chunk >= 1 and 0 <= near < far")
    for name in ("tv_density", "tv_appearance", "ortho_weight", "l1_initial", "l1_rest"):
        if not np.isfinite(getattr(cfg, name)) or getattr(cfg, name) < 0:
            problems.append(f"--{_flag(name)} must be a finite number >= 0")
    for name in ("density_components", "appearance_components"):
        if len(getattr(cfg.model, name)) != 3 or min(getattr(cfg.model, name)) < 1:
            problems.append(f"--model.{_flag(name)} must be three positive counts (one per "
                            "axis pair)")  # fmt: skip
    if any(a >= b for a, b in zip(cfg.aabb[:3], cfg.aabb[3:], strict=True)):
        problems.append("--aabb must be x0 y0 z0 x1 y1 z1 with x0 < x1, y0 < y1, z0 < z1")
    if problems:
        raise ConfigError("; ".join(problems))


def _flag(name: str) -> str:
    return name.replace("_", "-")


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
    cameras = training.Cameras(jnp.asarray(views.c2w), views.intrinsics)
    return training.RayPool(views.images.reshape(-1, 3), np.arange(n, dtype=np.int32), cameras)


def check_scene_kind(cfg: TrainConfig, views: data.Views) -> None:
    """Forward-facing captures need NDC rays, and objects world rays."""
    if views.kind == "forward-facing" and not cfg.render.ndc:
        raise ConfigError(
            f"{cfg.dataset_path} is a forward-facing (LLFF) capture, which needs NDC rays: "
            "use a preset made for it (llff, llff-quick) or pass --render.ndc"
        )
    if views.kind == "object" and cfg.render.ndc:
        raise ConfigError(
            f"{cfg.dataset_path} is an object scene, which NDC cannot represent (it needs "
            "cameras that all look the same way): drop --render.ndc or use an object preset"
        )


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and evaluate; returns the final metrics (also in metrics.json).

    With several processes (cfg.distributed), every process runs this: each loads its
    share of the training views, and process 0 alone writes logs, metrics and renders.
    """
    check_distributed(cfg.distributed)
    parallel.initialize(cfg.distributed)
    check_config(cfg)
    _check_run_dir(cfg)
    shard = (jax.process_index(), jax.process_count())
    views = data.load_views(cfg.dataset_path, "train", downscale=cfg.downscale, shard=shard)
    check_scene_kind(cfg, views)
    projection = training.ndc_for(cfg, views.intrinsics)
    parallel.sync("run dir checked")  # by every process, before process 0 writes to it
    primary = parallel.is_primary()
    # Written only once the data loaded, so a failed start leaves no run behind.
    if primary:
        checkpoint.save_config(cfg.run_dir, cfg)
        checkpoint.save_cameras(cfg.run_dir, views)
    mesh = parallel.data_mesh()
    pool = make_pool(views)
    mngr = checkpoint.manager(cfg.run_dir, cfg.keep_checkpoints)
    buffers = {}
    if cfg.resume and mngr.all_steps():
        unreadable = cfg.run_dir / "unreadable_checkpoints"
        state, buffers = checkpoint.restore_latest(mngr, cfg, set_aside=unreadable)
    else:
        state = training.init_state(cfg)
    # Rays that miss the box can never be anything but background (official: bbox_only).
    # In NDC every ray crosses the box, as the official code assumes by not filtering.
    filter_rays = not cfg.render.ndc
    if filter_rays:
        initial_box = alpha_mask.everything(np.reshape(cfg.aabb, (2, 3)))
        pool = training.filter_rays(initial_box, pool, cfg)
    step = int(state.step)
    if filter_rays and any(s <= step for s in cfg.mask_steps[1:]):
        pool = training.filter_rays(state.mask, pool, cfg)
    state = parallel.replicate(state, mesh)

    writer = log = None
    if primary:
        # purge_step drops what a killed run logged after its last checkpoint.
        writer = SummaryWriter(str(cfg.run_dir / "tensorboard"), purge_step=step or None)
        log = _JsonLog(cfg.run_dir / LOG_FILE, step)
    voxels = dict(zip(cfg.upsample_steps, training.voxel_schedule(cfg), strict=True))
    settings = dataclasses.replace(training.settings_for(cfg, state, projection), **buffers)
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    start = last_log = time.perf_counter()
    last_log_step = step
    bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
    bar = tqdm(total=cfg.n_iters, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not primary)  # fmt: skip
    with _StopOnSignals() as signals:
        while step < cfg.n_iters:
            batch = training.next_batch(pool, cfg, step, mesh)
            state, metrics = training.train_step(state, batch, cfg, settings, mesh)
            step += 1
            bar.update()
            bad_steps = 0 if bool(metrics["finite"]) else bad_steps + 1
            if bad_steps >= cfg.max_bad_steps:
                raise TrainingError(
                    f"{bad_steps} steps in a row up to step {step} had a non-finite loss or "
                    f"gradient (all skipped); the last good checkpoint is in {cfg.run_dir}; "
                    "lower --lr-grid / --lr-network and --resume"
                )
            peaks = int(metrics["density_peak"]), int(metrics["appearance_peak"])
            settings = fit_capacity(settings, *peaks, shrink=True)
            if primary and (step % cfg.log_every == 0 or step == cfg.n_iters):
                now = time.perf_counter()
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m["rays_per_s"] = (step - last_log_step) * cfg.batch_size / (now - last_log)
                m["resolution"] = float(np.prod(state.resolution)) ** (1 / 3)
                m["samples_per_ray"] = settings.n_samples
                m["density_evals_per_ray"] = m.pop("density_count") / cfg.batch_size
                m["shaded_samples_per_ray"] = m.pop("appearance_count") / cfg.batch_size
                m["dropped_samples"] = int(state.dropped_samples)
                m["skipped_steps"] = int(state.skipped_steps)
                m["training_rays"] = len(pool.index)  # of this process
                for k, v in m.items():
                    writer.add_scalar(f"train/{k}", v, step)
                log.write(step, m)
                bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}",
                                rays_s=f"{m['rays_per_s']:.0f}")  # fmt: skip
                last_log, last_log_step = now, step

            changed = False
            if step in cfg.mask_steps or step in voxels:
                state = parallel.local_copy(state)  # grid events run in each process
            if step in cfg.mask_steps:
                first = step == cfg.mask_steps[0]
                state, ok = training.update_mask(state, cfg, shrink=first)
                if not ok and primary:
                    message = f"step {step}: alpha mask would be empty (density collapsed); kept"
                    tqdm.write(message)
                    writer.add_text("train/warnings", message, step)
                if first:
                    state = dataclasses.replace(state, l1_weight=jnp.float32(cfg.l1_rest))
                elif filter_rays:
                    pool = training.filter_rays(state.mask, pool, cfg)
                changed = True
            if step in voxels:
                state = training.upsample(state, cfg, voxels[step])
                changed = True
            if changed:
                state = parallel.replicate(state, mesh)
                settings = training.settings_for(cfg, state, projection)
                if primary:
                    tqdm.write(
                        f"step {step}: grid {state.resolution}, {settings.n_samples} "
                        f"samples/ray, {len(pool.index)} training rays"
                    )
            # Process 0 decides, so that every process stops at the same step.
            out_of_time, signum = parallel.from_primary(
                budget is not None and time.perf_counter() - start > budget, signals.signum or 0
            )
            if step % cfg.checkpoint_every == 0 or step == cfg.n_iters or out_of_time or signum:
                buffers = {
                    "density_capacity": settings.density_capacity,
                    "appearance_capacity": settings.appearance_capacity,
                }
                checkpoint.save(mngr, state, buffers)
            if signum:
                mngr.wait_until_finished()
                raise Interrupted(
                    f"stopped by {signal.Signals(signum).name} at step {step}; "
                    f"checkpoint saved, continue with --resume --run-dir {cfg.run_dir}",
                    signum,
                )
            if out_of_time:
                if primary:
                    tqdm.write(f"--max-minutes {cfg.max_minutes} reached at step {step}")
                break
    bar.close()
    train_seconds = time.perf_counter() - start
    mngr.wait_until_finished()
    return finish(state, cfg, writer, train_seconds)


class _StopOnSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current step (and checkpoint);
    a second signal stops at once."""

    def __enter__(self) -> _StopOnSignals:
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _JsonLog:
    """The logged scalars as one JSON line per log step (a loss curve without TensorBoard).
    On resume, the lines past the checkpoint's step are dropped, as TensorBoard's are."""

    def __init__(self, path: Path, step: int) -> None:
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, scalars: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")


def finish(state: training.TrainState, cfg: TrainConfig, writer, train_seconds: float) -> dict:
    """Evaluate on cfg.eval_split, log to TensorBoard, write metrics.json."""
    views = data.load_views(
        cfg.dataset_path, cfg.eval_split, downscale=cfg.downscale, max_views=cfg.eval_max_views
    )
    # Every process renders (the rays are split over all devices); process 0 writes.
    primary = parallel.is_primary()
    out_dir = Path(cfg.run_dir) / "renders" if primary else None
    metrics, previews = evaluate_views(state, cfg, views, out_dir)
    metrics = {"split": cfg.eval_split, "train_seconds": train_seconds, **metrics}
    if not primary:
        return metrics
    step = metrics["step"]
    writer.add_scalar(f"{cfg.eval_split}/psnr", metrics["psnr"], step)
    writer.add_scalar(f"{cfg.eval_split}/ssim", metrics["ssim"], step)
    for i, out in enumerate(previews):
        writer.add_image(f"{cfg.eval_split}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                         dataformats="HWC")  # fmt: skip
        writer.add_image(f"{cfg.eval_split}/depth_{i}", out["depth_vis"], step,
                         dataformats="HWC")  # fmt: skip
    writer.close()
    (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"{cfg.eval_split}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} over "
        f"{metrics['n_views']} views; trained {train_seconds / 60:.1f} min to step {step}; "
        f"model {metrics['model_mb']:.1f} MB"
    )
    print(f"{cfg.run_dir}: metrics.json, renders/ (the {cfg.eval_split} views, RGB and depth), "
          "log.jsonl and tensorboard/ (curves), checkpoints/ (for --resume, render_360.py, "
          "tensorf.evaluate)")  # fmt: skip
    return metrics
