"""Test PSNR reached after given wall-clock training budgets (one run per budget).

python benchmarks/quality_vs_time.py [--preset quick] [--minutes 2 5 15] [--views 20]
    [extra train_lego.py options]
"""

import argparse
import json
import shutil
import subprocess
import sys

from common import ROOT, header

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--preset", default="quick")
parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 15.0])
parser.add_argument("--views", type=int, default=20, help="evenly spaced test views")
parser.add_argument("--run-root", default=str(ROOT / "runs" / "bench_time"))
args, extra = parser.parse_known_args()

header(f"quality vs time: {args.preset}, budgets {args.minutes} min, {args.views} test views")
for minutes in args.minutes:
    run_dir = f"{args.run_root}/{minutes:g}min"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "train_lego.py"), args.preset, "--run-dir", run_dir,
           "--max-minutes", str(minutes), "--eval-max-views", str(args.views), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = json.loads(open(f"{run_dir}/metrics.json").read())
    print(f"{minutes:5g} min: test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} at step "
          f"{m['step']} ({m['n_views']} views)", flush=True)  # fmt: skip
