"""A field evaluated on held-out views (metrics, renders, previews), and the evaluations of a
training run: a few views every so many steps (--eval-every), and the final evaluation
that writes metrics.json."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorf import data, outputs, parallel
from tensorf.config import EvalConfig, TrainConfig
from tensorf.errors import TrainingError
from tensorf.eval.lpips import MIN_SIDE, lpips
from tensorf.eval.scoring import model_megabytes, psnr, ssim, summary
from tensorf.field import field
from tensorf.progress import tqdm
from tensorf.render.image import baked, render_image
from tensorf.render.sampling import image_settings, ndc_for
from tensorf.render.visualize import colorize_depth, depth_range, to_uint8
from tensorf.train import timing
from tensorf.train.pose_refinement import seen_from_refined
from tensorf.train.train_state import TrainState, settings_for

# Called with each view's index, render (rgb, depth, acc, depth_vis) and ground truth.
ViewSink = Callable[[int, dict[str, np.ndarray], np.ndarray], None]


def evaluate_views(
    state: TrainState,
    cfg: TrainConfig,
    views: data.Views,
    out_dir: Path | None,
    sink: ViewSink | None = None,
) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """Render every view, compare with its image; write PNGs to out_dir if given.

    Returns the metrics (with LPIPS unless cfg.eval.eval_lpips is off or the images are too small
    for its network) and the renders of the first three views (for TensorBoard), each with a
    colour-mapped depth image `depth_vis`.
    """
    fast = settings_for(cfg, state, ndc_for(cfg.render, views.intrinsics))
    settings = image_settings(fast, cfg.render)
    near, far = views.depth_bounds or depth_range(views.c2w, np.asarray(state.aabb))
    net = _lpips_net(cfg.eval, views)
    psnrs, ssims, lpipses, previews = [], [], [], []
    lpips_seconds = 0.0
    start = time.perf_counter()
    params = baked(state.params)  # once, not once per view
    bar = tqdm(range(views.n_views), desc="evaluating", unit="view", leave=False,
               disable=not parallel.is_primary())  # fmt: skip
    for i in bar:
        out, settings = render_image(
            params, cfg.model, settings, state.aabb, state.mask,
            views.c2w[i], views.camera(i), cfg.render.chunk,
        )  # fmt: skip
        out["depth_vis"] = colorize_depth(out["depth"], out["acc"], near, far)
        psnrs.append(psnr(out["rgb"], views.images[i]))
        ssims.append(ssim(out["rgb"], views.images[i]))
        if net is not None:
            lpips_start = time.perf_counter()
            lpipses.append(lpips(out["rgb"], views.images[i], net))
            lpips_seconds += time.perf_counter() - lpips_start
        if i < 3:
            previews.append(out)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            outputs.write_image(out_dir / f"{i:03d}_rgb.png", to_uint8(out["rgb"]))
            outputs.write_image(out_dir / f"{i:03d}_depth.png", out["depth_vis"])
        if sink is not None:
            sink(i, out, views.images[i])
    seconds = time.perf_counter() - start
    metrics = {
        "psnr": float(np.mean(psnrs)),
        "model_mb": model_megabytes(state.params),
        "ssim": float(np.mean(ssims)),
        "n_views": views.n_views,
        "image_size": [views.width, views.height],
        "step": int(state.step),
        # Without LPIPS, which has its own figure: as before it was added.
        "seconds_per_image": (seconds - lpips_seconds) / views.n_views,
        "psnr_per_view": [round(p, 3) for p in psnrs],
    }
    if cfg.model.appearance_codes:
        metrics["appearance"] = field.APPEARANCE_RULE
    if net is not None:
        metrics |= {
            "lpips": float(np.mean(lpipses)),
            "lpips_net": net,
            "lpips_seconds_per_image": lpips_seconds / views.n_views,
            "lpips_per_view": [round(d, 4) for d in lpipses],
        }
    return metrics, previews


def _lpips_net(evaluation: EvalConfig, views: data.Views) -> str | None:
    """The LPIPS network to use on these views, None for none (with a warning when the
    images are too small for it)."""
    if evaluation.eval_lpips == "off":
        return None
    if min(views.height, views.width) < MIN_SIDE[evaluation.eval_lpips]:
        if parallel.is_primary():
            print(f"warning: no LPIPS: its {evaluation.eval_lpips} network needs images of at "
                  f"least {MIN_SIDE[evaluation.eval_lpips]} pixels a side, these are "
                  f"{views.width}x{views.height}", file=sys.stderr)  # fmt: skip
        return None
    return evaluation.eval_lpips


class Probe:
    """--eval-every: a few held-out views evaluated every so many steps, for TensorBoard's
    curves (the final evaluation covers --eval-max-views)."""

    def __init__(self, cfg: TrainConfig, writer) -> None:
        self.cfg, self.writer = cfg, writer
        self.seconds, self.count = 0.0, 0  # spent evaluating so far
        self.compiling = 0.0  # of those seconds, compiling (the first evaluation's, mostly)
        self.views = None
        start = time.perf_counter()
        if cfg.eval.eval_every and cfg.eval.eval_every < cfg.schedule.n_iters:
            self.views = data.load_views(
                cfg.data.dataset_path, cfg.eval.eval_split, downscale=cfg.data.downscale,
                max_views=cfg.eval.eval_every_views, drop_missing=cfg.data.drop_missing_images,
            )  # fmt: skip
        self.load_seconds = time.perf_counter() - start  # reading its views

    def run(self, state: TrainState, step: int) -> float:
        """Evaluate (every process renders its share) and log (process 0); returns the
        seconds it took."""
        start, compiled = timing.clock(), timing.COMPILES["other"]
        views = seen_from_refined(self.views, state.poses, self.cfg.eval.eval_split,
                                  self.cfg.eval.eval_every_views)  # fmt: skip
        metrics, previews = evaluate_views(state, self.cfg, views, None)
        seconds = timing.clock() - start
        self.seconds += seconds
        self.compiling += timing.COMPILES["other"] - compiled
        self.count += 1
        if self.writer is None:
            return seconds
        tag = f"{self.cfg.eval.eval_split}_during_training"
        self.writer.add_scalar(f"{tag}/psnr", metrics["psnr"], step)
        self.writer.add_scalar(f"{tag}/ssim", metrics["ssim"], step)
        if "lpips" in metrics:
            self.writer.add_scalar(f"{tag}/lpips", metrics["lpips"], step)
        for i, out in enumerate(previews):
            self.writer.add_image(f"{tag}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                                  dataformats="HWC")  # fmt: skip
            self.writer.add_image(f"{tag}/depth_{i}", out["depth_vis"], step, dataformats="HWC")
        tqdm.write(f"step {step}: {self.cfg.eval.eval_split} PSNR {metrics['psnr']:.2f} dB over "
                   f"{metrics['n_views']} views ({seconds:.1f} s)")  # fmt: skip
        return seconds

    def report(self) -> dict:
        """For metrics.json: the seconds spent evaluating during training, and compiling."""
        return {"eval_during_training_seconds": self.seconds,
                "eval_during_training_compile_seconds": self.compiling}  # fmt: skip

    def per_step(self) -> float:
        """Seconds of evaluation per training step, as measured so far, less their
        compilations: the first evaluation compiles its renders, the later ones do not."""
        if not self.count:
            return 0.0
        return max(self.seconds - self.compiling, 0.0) / self.count / self.cfg.eval.eval_every


def finish(
    state: TrainState, cfg: TrainConfig, writer, train_seconds: float,
    load_seconds: float, counts: dict | None = None,
) -> dict:
    """Evaluate on cfg.eval.eval_split, log to TensorBoard, write metrics.json (with the
    seconds spent training and loading the training and evaluation images)."""
    load_start = time.perf_counter()
    views = data.load_views(
        cfg.data.dataset_path, cfg.eval.eval_split, downscale=cfg.data.downscale,
        max_views=cfg.eval.eval_max_views, drop_missing=cfg.data.drop_missing_images,
    )
    # Every process renders (the rays are split over all devices); process 0 writes.
    primary = parallel.is_primary()
    out_dir = Path(cfg.run.run_dir) / "renders" if primary else None
    load_seconds += time.perf_counter() - load_start
    views = seen_from_refined(views, state.poses, cfg.eval.eval_split, cfg.eval.eval_max_views)
    metrics, previews = evaluate_views(state, cfg, views, out_dir)
    metrics = {"split": cfg.eval.eval_split, "downscale": cfg.data.downscale,
               "train_seconds": train_seconds, "load_seconds": load_seconds,
               **(counts or {}), **metrics}  # fmt: skip
    if not primary:
        return metrics
    step = metrics["step"]
    writer.add_scalar(f"{cfg.eval.eval_split}/psnr", metrics["psnr"], step)
    writer.add_scalar(f"{cfg.eval.eval_split}/ssim", metrics["ssim"], step)
    if "lpips" in metrics:
        writer.add_scalar(f"{cfg.eval.eval_split}/lpips", metrics["lpips"], step)
    for i, out in enumerate(previews):
        writer.add_image(f"{cfg.eval.eval_split}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                         dataformats="HWC")  # fmt: skip
        writer.add_image(f"{cfg.eval.eval_split}/depth_{i}", out["depth_vis"], step,
                         dataformats="HWC")  # fmt: skip
    writer.close()
    finite = all(np.isfinite(metrics[k]) for k in ("psnr", "ssim"))
    # Non-finite numbers are written as null: the file stays valid JSON.
    saved = {k: None if isinstance(v, float) and not np.isfinite(v) else v
             for k, v in metrics.items()}  # fmt: skip
    outputs.write_json(Path(cfg.run.run_dir) / "metrics.json", saved)
    if not finite:
        raise TrainingError(
            f"the {cfg.eval.eval_split} metrics are not finite (PSNR {metrics['psnr']}, SSIM "
            f"{metrics['ssim']}): the model diverged; lower --lr-grid / --lr-network and "
            f"train again, or --resume from an earlier checkpoint in {cfg.run.run_dir}"
        )
    print(
        f"{cfg.eval.eval_split}: {summary(metrics)} over "
        f"{metrics['n_views']} views; trained {train_seconds / 60:.1f} min to step {step}; "
        f"model {metrics['model_mb']:.1f} MB"
    )
    print(f"{cfg.run.run_dir}: metrics.json, renders/ (the {cfg.eval.eval_split} views, RGB and "
          "depth), log.jsonl and tensorboard/ (curves), checkpoints/ (for --resume, render_360.py, "
          "tensorf.evaluate)")  # fmt: skip
    return metrics
