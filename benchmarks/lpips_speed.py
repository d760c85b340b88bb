"""Seconds per view of LPIPS (what tensorf.evaluate adds to each view), per network and
image size, after the one compilation per size (timed apart).

python benchmarks/lpips_speed.py [--repeats 5]
"""

import argparse
import time

import numpy as np
from common import header

from tensorf.eval.lpips import lpips

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

header(f"LPIPS seconds per view, median of {args.repeats}")
rng = np.random.default_rng(0)
for net in ("alex", "vgg"):
    # lego as shipped here, fern at images_8, lego at the paper's size
    for width, height in ((400, 400), (504, 378), (800, 800)):
        a, b = rng.uniform(0, 1, (2, height, width, 3)).astype(np.float32)
        start = time.perf_counter()
        lpips(a, b, net)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            lpips(a, b, net)
            times.append(time.perf_counter() - start)
        print(f"{net} {width}x{height}: {np.median(times):.3f} s per view "
              f"(first call, compiling: {first:.1f} s)", flush=True)  # fmt: skip
