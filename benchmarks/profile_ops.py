"""Where the time of one jitted call goes, per XLA operation (fusion, gather, scatter, dot):
a training step of a preset at its initial grid, or with --run-dir one render chunk of a
trained run's first test view. The figures come from a jax.profiler trace of a few calls;
each operation is named with the JAX operation it came from.

    python benchmarks/profile_ops.py [--preset paper] [--run-dir RUN] [--calls 3] [--top 20]
"""

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import header

from tensorf import data, parallel
from tensorf.field import decomposition
from tensorf.geometry.cameras import pixel_rays
from tensorf.presets import PRESETS
from tensorf.render import image, sampling
from tensorf.train import checkpoint, ray_pool, steps, train_state
from tensorf.train.ray_pool import make_pool

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="paper", help="train step of this preset")
parser.add_argument("--run-dir", type=Path, help="profile a render chunk of this run instead")
parser.add_argument("--calls", type=int, default=3, help="calls traced (after two untimed)")
parser.add_argument("--top", type=int, default=20, help="operations listed")
args = parser.parse_args()
mesh = parallel.data_mesh()


def train_call():
    cfg = PRESETS[args.preset][1]
    pool = make_pool(data.load_views(cfg.data.dataset_path, "train"))
    state = parallel.replicate(train_state.init_state(cfg), mesh)
    settings = train_state.settings_for(cfg, state)
    batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, 0, mesh)
    for _ in range(3):  # let the buffers settle to their working size
        state, metrics = steps.train_step(state, batch, cfg, settings, mesh)
        peaks = {f"{k}_capacity": int(metrics[f"{k}_peak"]) for k in ("density", "appearance")}
        settings = sampling.fit_capacity(settings, peaks, shrink=True)
    hyper, spec = steps.Hyper.of(cfg), steps.StepSpec.of(cfg)
    lowered = steps.jit_train_step.lower(state, batch, hyper, spec, settings, mesh)
    hlo = lowered.compile().as_text()

    def call():  # the step donates its state: each call takes the previous one's
        nonlocal state
        state, metrics = steps.train_step(state, batch, cfg, settings, mesh)
        jax.block_until_ready(metrics)

    return f"train step, preset {args.preset}", call, hlo


def render_call():
    cfg, state = checkpoint.load_run(args.run_dir)
    views = data.load_views(cfg.data.dataset_path, "test", cfg.data.downscale, max_views=1)
    settings = train_state.settings_for(cfg, state, sampling.ndc_for(cfg.render, views.intrinsics))
    _, settings = image.render_image(state.params, cfg.model, settings, state.aabb,
                                      state.mask, views.c2w[0], views.camera(0))  # fmt: skip
    params = {**state.params, "density": decomposition.bake(state.params["density"])}
    intr = views.camera(0)
    pixels = np.arange(intr.height * intr.width)
    c2w = jnp.asarray(views.c2w[0], jnp.float32)[None]
    rays = pixel_rays(c2w, pixels % intr.width, pixels // intr.width, intr)
    origins, dirs = (np.asarray(x) for x in rays)
    # As render_image does: the rays through the occupied box, shuffled.
    hit = np.asarray(image._reaches_occupied(origins, dirs, settings))
    order = np.random.default_rng(0).permutation(pixels[hit])[: cfg.render.chunk]
    chunk = parallel.split_rows(mesh, origins[order], dirs[order])
    call_args = (params, state.aabb, state.mask, *chunk, cfg.model, settings, mesh)
    hlo = image._render_chunk.lower(*call_args).compile().as_text()
    title = f"render chunk of {len(order)} rays, {args.run_dir}"
    return title, lambda: jax.block_until_ready(image._render_chunk(*call_args)), hlo


title, call, hlo = render_call() if args.run_dir else train_call()
header(f"operations of one {title}, mean of {args.calls} calls")
for _ in range(2):
    call()
with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.calls):
        call()
    jax.profiler.stop_trace()
    (trace,) = Path(trace_dir).glob("**/*.trace.json.gz")
    events = json.load(gzip.open(trace))["traceEvents"]
# The compiled program names each operation's origin: instruction name -> JAX op_name.
origin = {}
for m in re.finditer(r"^\s*%?([\w.-]+) = .*?op_name=\"([^\"]*)\"", hlo, re.M):
    origin.setdefault(m[1], m[2][-70:])
micros = collections.Counter()
for e in events:
    if e.get("ph") == "X" and e["name"] in origin:
        micros[e["name"]] += e.get("dur", 0)
total = sum(micros.values())
print(f"{total / args.calls / 1000:.1f} ms per call in XLA operations")
for name, us in micros.most_common(args.top):
    print(f"{us / args.calls / 1000:8.1f} ms  {name[:32]:32s} {origin[name]}")
