"""Training-step rays/s for a preset at its initial grid (default: `paper`, the official
128^3 / 4096-ray setting), and render seconds per test image of a trained run.

    python benchmarks/throughput.py [--preset paper] [--steps 10] [--run-dir RUN]
"""

import argparse
import time

import jax
from common import header

from tensorf import checkpoint, data, training
from tensorf.config import PRESETS
from tensorf.experiment import make_pool
from tensorf.render import fit_capacity, render_image

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--run-dir", help="trained run to time rendering on (3 test views)")
args = parser.parse_args()

cfg = PRESETS[args.preset][1]
header(f"throughput: preset {args.preset}, batch {cfg.batch_size}, grid {cfg.grid_init}^3")
pool = make_pool(data.load_views(cfg.dataset_path, "train"))
state = training.init_state(cfg)
settings = training.settings_for(cfg, state)
for _ in range(3):  # compile, then let the buffers settle to their working size
    state, metrics = training.train_step(state, pool, cfg, settings)
    counts = int(metrics["density_count"]), int(metrics["appearance_count"])
    settings = fit_capacity(settings, *counts, shrink=True)
state, metrics = training.train_step(state, pool, cfg, settings)
jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(args.steps):
    state, metrics = training.train_step(state, pool, cfg, settings)
jax.block_until_ready(metrics)
seconds = (time.perf_counter() - start) / args.steps
print(f"train: {cfg.batch_size / seconds:.0f} rays/s ({seconds:.2f} s/step, "
      f"{settings.n_samples} samples/ray, {counts[0] / cfg.batch_size:.0f} density evals/ray, "
      f"{counts[1] / cfg.batch_size:.1f} shaded samples/ray)")  # fmt: skip

if args.run_dir:
    run_cfg = checkpoint.load_config(args.run_dir)
    run = checkpoint.restore_latest(checkpoint.manager(args.run_dir), run_cfg)
    views = data.load_views(run_cfg.dataset_path, "test", run_cfg.downscale, max_views=4)
    settings = training.settings_for(run_cfg, run)

    def render(i, settings):
        return render_image(run.params, run_cfg.model, settings, run.aabb, run.mask,
                            views.c2w[i], views.focal, views.height, views.width)[1]  # fmt: skip

    settings = render(0, settings)  # compile and size the buffers
    start = time.perf_counter()
    for i in range(1, 4):
        settings = render(i, settings)
    seconds = (time.perf_counter() - start) / 3
    rays = views.height * views.width / seconds
    print(f"render: {seconds:.2f} s/image ({views.height}x{views.width}), {rays:.0f} rays/s")
