"""Run in a process of its own, with XLA_FLAGS splitting the CPU into 4 devices: trains a
few steps (in two calls that draw their batches on the devices, as the training loop does)
and renders a view on 1 device and on 4, and prints how far apart they are as JSON
(tests/test_parallel.py asserts on it).

    python tests/parallel_check.py SCENE_DIR [APPEARANCE_CODES [refine-poses]]

With refine-poses the cameras' pose corrections are learned too (from the first step), and
compared with the parameters.
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
from synthetic import tiny_config

from tensorf import data, parallel
from tensorf.config import override
from tensorf.render.image import render_image
from tensorf.train import ray_pool, steps, train_state

assert len(jax.devices()) == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
scene = Path(sys.argv[1])
cfg = tiny_config(scene, scene / "unused")
codes = int(sys.argv[2]) if len(sys.argv) > 2 else 0
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, appearance_codes=codes))
if sys.argv[3:] == ["refine-poses"]:
    cfg = override(cfg, refine_poses=True, pose_warmup_steps=0)
views = data.load_views(scene, "train")
results = {}
for n in (1, 4):
    mesh = parallel.data_mesh(jax.devices()[:n])
    pool = ray_pool.make_pool(views).on(mesh, cfg.run.seed)
    state = parallel.replicate(train_state.init_state(cfg, views.n_views), mesh)
    settings = train_state.settings_for(cfg, state)
    hyper, spec = steps.Hyper.of(cfg), steps.StepSpec.of(cfg)
    losses = []
    for k in (2, 3):  # as the training loop runs them: batches drawn on the devices
        state, metrics = steps.train_steps(state, pool, k, hyper, spec, settings, mesh)
        losses += [float(x) for x in metrics["loss"][:k]]
    image, _ = render_image(
        state.params, cfg.model, settings, state.aabb, state.mask, views.c2w[0],
        views.intrinsics, chunk=256, mesh=mesh,
    )  # fmt: skip
    sharding = state.params["density"].planes[0].sharding
    leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.poses))]
    results[n] = (losses, leaves, image["rgb"], len(sharding.device_set))

(loss_1, params_1, rgb_1, devices_1), (loss_4, params_4, rgb_4, devices_4) = results.values()
diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(params_1, params_4, strict=True)])
print(json.dumps({
    "losses_1": loss_1, "losses_4": loss_4,
    "param_max_diff": float(diffs.max()), "param_frac_above_1e-6": float((diffs > 1e-6).mean()),
    "rgb_max_diff": float(np.abs(rgb_1 - rgb_4).max()),
    "devices": [devices_1, devices_4],
}))  # fmt: skip
