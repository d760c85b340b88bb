"""How empty-space skipping and the top-k shading choices affect a trained run.

Renders test views of a run with: the alpha mask and the preset's k (both treatments of
the samples outside the top-k), k = every sample, and no alpha mask; prints PSNR and the
density evaluations / shaded samples per ray of each.

    python benchmarks/sampling.py --run-dir RUN [--views 10]
"""

import argparse
import dataclasses

import numpy as np
from common import header

from tensorf import data
from tensorf.eval.scoring import psnr
from tensorf.field import alpha_mask
from tensorf.render.image import render_image
from tensorf.train import checkpoint, train_state

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--run-dir", required=True)
parser.add_argument("--views", type=int, default=10)
args = parser.parse_args()

cfg = checkpoint.load_config(args.run_dir)
state = checkpoint.restore_latest(checkpoint.manager(args.run_dir), cfg)[0]
views = data.load_views(cfg.data.dataset_path, "test", cfg.data.downscale, max_views=args.views)
base = train_state.settings_for(cfg, state)
header(f"sampling: {args.run_dir}, step {int(state.step)}, {views.n_views} test views")
print(f"# grid {state.resolution}, {base.n_samples} samples/ray, k = {base.appearance_samples}")

everything = alpha_mask.everything(state.aabb)
variants = {
    "mask, top-k, renormalize": (state.mask, base),
    "mask, top-k, black": (state.mask, dataclasses.replace(base, unselected="black")),
    "mask, k = all samples": (state.mask, dataclasses.replace(base, appearance_samples=10**6)),
    "no mask, top-k": (everything, base),
}
for name, (mask, settings) in variants.items():
    psnrs, density, shaded = [], [], []
    for i in range(views.n_views):
        out, settings = render_image(
            state.params, cfg.model, settings, state.aabb, mask,
            views.c2w[i], views.intrinsics,
        )  # fmt: skip
        psnrs.append(psnr(out["rgb"], views.images[i]))
        density.append(out["density_evals_per_ray"])
        shaded.append(out["shaded_samples_per_ray"])
    print(
        f"{name:26s} PSNR {np.mean(psnrs):.3f} dB, density evals/ray {np.mean(density):6.1f}, "
        f"shaded samples/ray {np.mean(shaded):5.2f} (of {base.n_samples} samples/ray)"
    )
