"""`unbounded-quick` on a real capture under the same budget, in variants (by default with
scene contraction and without it: the same -2..2 box, taken as world space).

Trains each variant for --minutes; prints held-out PSNR / SSIM, the training PSNR (the mean
of the batch PSNRs logged over the last tenth of the run) and the gap between the two, the
share of the time spent loading images, peak RSS, and writes an orbit video of each.

python benchmarks/unbounded.py [--minutes 15] [--dataset-path ../shared/data/nerf/fox]
    [--variant "NAME=OPTIONS" ...] [--no-video]

e.g. --variant preset= --variant "codes=--model.appearance-codes 16" compares the preset with an
option on.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time

from common import ROOT, header

from tensorf.data import data_dir

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--minutes", type=float, default=15.0)
parser.add_argument("--dataset-path", default=str(data_dir() / "nerf" / "fox"))
parser.add_argument("--runs", default=str(ROOT / "runs"), help="where the run dirs go")
parser.add_argument("--variant", action="append", metavar="NAME=OPTIONS",
                    help="train.py options of one variant (repeat; default: contracted, and "
                    "plain box = --render.no-contract)")  # fmt: skip
parser.add_argument("--no-video", action="store_true", help="skip the orbit videos")
args = parser.parse_args()

header(f"unbounded-quick variants, --max-minutes {args.minutes}")
given = args.variant or ["contracted=", "plain box=--render.no-contract"]
variants = {name: options.split() for name, _, options in (v.partition("=") for v in given)}
rows = []
for name, options in variants.items():
    run_dir = f"{args.runs}/bench_unbounded_{name.replace(' ', '_')}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "train.py"), "unbounded-quick", "--dataset-path",
           args.dataset_path, "--drop-missing-images", "--run-dir", run_dir,
           "--max-minutes", str(args.minutes), *options]  # fmt: skip
    print("# command:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if not args.no_video:
        video = [sys.executable, str(ROOT / "render_360.py"), "--run-dir", run_dir, "--out",
                 f"{run_dir}/orbit.mp4", "--frames", "60", "--side-by-side"]  # fmt: skip
        subprocess.run(video, check=True, cwd=ROOT)
    m = json.loads((ROOT / run_dir / "metrics.json").read_text())
    logged = [json.loads(line) for line in (ROOT / run_dir / "log.jsonl").read_text().splitlines()]
    last = [line["psnr"] for line in logged if line["step"] > 0.9 * m["step"]]
    rows.append((name, m, wall, sum(last) / len(last)))
# Children's peak RSS is the largest of them, so it is the worst of the runs.
peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
for name, m, wall, train in rows:
    print(f"{name:>10}: test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} over {m['n_views']} "
          f"views; training PSNR {train:.2f} dB (gap {train - m['psnr']:.2f} dB); "
          f"step {m['step']}, train {m['train_seconds'] / 60:.1f} min, loading images "
          f"{m['load_seconds']:.1f} s ({100 * m['load_seconds'] / wall:.1f}% of the run's "
          f"{wall / 60:.1f} min), render {m['seconds_per_image']:.2f} s/image")  # fmt: skip
print(f"peak RSS (largest run) {peak_gb:.2f} GB; videos: {args.runs}/bench_unbounded_*/orbit.mp4")
