"""Density lookups, forward + backward: through the dense volume vs plane/line lookups, for
grid sizes and point counts on both sides of tensor_vm.DENSE_VOXELS_PER_POINT.

    python benchmarks/density_lookup.py [--repeats 5]
"""

import argparse
import time

import jax
from common import header

from tensorf import tensor_vm

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
header(f"density lookups, fwd + bwd, 16 components; density_feature switches at "
       f"{tensor_vm.DENSE_VOXELS_PER_POINT} voxels/point")  # fmt: skip


def through_volume(grid, xyz):
    return tensor_vm.interp_volume(tensor_vm.dense_volume(grid), xyz)


def through_lookups(grid, xyz):
    return tensor_vm.vm_features(grid, xyz).sum(1)


def seconds(fn, *inputs) -> float:
    jax.block_until_ready(fn(*inputs))  # compile
    start = time.perf_counter()
    for _ in range(args.repeats):
        out = fn(*inputs)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / args.repeats


for res, n in [(128, 1310720), (128, 131072), (200, 600000), (200, 150000), (300, 600000),
               (300, 150000)]:  # fmt: skip
    grid = tensor_vm.init_vm(jax.random.key(0), (res,) * 3, (16, 16, 16), 0.1)
    xyz = jax.random.uniform(jax.random.key(1), (n, 3), minval=-1, maxval=1)
    weights = jax.random.normal(jax.random.key(2), (n,))
    times = {}
    for name, feature in (("dense", through_volume), ("plane/line", through_lookups)):

        def loss(g, x, w, feature=feature):
            return (jax.nn.softplus(feature(g, x) - 10) * w).sum()

        times[name] = seconds(jax.jit(jax.grad(loss)), grid, xyz, weights)
    print(f"{res}^3, {n} points ({res**3 / n:.1f} voxels/point): dense {times['dense']:.3f} s, "
          f"plane/line {times['plane/line']:.3f} s")  # fmt: skip
