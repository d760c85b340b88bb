"""What the training loop costs beyond its step: the jitted step alone in a tight loop (the
same batch, already on the device) against `experiment.train` over the same steps and
shapes (no grid events), and the loop's compile seconds.

    python benchmarks/loop_overhead.py [--preset paper] [--tiny] [--steps 200] [--cpu-time]

--tiny: a 24^3 grid, 256 rays and the shipped 100x100 lego, a step of a few milliseconds on
a CPU, so that host overhead shows here as it does on a GPU. The loop's rate is taken from
log.jsonl after its first two log lines (compilation and buffer fitting left out).
--cpu-time: rates per CPU second of this process rather than per second of wall time, a
figure that holds when other work shares the cores (the host's work counts as the step's).
"""

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import jax
from common import header

from tensorf import data, experiment, parallel
from tensorf.config import ModelConfig, override
from tensorf.loop import monitor
from tensorf.presets import DEMO_SCENE, PRESETS
from tensorf.render.sampling import fit_capacity
from tensorf.train import ray_pool, steps, timing, train_state
from tensorf.train.ray_pool import make_pool

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="paper")
parser.add_argument("--tiny", action="store_true", help="a small grid and batch (see above)")
parser.add_argument("--steps", type=int, default=200, help="steps timed (after warm-up)")
parser.add_argument("--cpu-time", action="store_true", help="per CPU second (see above)")
args = parser.parse_args()
clock = time.process_time if args.cpu_time else time.perf_counter
timing.clock = clock  # the loop's rays/s in log.jsonl

cfg = PRESETS[args.preset][1]
if args.tiny:
    cfg = override(
        cfg, dataset_path=DEMO_SCENE, batch_size=256, grid_init=24, grid_final=24,
        model=ModelConfig(density_components=(4, 4, 4), appearance_components=(8, 8, 8)),
        render=dataclasses.replace(cfg.render, appearance_samples=4),
    )  # fmt: skip
log_every = max(args.steps // 10, 1)
warmup = 2 * log_every
# No grid events, one checkpoint (the last) and one view evaluated: the loop's own cost.
cfg = override(cfg, n_iters=warmup + args.steps, upsample_steps=(), mask_steps=(),
               log_every=log_every, checkpoint_every=warmup + args.steps,
               eval_every=0, eval_max_views=1, fill_budget=False,
               max_minutes=None)  # fmt: skip
mesh = parallel.data_mesh()
tiny = " --tiny" if args.tiny else ""
header(f"loop overhead: preset {args.preset}{tiny}, batch {cfg.optimiser.batch_size}, grid "
       f"{cfg.schedule.grid_init}^3, {args.steps} steps, {mesh.size} device(s)")  # fmt: skip

# The bare step: one batch, put on the device once, stepped on without reading anything.
pool = make_pool(data.load_views(cfg.data.dataset_path, "train"))
state = parallel.replicate(train_state.init_state(cfg), mesh)
settings = train_state.settings_for(cfg, state)
batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, 0, mesh)
for _ in range(3):  # compile, then let the buffers settle to their working size
    state, metrics = steps.train_step(state, batch, cfg, settings, mesh)
    peaks = {f"{k}_capacity": int(metrics[f"{k}_peak"]) for k in ("density", "appearance")}
    settings = fit_capacity(settings, peaks, shrink=True)
state, metrics = steps.train_step(state, batch, cfg, settings, mesh)
jax.block_until_ready(metrics)
start = clock()
for _ in range(args.steps):
    state, metrics = steps.train_step(state, batch, cfg, settings, mesh)
jax.block_until_ready(metrics)
bare = args.steps / (clock() - start)

with tempfile.TemporaryDirectory() as tmp:
    run_cfg = override(cfg, run_dir=Path(tmp) / "run")
    launch = time.perf_counter()
    metrics = experiment.train(run_cfg)
    wall = time.perf_counter() - launch
    lines = [json.loads(line) for line in (run_cfg.run.run_dir / monitor.LOG_FILE).open()]
seconds = sum(log_every * cfg.optimiser.batch_size / line["rays_per_s"] for line in lines[2:])
loop = (lines[-1]["step"] - lines[1]["step"]) / seconds

unit = "CPU s" if args.cpu_time else "s"
print(f"bare step: {bare:.1f} steps/{unit} ({bare * cfg.optimiser.batch_size:.0f} rays/{unit})")
print(f"loop: {loop:.1f} steps/{unit} ({loop * cfg.optimiser.batch_size:.0f} rays/{unit}), "
      f"ratio {loop / bare:.2f}")  # fmt: skip
# The compile seconds, stalled (the loop waited) and hidden (compiled ahead, see
# tensorf/ahead.py), and their counts; not the per-step lists.
compiled = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items()
                     if "compile" in k and not isinstance(v, list))  # fmt: skip
print(f"train: {wall:.1f} s from call to metrics; {compiled}")
