"""Posing a real capture from scratch: the fox's 50 photos through tensorf-process.

Prints the registered count, minutes per stage, the mean reprojection error, and the
cameras' error against the fox's own transforms.json (instant-ngp's COLMAP poses) after
the similarity transform that best aligns our camera centres with theirs: rotation error
(degrees), centre error (% of the cameras' median distance from their centroid), the
focal length's relative difference, and the angle between our ray and theirs through the
same pixel (every pixel at an eighth of the size, lens distortion undone). The rotation
error includes what a different principal point turns the camera by (ours stays at the
image centre, COLMAP's default; theirs was refined), which the ray angle does not. The
CPU's load average before and after is printed too: the stage times are only comparable
on an otherwise idle machine.

python benchmarks/process.py [--dataset-path ../shared/data/nerf/fox] [--out runs/process_fox]
                             [--reuse]   # compare an earlier run's poses, without posing again
                             [--train-steps 5000]  # then train on both and compare PSNR
                             [--train-minutes 15]  # the same on a time budget each

--train-steps N: train unbounded-quick for N steps on our poses and on the given ones, with
the same training photos and the same held-out photos (the given capture's: every 8th of
its frames), and print both held-out PSNRs. A fixed number of steps rather than a time
budget, so that the comparison holds on a machine shared with other work.
--train-minutes M: the same with the preset's own run length, --max-minutes M (the issue's
protocol: same preset, same budget), on a machine with no other work.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, header

from tensorf import process
from tensorf.data import data_dir, load_views
from tensorf.geometry.cameras import camera_directions, similarity

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset-path", default=str(data_dir() / "nerf" / "fox"))
parser.add_argument("--out", default=str(ROOT / "runs" / "process_fox"))
parser.add_argument("--reuse", action="store_true", help="compare OUT's poses, do not pose")
parser.add_argument("--train-steps", type=int, default=0, help="train on both; 0: do not")
parser.add_argument("--train-minutes", type=float, default=0.0,
                    help="train on both with --max-minutes; 0: do not")  # fmt: skip
args = parser.parse_args()


scene = Path(args.dataset_path)
settings = process.ProcessArgs(source=scene / "images", out=Path(args.out), overwrite=True)
header("tensorf-process on the fox's photos")
print(f"# settings: {settings}")
if not args.reuse:
    print(f"# load average before: {os.getloadavg()}", flush=True)
    start = time.perf_counter()
    report = process.process(settings)
    wall = time.perf_counter() - start
    print(f"# load average after: {os.getloadavg()}")
    for line in report.lines():
        print(line)
    minutes = ", ".join(f"{stage} {s / 60:.2f}" for stage, s in report.seconds.items())
    print(f"minutes per stage: {minutes} (wall {wall / 60:.2f})")

ours = load_views(settings.out, "all", downscale=8)
given = load_views(scene, "all", downscale=8, drop_missing=True)
by_name = {Path(name).name: i for i, name in enumerate(given.names)}
shared = [(i, by_name[Path(name).name]) for i, name in enumerate(ours.names)
          if Path(name).name in by_name]  # fmt: skip
a = np.asarray(ours.c2w, np.float64)[[i for i, _ in shared]]
b = np.asarray(given.c2w, np.float64)[[j for _, j in shared]]
scale, rotation, shift = similarity(a[:, :3, 3], b[:, :3, 3])
centres = scale * a[:, :3, 3] @ rotation.T + shift
cosine = (np.einsum("nij,nij->n", rotation @ a[:, :3, :3], b[:, :3, :3]) - 1.0) / 2.0
angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
spread = np.median(np.linalg.norm(b[:, :3, 3] - b[:, :3, 3].mean(0), axis=-1))
centre_error = np.linalg.norm(centres - b[:, :3, 3], axis=-1) / spread * 100
# Both loaded at an eighth of the size: the focal lengths compare at the same scale.
focal = ours.camera(0).fx / given.camera(0).fx - 1.0
rays = []
for (i, j), c2w_ours, c2w_given in zip(shared, a, b, strict=True):
    mine = camera_directions(ours.camera(i)).reshape(-1, 3) @ (rotation @ c2w_ours[:3, :3]).T
    theirs = camera_directions(given.camera(j)).reshape(-1, 3) @ c2w_given[:3, :3].T
    mine /= np.linalg.norm(mine, axis=-1, keepdims=True)
    theirs /= np.linalg.norm(theirs, axis=-1, keepdims=True)
    rays.append(np.degrees(np.arccos(np.clip(np.sum(mine * theirs, -1), -1.0, 1.0))))
rays = np.concatenate(rays)
print(f"against the given poses ({len(shared)} photos in both): rotation error median "
      f"{np.median(angles):.3f} deg, max {angles.max():.3f} deg; centre error median "
      f"{np.median(centre_error):.2f}%, max {centre_error.max():.2f}% of the camera spread; "
      f"focal length {focal * 100:+.2f}%; ray through the same pixel: median "
      f"{np.median(rays):.3f} deg, 99th percentile {np.percentile(rays, 99):.3f} deg")  # fmt: skip


def train(dataset: Path, run_dir: Path) -> dict:
    length = (["--max-minutes", str(args.train_minutes)] if args.train_minutes
              else ["--n-iters", str(args.train_steps)])  # fmt: skip
    cmd = [sys.executable, str(ROOT / "train.py"), "unbounded-quick", "--dataset-path",
           str(dataset), "--run-dir", str(run_dir), *length, "--drop-missing-images"]  # fmt: skip
    print(f"# {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics, "wall_minutes": (time.perf_counter() - start) / 60}


if args.train_steps or args.train_minutes:
    # Our transforms.json gets the given capture's split, by photo name.
    held_out = {Path(name).name for name in load_views(scene, "test", downscale=8,
                                                       drop_missing=True).names}  # fmt: skip
    ours_json = settings.out / "transforms.json"
    meta = json.loads(ours_json.read_text())
    names = [frame["file_path"] for frame in meta["frames"]]
    meta["test_filenames"] = [n for n in names if Path(n).name in held_out]
    meta["train_filenames"] = [n for n in names if Path(n).name not in held_out]
    ours_json.write_text(json.dumps(meta, indent=2))
    runs = Path(args.out).parent / f"{Path(args.out).name}_train"
    results = {"given": train(scene, runs / "given"), "ours": train(settings.out, runs / "ours")}
    for which, m in results.items():
        print(f"{which} poses: held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} over "
              f"{m['n_views']} photos, {m['step']} steps, {m['wall_minutes']:.1f} min")
    gap = results["ours"]["psnr"] - results["given"]["psnr"]
    print(f"ours - given: {gap:+.2f} dB ({len(meta['test_filenames'])} of {len(held_out)} "
          "held-out photos posed by us)")
