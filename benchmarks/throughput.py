"""Training-step and render rays/s for a preset at its initial grid (default: `paper`, the
official 128^3 / 4096-ray setting), for a precision and a number of devices.

    python benchmarks/throughput.py [--preset paper] [--precision auto] [--devices N]
        [--cpu-devices N] [--steps 10] [--run-dir RUN]

Render rays/s is measured on test views of RUN if given, else on the benchmark's own
(barely trained) state, where little space is empty yet: a pessimistic figure.
"""

import argparse
import os
import time

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="paper")
parser.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16", "f16"])
parser.add_argument("--devices", type=int, help="devices to shard over (default: all)")
parser.add_argument("--cpu-devices", type=int, help="split the CPU into this many devices")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--run-dir", help="trained run to time rendering on (3 test views)")
args = parser.parse_args()
if args.cpu_devices:  # must be set before JAX starts
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"

import jax  # noqa: E402
from common import header  # noqa: E402

from tensorf import data, parallel  # noqa: E402
from tensorf.config import override  # noqa: E402
from tensorf.presets import PRESETS  # noqa: E402
from tensorf.render import sampling  # noqa: E402
from tensorf.render.image import render_image  # noqa: E402
from tensorf.render.sampling import fit_capacity  # noqa: E402
from tensorf.train import checkpoint, ray_pool, steps, train_state  # noqa: E402
from tensorf.train.ray_pool import make_pool  # noqa: E402

cfg = override(PRESETS[args.preset][1], precision=args.precision)
mesh = parallel.data_mesh(jax.devices()[: args.devices])
precision = sampling.precision(cfg.run)
header(f"throughput: preset {args.preset}, batch {cfg.optimiser.batch_size}, "
       f"grid {cfg.schedule.grid_init}^3, precision {precision}, "
       f"{mesh.size} device(s)")  # fmt: skip
pool = make_pool(data.load_views(cfg.data.dataset_path, "train"))
state = parallel.replicate(train_state.init_state(cfg), mesh)
settings = train_state.settings_for(cfg, state)


def step(state, settings):
    batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, int(state.step), mesh)
    return steps.train_step(state, batch, cfg, settings, mesh)


for _ in range(3):  # compile, then let the buffers settle to their working size
    state, metrics = step(state, settings)
    peaks = {f"{k}_capacity": int(metrics[f"{k}_peak"]) for k in ("density", "appearance")}
    settings = fit_capacity(settings, peaks, shrink=True)
state, metrics = step(state, settings)
jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(args.steps):
    state, metrics = step(state, settings)
jax.block_until_ready(metrics)
seconds = (time.perf_counter() - start) / args.steps
density, shaded = (int(metrics[k]) / cfg.optimiser.batch_size
                   for k in ("density_count", "appearance_count"))
print(f"train: {cfg.optimiser.batch_size / seconds:.0f} rays/s ({seconds:.3f} s/step, "
      f"{settings.n_samples} samples/ray, {density:.0f} density evals/ray, "
      f"{shaded:.1f} shaded samples/ray)")  # fmt: skip

if args.run_dir:
    render_cfg, run = checkpoint.load_run(args.run_dir)
    render_cfg = override(render_cfg, precision=args.precision)
else:
    render_cfg, run = cfg, state
views = data.load_views(render_cfg.data.dataset_path, "test", render_cfg.data.downscale,
                            max_views=4)
settings = train_state.settings_for(render_cfg, run)


def render(i, settings):
    return render_image(run.params, render_cfg.model, settings, run.aabb, run.mask, views.c2w[i],
                        views.intrinsics, mesh=mesh)[1]  # fmt: skip


settings = render(0, settings)  # compile and size the buffers
start = time.perf_counter()
for i in range(1, 4):
    settings = render(i, settings)
seconds = (time.perf_counter() - start) / 3
rays = views.height * views.width / seconds
source = args.run_dir or "the benchmark's state"
print(f"render: {rays:.0f} rays/s, {seconds:.2f} s/image ({views.height}x{views.width}, {source})")
