"""Evaluation speed and exactness of the renderer on a trained run: the same test views
rendered as evaluation does (the fast way, shading only above --render.image-threshold),
the fast way at the training threshold (rays that miss the alpha mask's occupied box are
background, the others march only through it, in two passes) and the reference way
(every ray through the whole aabb).

python benchmarks/render_speed.py --run-dir R [--views 10]
"""

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from common import header

from tensorf import data
from tensorf.eval.scoring import psnr
from tensorf.render.image import render_image
from tensorf.render.sampling import image_settings, ndc_for
from tensorf.train import checkpoint
from tensorf.train.train_state import settings_for

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--run-dir", type=Path, required=True)
parser.add_argument("--views", type=int, default=10, help="evenly spaced test views")
args = parser.parse_args()

header(f"render speed, {args.run_dir}, {args.views} test views")
cfg, state = checkpoint.load_run(args.run_dir)
views = data.load_views(cfg.data.dataset_path, "test", cfg.data.downscale, max_views=args.views)
fast = settings_for(cfg, state, ndc_for(cfg.render, views.intrinsics))
ways = {"images": image_settings(fast, cfg.render), "fast": fast,
        "reference": dataclasses.replace(fast, occupied=None, window=0)}
print(f"# {fast.n_samples} samples/ray through the aabb, {fast.window or fast.n_samples} "
      f"through the occupied box")  # fmt: skip
images = {}
for name, settings in ways.items():
    settings = render_image(state.params, cfg.model, settings, state.aabb, state.mask,
                            views.c2w[0], views.camera(0), cfg.render.chunk)[1]  # fmt: skip
    start, images[name] = time.perf_counter(), []
    for i in range(views.n_views):
        out, settings = render_image(state.params, cfg.model, settings, state.aabb, state.mask,
                                     views.c2w[i], views.camera(i), cfg.render.chunk)  # fmt: skip
        images[name].append(out["rgb"])
    seconds = (time.perf_counter() - start) / views.n_views
    score = np.mean([psnr(rgb, gt) for rgb, gt in zip(images[name], views.images, strict=True)])
    print(f"{name}: {seconds:.2f} s/view, PSNR {score:.3f} dB")
for name in ("images", "fast"):
    diff = max(np.abs(a - b).max() for a, b in zip(images[name], images["reference"], strict=True))
    print(f"largest pixel difference, {name} against reference: {diff:.2e}")
