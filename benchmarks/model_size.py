"""Model size of every preset at its final grid, before any shrinking (an upper bound on
what metrics.json's model_mb reports for a finished run), in MB of 10^6 bytes.

python benchmarks/model_size.py
"""

import jax
import numpy as np
from common import header

from tensorf.field import field, tensor_vm
from tensorf.presets import PRESETS

header("model size per preset at its final grid (no shrinking)")
for name, (_, cfg) in PRESETS.items():
    aabb = np.reshape(cfg.schedule.aabb, (2, 3))
    resolution = tensor_vm.resolution_for_voxels(cfg.schedule.grid_final**3, aabb)
    shapes = jax.eval_shape(lambda cfg=cfg, r=resolution: field.init_params(
        jax.random.key(0), cfg.model, r))  # fmt: skip
    size = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes)) / 1e6
    print(f"{name:>10}: {cfg.model.decomposition} at {resolution}: {size:.1f} MB")
