"""Test-set metrics (PSNR, SSIM) and renders of a trained run.

python -m tensorf.evaluate --run-dir R --dataset-path P --split S [--max-views N]
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import dm_pix
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import tyro
from tqdm import tqdm

from tensorf import checkpoint, cli, data
from tensorf.config import TrainConfig
from tensorf.render import render_image
from tensorf.training import TrainState, settings_for


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a - b) ** 2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with the standard 11x11 Gaussian window (sigma 1.5), as the official code."""
    return float(dm_pix.ssim(jnp.asarray(a), jnp.asarray(b)))


def depth_image(depth: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """(H, W) expected depth -> (H, W) uint8, near = bright, empty pixels black."""
    fg = acc > 0.5
    if not fg.any():
        return np.zeros(depth.shape, np.uint8)
    d = depth / np.maximum(acc, 1e-6)
    lo, hi = np.percentile(d[fg], [1, 99])
    vis = 1.0 - np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.where(fg, 0.2 + 0.8 * vis, 0.0) * 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def evaluate_views(
    state: TrainState, cfg: TrainConfig, views: data.Views, out_dir: Path | None
) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """Render every view, compare with its image; write PNGs to out_dir if given.

    Returns the metrics and the renders of the first three views (for TensorBoard).
    """
    settings = settings_for(cfg, state)
    psnrs, ssims, previews = [], [], []
    start = time.perf_counter()
    for i in tqdm(range(views.n_views), desc="evaluating", unit="view", leave=False):
        out, settings = render_image(
            state.params, cfg.model, settings, state.aabb, state.mask,
            views.c2w[i], views.focal, views.height, views.width, cfg.render.chunk,
        )  # fmt: skip
        psnrs.append(psnr(out["rgb"], views.images[i]))
        ssims.append(ssim(out["rgb"], views.images[i]))
        if i < 3:
            previews.append(out)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            iio.imwrite(out_dir / f"{i:03d}_rgb.png", to_uint8(out["rgb"]))
            iio.imwrite(out_dir / f"{i:03d}_depth.png", depth_image(out["depth"], out["acc"]))
    seconds = time.perf_counter() - start
    metrics = {
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "n_views": views.n_views,
        "step": int(state.step),
        "seconds_per_image": seconds / views.n_views,
        "psnr_per_view": [round(p, 3) for p in psnrs],
    }
    return metrics, previews


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a finished run on any split of any Blender-format dataset folder."""

    run_dir: Path
    """Run directory written by train_lego.py (latest checkpoint is used)."""
    dataset_path: Path | None = None
    """Dataset folder (default: the one the run was trained on)."""
    split: str = "test"
    """Split to evaluate: a transforms_<split>.json must exist in the dataset folder."""
    max_views: int | None = None
    """Evaluate this many evenly spaced views (default: all)."""
    downscale: int | None = None
    """Image downscale factor (default: the run's)."""
    save_renders: bool = True
    """Write the rendered RGB and depth PNGs to <run_dir>/renders_<split>/."""


def evaluate_run(args: EvaluateArgs) -> dict:
    cfg = checkpoint.load_config(args.run_dir)
    views = data.load_views(
        args.dataset_path or cfg.dataset_path,
        args.split,
        downscale=cfg.downscale if args.downscale is None else args.downscale,
        max_views=args.max_views,
    )
    state = checkpoint.restore_latest(checkpoint.manager(args.run_dir), cfg)
    out_dir = args.run_dir / f"renders_{args.split}" if args.save_renders else None
    metrics, _ = evaluate_views(state, cfg, views, out_dir)
    metrics = {"split": args.split, **metrics}
    (args.run_dir / f"metrics_{args.split}.json").write_text(json.dumps(metrics, indent=2))
    print(f"{args.split}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} "
          f"over {metrics['n_views']} views")  # fmt: skip
    return metrics


if __name__ == "__main__":
    cli.run_main(lambda: evaluate_run(tyro.cli(EvaluateArgs)))
