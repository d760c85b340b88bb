"""Train a preset under a wall-clock budget; print test PSNR / SSIM and peak RSS.

python benchmarks/budget.py quick [--minutes 15] [--run-dir runs/bench_quick] [extra options]
python benchmarks/budget.py llff-quick --dataset-path ../shared/data/nerf_llff_data/fern
python benchmarks/budget.py quick-cp --eval-max-views 20   # then tensorf.evaluate for all 200
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time

from common import ROOT, header

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("preset", nargs="?", default="quick")
parser.add_argument("--minutes", type=float, default=15.0)
parser.add_argument("--run-dir", default=None, help="default: runs/bench_<preset>")
args, extra = parser.parse_known_args()
run_dir = args.run_dir or str(ROOT / "runs" / f"bench_{args.preset}")

header(f"{args.preset} preset, --max-minutes {args.minutes}, all test views")
shutil.rmtree(run_dir, ignore_errors=True)
cmd = [sys.executable, str(ROOT / "train.py"), args.preset, "--run-dir", run_dir,
       "--max-minutes", str(args.minutes), *extra]  # fmt: skip
print("# command:", " ".join(cmd), flush=True)
start = time.perf_counter()
subprocess.run(cmd, check=True, cwd=ROOT)
wall = time.perf_counter() - start
peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
m = json.loads((ROOT / run_dir / "metrics.json").read_text())
print(f"test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} over {m['n_views']} views; "
      f"step {m['step']}, train {m['train_seconds'] / 60:.1f} min, "
      f"render {m['seconds_per_image']:.2f} s/image, wall {wall / 60:.1f} min, "
      f"peak RSS {peak_gb:.2f} GB, model {m['model_mb']:.2f} MB; "
      f"{m['train_step_compiles']} train-step compilations, "
      f"{m['train_step_compile_seconds']:.0f} s")  # fmt: skip
