"""Train a preset on every scene present and print the table the TensoRF paper prints:
per scene, PSNR / SSIM / LPIPS (alex) over the test views beside the paper's, the steps run
and the minutes trained. The table is appended to docs/results.md with the date, commit
and machine.

python benchmarks/paper_table.py --preset quick --minutes 15
python benchmarks/paper_table.py --preset quick --minutes 15 --scenes lego fern
python benchmarks/paper_table.py --preset demo --minutes 2 --scenes tensorf/demo/lego

Scenes: every Blender (`nerf_synthetic/*`) and LLFF (`nerf_llff_data/*`) folder under
TENSORF_DATA_DIR (default ../shared/data), or those --scenes names (a scene there, or a
scene folder). Blender scenes train --preset, LLFF scenes its LLFF counterpart (quick ->
llff-quick, paper -> llff) or --llff-preset. Options after these go to train.py as they are
(e.g. --eval-max-views 20, --eval-lpips off). Resumable: each scene's run is
<runs>/<preset>-<minutes>min/<scene>; a scene whose metrics.json is there is not trained
again (delete its folder to redo it), and one stopped part-way resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
from common import ROOT, commit, header, machine

from tensorf import cli, data
from tensorf.presets import PRESETS

LLFF_COUNTERPART = {"paper": "llff", "quick": "llff-quick"}

# The paper's per-scene figures (PSNR, SSIM, LPIPS_Alex) as ../shared/TENSORF.md (lego:
# VM-192, 30k steps, 800x800) and ../shared/data/README.md (fern: VM-96, 25k steps,
# 1008x756) give them; neither gives a per-scene LPIPS, so that column stays empty.
PAPER: dict[str, tuple[float, float, float | None]] = {
    "lego": (36.46, 0.983, None),
    "fern": (25.27, 0.814, None),
}
COLUMNS = ["scene", "size", "preset", "PSNR", "paper PSNR", "SSIM", "paper SSIM",
           "LPIPS (alex)", "paper LPIPS", "steps", "minutes", "test views"]  # fmt: skip


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", help="preset for Blender scenes")
    parser.add_argument("--llff-preset", default=None,
                        help="preset for LLFF scenes (default: --preset's LLFF counterpart)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per scene")
    parser.add_argument("--scenes", nargs="+", default=None,
                        help="scene names under TENSORF_DATA_DIR or scene folders (default: all)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "paper_table",
                        help="where the runs go (one folder per preset and budget)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md",
                        help="markdown file the table is appended to")
    return parser.parse_known_args()  # fmt: skip


def present_scenes() -> list[Path]:
    """The Blender and LLFF scene folders under TENSORF_DATA_DIR."""
    root = data.data_dir()
    found = [p for kind in ("nerf_synthetic", "nerf_llff_data")
             for p in sorted((root / kind).glob("*"))]  # the paper's order: objects first
    return [p for p in found if p.is_dir() and _format(p) in ("blender", "llff")]


def _format(folder: Path) -> str | None:
    try:
        return data.detect_format(folder)
    except data.DatasetError:
        return None


def chosen_scenes(names: list[str] | None) -> list[Path]:
    present = present_scenes()
    if names is None:
        if not present:
            raise cli.ConfigError(f"no Blender or LLFF scene under {data.data_dir()} "
                                  "(nerf_synthetic/*, nerf_llff_data/*): set TENSORF_DATA_DIR "
                                  "or give --scenes")  # fmt: skip
        return present
    by_name = {p.name: p for p in present}
    scenes = []
    for name in names:
        scene = Path(name) if Path(name).is_dir() else by_name.get(name)
        if scene is None:
            raise cli.ConfigError(f"--scenes {name}: not a scene folder, nor a scene under "
                                  f"{data.data_dir()} (there: {', '.join(by_name) or 'none'})")
        if _format(scene) not in ("blender", "llff"):
            raise cli.ConfigError(f"--scenes {name}: not a Blender or LLFF scene folder")
        scenes.append(scene)
    names_used = [s.name for s in scenes]
    if len(set(names_used)) < len(names_used):
        raise cli.ConfigError(f"--scenes: two scenes share a name ({', '.join(names_used)}); "
                              "their runs would share a folder")  # fmt: skip
    return scenes


def preset_for(scene: Path, args: argparse.Namespace) -> str:
    if _format(scene) == "llff":
        return args.llff_preset or LLFF_COUNTERPART.get(args.preset, args.preset)
    return args.preset


def run_scene(scene: Path, preset: str, run_dir: Path, minutes: float, extra: list[str]) -> dict:
    """Train and evaluate `scene` unless its run finished before; its metrics.json."""
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        print(f"# {scene.name}: done before ({metrics}), not trained again", flush=True)
        return json.loads(metrics.read_text())
    resume = ["--resume"] if (run_dir / "config.json").exists() else []
    cmd = [sys.executable, str(ROOT / "train.py"), preset, "--dataset-path", str(scene.resolve()),
           "--run-dir", str(run_dir), "--max-minutes", str(minutes), *resume, *extra]  # fmt: skip
    print("# command:", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT, check=False).returncode != 0 or not metrics.exists():
        raise cli.TrainingError(f"training {scene.name} failed (its output is above); the run "
                                f"is in {run_dir}, and running this again resumes it")
    return json.loads(metrics.read_text())


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def image_size(run_dir: Path) -> str:
    """W x H of the evaluated views, from the first render training saved."""
    first = run_dir / "renders" / "000_rgb.png"
    if not first.exists():
        return "—"
    height, width = iio.imread(first).shape[:2]
    return f"{width}x{height}"


def row(scene: str, size: str, preset: str, m: dict) -> list[str]:
    # The paper's figures are for the full-size scenes of these names; the size column
    # shows when ours are not (the shipped demo lego is 100x100).
    paper = PAPER.get(scene, (None, None, None))
    return [scene, size, preset, _number(m["psnr"], 2), _number(paper[0], 2), _number(m["ssim"], 4),
            _number(paper[1], 3), _number(m.get("lpips"), 4), _number(paper[2], 3),
            str(m["step"]), _number(m["train_seconds"] / 60, 1), str(m["n_views"])]  # fmt: skip


def markdown(rows: list[list[str]]) -> str:
    lines = [COLUMNS, ["---"] * len(COLUMNS), *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def append(out: Path, title: str, table: str) -> None:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# Results\n\nTables appended by `benchmarks/paper_table.py`, newest "
                       "last; each says when, where and with what it was made.\n")  # fmt: skip
    with out.open("a") as f:
        f.write(f"\n## {title}\n\n{table}\n"
                "The paper's figures are at full size (lego 800x800, fern 1008x756) after "
                "30k / 25k steps on a GPU; ours are on the scenes as found here, within the "
                "budget above. Minutes: training only; LPIPS (alex) as the paper's "
                "LPIPS_Alex.\n")  # fmt: skip


def main() -> None:
    args, extra = parse_args()
    cli.check_numbers(("--minutes", args.minutes, 1e-3, 1e5, float))
    for flag, preset in (("--preset", args.preset), ("--llff-preset", args.llff_preset)):
        if preset is not None and preset not in PRESETS:
            raise cli.ConfigError(f"{flag} {preset}: no such preset ({', '.join(PRESETS)})")
    scenes = chosen_scenes(args.scenes)
    cli.check_writable(args.out, "--out")
    header(f"paper table: --preset {args.preset}, --minutes {args.minutes}, "
           f"scenes {', '.join(s.name for s in scenes)}")  # fmt: skip
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # Absolute: train.py runs from the repository root, this script from anywhere.
    folder = args.runs.resolve() / f"{args.preset}-{args.minutes:g}min"
    rows = []
    for scene in scenes:
        preset, run_dir = preset_for(scene, args), folder / scene.name
        metrics = run_scene(scene, preset, run_dir, args.minutes, extra)
        rows.append(row(scene.name, image_size(run_dir), preset, metrics))
    table = markdown(rows)
    print(table, end="")
    command = " ".join(["python benchmarks/paper_table.py", *sys.argv[1:]])
    append(args.out, f"{started}, commit {commit()}: `{command}`",
           f"Machine: {machine()}.\n\n{table}")
    print(f"# appended to {args.out}")


if __name__ == "__main__":
    cli.run_main(main)
