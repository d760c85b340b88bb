"""Adam's moments on upsample: re-created (official) vs resampled onto the new grid.

Trains the same short run both ways and prints the test PSNR of each.

    python benchmarks/adam_upsample.py [--downscale 4] [--n-iters 1500] [--views 50]
"""

import argparse
import json
import shutil
import subprocess
import sys

from common import ROOT, header

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="quick")
parser.add_argument("--downscale", type=int, default=4)
parser.add_argument("--n-iters", type=int, default=1500)
parser.add_argument("--views", type=int, default=50)
parser.add_argument("--run-root", default=str(ROOT / "runs" / "bench_adam"))
args = parser.parse_args()

header(f"adam on upsample: {args.preset}, downscale {args.downscale}, {args.n_iters} steps")
for mode in ("reset", "resample"):
    run_dir = f"{args.run_root}/{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "train_lego.py"), args.preset, "--run-dir", run_dir,
           "--downscale", str(args.downscale), "--n-iters", str(args.n_iters),
           "--eval-max-views", str(args.views), "--adam-on-upsample", mode,
           "--upsample-steps", *(str(args.n_iters * k // 8) for k in (1, 2, 3)),
           "--mask-steps", *(str(args.n_iters * k // 8) for k in (1, 2))]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = json.loads(open(f"{run_dir}/metrics.json").read())
    print(f"{mode:9s} test PSNR {m['psnr']:.3f} dB, SSIM {m['ssim']:.4f} "
          f"({m['n_views']} views, {m['train_seconds']:.0f} s)")  # fmt: skip
