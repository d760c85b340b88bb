"""benchmarks/paper_table.py: one row per scene, the paper's figures beside ours, appended
with when and where; a scene already done is not trained again."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from cli_helpers import REPO, assert_one_line_error, run_cli

from tensorf import cli

sys.path.insert(0, str(REPO / "benchmarks"))
import paper_table  # noqa: E402

DEMO = "tensorf/demo/lego"


def run_in_process(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The script's main as its command line runs it, without a new Python and JAX (the
    runs that train use `run_cli`)."""
    monkeypatch.setattr(sys, "argv", ["paper_table.py", *args])
    capsys.readouterr()
    try:
        cli.run_main(paper_table.main)
        code = 0
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row but the headers and --- lines."""
    lines = [line for line in text.splitlines()
             if line.startswith("| ") and not line.startswith(("| scene |", "| --- |"))]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_a_finished_scene_is_tabled_not_trained(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "demo-2min" / "lego"
    (run_dir / "renders").mkdir(parents=True)
    iio.imwrite(run_dir / "renders" / "000_rgb.png", np.zeros((100, 100, 3), np.uint8))
    metrics = {"psnr": 29.514, "ssim": 0.95321, "lpips": 0.04567, "step": 1500,
               "train_seconds": 96.0, "n_views": 8}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "results.md"
    args = ["--preset", "demo", "--minutes", "2", "--scenes", str(REPO / DEMO),
            "--runs", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    for _ in range(2):
        result = run_in_process(monkeypatch, capsys, *args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "not trained again" in result.stdout and "# command:" not in result.stdout
    expected = ["lego", "100x100", "demo", "29.51", "36.46", "0.9532", "0.983", "0.0457", "—",
                "1500", "1.6", "8"]  # fmt: skip
    assert table_rows(result.stdout) == [expected]
    text = out.read_text()
    assert text.startswith("# Results")
    assert text.count("\n## ") == 2 and "Machine: " in text and ", commit " in text
    assert table_rows(text) == [expected, expected]  # one table per run


def test_bad_input(tmp_path, monkeypatch, capsys):
    def run(*args: str) -> subprocess.CompletedProcess:
        out = ["--out", str(tmp_path / "r.md"), "--runs", str(tmp_path)]
        return run_in_process(monkeypatch, capsys, *args, *out)

    assert_one_line_error(run("--scenes", "no-such-scene"), "--scenes no-such-scene",
                          "not a scene folder")  # fmt: skip
    assert_one_line_error(run("--preset", "nope"), "--preset nope: no such preset")
    assert_one_line_error(run("--minutes", "0"), "--minutes")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TENSORF_DATA_DIR", str(empty))
    assert_one_line_error(run(), "no Blender or LLFF scene under")
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_demo_scene_with_a_tiny_budget(tmp_path):
    """Trains the demo preset for a few seconds on the shipped lego, evaluates two views and
    writes a well-formed row; run again, it trains nothing."""
    out = tmp_path / "results.md"
    args = ["benchmarks/paper_table.py", "--preset", "demo", "--minutes", "0.05",
            "--scenes", DEMO, "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--eval-max-views", "2"]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    [row] = table_rows(out.read_text())
    scene, size, preset, psnr, paper_psnr, ssim, paper_ssim, lpips, paper_lpips = row[:9]
    steps, minutes, views = row[9:]
    assert (scene, size, preset, paper_psnr, paper_ssim, paper_lpips, views) == (
        "lego", "100x100", "demo", "36.46", "0.983", "—", "2")
    assert 0 < float(psnr) < 40 and 0 < float(ssim) <= 1 and 0 < float(lpips) < 1
    assert int(steps) >= 1 and float(minutes) >= 0
    saved = json.loads((tmp_path / "runs" / "demo-0.05min" / "lego" / "metrics.json").read_text())
    assert psnr == f"{saved['psnr']:.2f}" and lpips == f"{saved['lpips']:.4f}"
    second = run_cli(*args)
    assert second.returncode == 0 and "not trained again" in second.stdout
    assert table_rows(second.stdout) == [row]
