"""The live viewer's costs: seconds per frame at 128^2 and 512^2 on a trained run (from its
home view, as a browser first sees it), and what --viewer costs training when no browser is
connected (the same short lego `quick` run with and without it, alternating).

python benchmarks/viewer.py --run-dir runs/bench_quick            # frame times
python benchmarks/viewer.py --overhead [--repeats 2]              # training overhead
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, header

from tensorf.train import checkpoint
from tensorf.viewer.rendering import frame_intrinsics, home_view
from tensorf.viewer.server import FieldViewer

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--run-dir", type=Path, help="a trained run, for the frame times")
parser.add_argument("--frames", type=int, default=5, help="frames timed per size")
parser.add_argument("--overhead", action="store_true", help="time training with and without")
parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating")
parser.add_argument("--with-first", action="store_true", help="start with the --viewer run")
args = parser.parse_args()

if args.run_dir:
    header(f"viewer frames, {args.run_dir}")
    cfg, state = checkpoint.load_run(args.run_dir)
    cameras = checkpoint.load_cameras(args.run_dir)
    viewer = FieldViewer(cfg, cameras, "127.0.0.1", 0)
    viewer.show(state, int(state.step))
    home = home_view(cfg, cameras)
    c2w = home.c2w()
    for size in (128, 512):
        k = frame_intrinsics(home.fov, 1.0, size)
        for mode in ("RGB", "depth"):
            viewer.render(c2w, k, mode)  # compiles
            start = time.perf_counter()
            for _ in range(args.frames):
                viewer.render(c2w, k, mode)
            seconds = (time.perf_counter() - start) / args.frames
            print(f"{size}x{size} {mode}: {seconds:.3f} s/frame ({1 / seconds:.1f} frames/s)")
    viewer.close()

if args.overhead:
    header("training with --viewer (no browser) against without")
    short = ["--n-iters", "800", "--upsample-steps", "200", "300", "400", "--mask-steps", "200",
             "300", "500", "--eval-max-views", "1", "--eval-every", "0"]  # fmt: skip
    seconds = {"without": [], "with": []}
    pair = [("without", []), ("with", ["--viewer", "--viewer-port", "0"])]
    for i in range(args.repeats):
        # Which goes first alternates: this VM's speed drifts within minutes.
        for kind, extra in pair[::-1] if (i % 2 == 1) != args.with_first else pair:
            run = ROOT / "runs" / f"bench_viewer_{kind}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, str(ROOT / "train.py"), "quick", "--run-dir", str(run),
                   *short, *extra]  # fmt: skip
            subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
            seconds[kind].append(json.loads((run / "metrics.json").read_text())["train_seconds"])
            print(f"{kind} --viewer: {seconds[kind][-1]:.1f} s", flush=True)
    without, with_ = (sum(seconds[k]) / len(seconds[k]) for k in ("without", "with"))
    print(f"mean {without:.1f} s without, {with_:.1f} s with: overhead "
          f"{100 * (with_ / without - 1):+.1f}%")  # fmt: skip
