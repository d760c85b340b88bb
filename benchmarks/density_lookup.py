"""Density lookups, forward + backward: through the dense volume vs plane/line lookups, for
grid sizes, point counts and components per pair on both sides of the switch in
tensor_vm.density_feature (DENSE_VOXELS_PER_POINT_COMPONENT voxels per point and component).

    python benchmarks/density_lookup.py [--repeats 5]
"""

import argparse
import time

import jax
from common import header

from tensorf.field import tensor_vm

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
header(f"density lookups, fwd + bwd; density_feature switches at "
       f"{tensor_vm.DENSE_VOXELS_PER_POINT_COMPONENT:.2f} voxels/point/component")  # fmt: skip


def through_volume(grid, xyz):
    return tensor_vm.interp_built_volume(tensor_vm.dense_volume(grid), xyz)


def through_lookups(grid, xyz):
    return tensor_vm.vm_features(grid, xyz).sum(1)


def seconds(fn, *inputs) -> float:
    jax.block_until_ready(fn(*inputs))  # compile
    start = time.perf_counter()
    for _ in range(args.repeats):
        out = fn(*inputs)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / args.repeats


VM = (16, 16, 16)
LLFF = (16, 4, 4)  # the official LLFF density components, at llff-quick's grid sizes
CASES = [((128,) * 3, VM, 1310720), ((128,) * 3, VM, 131072), ((200,) * 3, VM, 600000),
         ((200,) * 3, VM, 150000), ((300,) * 3, VM, 600000), ((300,) * 3, VM, 150000),
         ((141, 157, 94), LLFF, 160000), ((199, 222, 133), LLFF, 200000),
         ((282, 314, 188), LLFF, 245000), ((282, 314, 188), LLFF, 120000)]  # fmt: skip
for res, components, n in CASES:
    grid = tensor_vm.init_vm(jax.random.key(0), res, components, 0.1)
    xyz = jax.random.uniform(jax.random.key(1), (n, 3), minval=-1, maxval=1)
    weights = jax.random.normal(jax.random.key(2), (n,))
    times = {}
    for name, feature in (("dense", through_volume), ("plane/line", through_lookups)):

        def loss(g, x, w, feature=feature):
            return (jax.nn.softplus(feature(g, x) - 10) * w).sum()

        times[name] = seconds(jax.jit(jax.grad(loss)), grid, xyz, weights)
    voxels = res[0] * res[1] * res[2]
    print(f"grid {res}, components {components}, {n} points ({voxels / n:.1f} voxels/point): "
          f"dense {times['dense']:.3f} s, plane/line {times['plane/line']:.3f} s")  # fmt: skip
