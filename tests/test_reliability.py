"""Runs that are interrupted, resumed from damaged checkpoints, fed NaNs, or repeated."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_helpers import REPO
from synthetic import tiny_config

from tensorf import experiment
from tensorf.cli import TrainingError
from tensorf.config import override
from tensorf.loop import monitor
from tensorf.train import checkpoint, events, steps

# The same run as the `tiny_run` fixture, in a process of its own (argv: scene, run dir,
# "resume" or "new", optionally another n_iters), through the same error handling as
# train_lego.py.
DRIVER = f"""
import dataclasses, sys
from pathlib import Path
sys.path.insert(0, {str(REPO / "tests")!r})
from cli_helpers import REPO
from synthetic import tiny_config
from tensorf import cli, experiment
from tensorf.config import override
cfg = tiny_config(Path(sys.argv[1]), Path(sys.argv[2]))
if len(sys.argv) > 4:
    cfg = override(cfg, n_iters=int(sys.argv[4]))
cli.run_main(lambda: experiment.train(override(cfg, resume=sys.argv[3] == "resume")))
"""


def start_run(scene: Path, run_dir: Path, n_iters: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    more = [] if n_iters is None else [str(n_iters)]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(scene), str(run_dir), "new", *more],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def saved_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []
    )


def assert_same_state(cfg_a, cfg_b) -> None:
    state_a = checkpoint.restore_latest(checkpoint.manager(cfg_a.run.run_dir), cfg_a)[0]
    state_b = checkpoint.restore_latest(checkpoint.manager(cfg_b.run.run_dir), cfg_b)[0]
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def logged(run_dir: Path) -> list[dict]:
    """log.jsonl without the wall-clock figures."""
    lines = (run_dir / monitor.LOG_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "rays_per_s"} for line in lines]


def test_sigkill_at_a_random_moment_then_resume(tiny_run, sphere_scene, tmp_path):
    """Killed without warning after its first checkpoint, a run resumed with --resume loses
    at most one checkpoint interval and ends bit for bit where the uninterrupted run did."""
    cfg_a, metrics_a = tiny_run
    cfg = tiny_config(sphere_scene, tmp_path / "killed")
    process = start_run(sphere_scene, cfg.run.run_dir)
    wait_for(lambda: saved_steps(cfg.run.run_dir), process)
    time.sleep(random.uniform(0.0, 1.0))  # the tiny run trains for a few seconds
    process.kill()
    process.wait()
    last_logged = max([0] + [line["step"] for line in logged(cfg.run.run_dir)])
    assert max(saved_steps(cfg.run.run_dir)) >= last_logged - cfg.run.checkpoint_every

    metrics = experiment.train(override(cfg, resume=True))
    assert metrics["step"] == cfg.schedule.n_iters
    assert metrics["psnr"] == pytest.approx(metrics_a["psnr"], abs=1e-6)
    assert_same_state(cfg_a, cfg)
    # The resumed log continues the killed one without repeating steps.
    steps = [line["step"] for line in logged(cfg.run.run_dir)]
    assert steps == list(range(cfg.run.log_every, cfg.schedule.n_iters + 1, cfg.run.log_every))
    assert logged(cfg.run.run_dir) == logged(cfg_a.run.run_dir)


def test_resume_between_a_mask_measured_ahead_and_its_update(sphere_scene, tmp_path):
    """The tiny run's alpha masks are measured at 10 and 30 for their updates at 20 and
    40 (`ScheduleConfig.event_lead`); resumed from its checkpoint at 35, between the second
    pair, a run applies the mask saved with it (not the one its state at 35 would give),
    compiled ahead as uninterrupted, and ends bit for bit where the uninterrupted run did.
    The threshold makes the mask at 30 a part of the box, one that grows by 40."""
    cfg_a = override(tiny_config(sphere_scene, tmp_path / "a"), checkpoint_every=35,
                     mask_threshold=0.002)  # fmt: skip
    metrics_a = experiment.train(cfg_a)
    cfg = override(cfg_a, run_dir=tmp_path / "b", resume=True)
    shutil.copytree(cfg_a.run.run_dir, cfg.run.run_dir)
    shutil.rmtree(cfg.run.run_dir / "checkpoints" / "60")
    state, saved = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)
    ahead, now = saved["measured"], events.measure_mask(state, cfg, 40)
    assert ahead.step == 40 and np.asarray(ahead.mask.cells).any()
    assert (np.asarray(ahead.mask.cells) != np.asarray(now.mask.cells)).any()
    metrics = experiment.train(cfg)
    assert metrics["psnr"] == pytest.approx(metrics_a["psnr"], abs=1e-6)
    assert_same_state(cfg_a, cfg)
    assert 40 in metrics_a["compile_ahead_hits"] and metrics["compile_ahead_hits"] == [40]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_before_exiting(sphere_scene, tmp_path, signum):
    run_dir = tmp_path / "signalled"
    process = start_run(sphere_scene, run_dir)
    wait_for(lambda: (run_dir / monitor.LOG_FILE).exists() and logged(run_dir), process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if "stopped by" in line]
    assert len(message) == 1 and signal.Signals(signum).name in message[0], stderr
    assert "--resume" in message[0]
    step = int(message[0].split(" at step ")[1].split(";")[0])
    assert step >= 10 and max(saved_steps(run_dir)) == step


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(tiny_run, tmp_path, capfd):
    cfg_a, metrics_a = tiny_run
    run_dir = tmp_path / "damaged"
    shutil.copytree(cfg_a.run.run_dir, run_dir)
    for path in (run_dir / "checkpoints" / "60").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cfg = override(cfg_a, run_dir=run_dir, resume=True)
    metrics = experiment.train(cfg)
    err = capfd.readouterr().err
    assert "warning: checkpoint" in err and "60 is unreadable" in err
    assert (run_dir / "unreadable_checkpoints" / "60").is_dir()
    # Steps 41..60 were trained again from checkpoint 40: the same result.
    assert metrics["step"] == 60
    assert metrics["psnr"] == pytest.approx(metrics_a["psnr"], abs=1e-6)
    assert_same_state(cfg_a, cfg)


def test_no_readable_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    cfg_a, _ = tiny_run
    run_dir = tmp_path / "all_damaged"
    shutil.copytree(cfg_a.run.run_dir / "checkpoints", run_dir / "checkpoints")
    for path in (run_dir / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint"):
        checkpoint.restore_latest(checkpoint.manager(run_dir), cfg_a)


def short_config(scene: Path, run_dir: Path):
    """The tiny run with a checkpoint every 10 steps, 2 kept."""
    return override(tiny_config(scene, run_dir), checkpoint_every=10, keep_checkpoints=2)


def test_same_seed_same_run_and_bounded_disk(sphere_scene, tmp_path):
    cfg_a = short_config(sphere_scene, tmp_path / "a")
    cfg_b = short_config(sphere_scene, tmp_path / "b")
    metrics_a, metrics_b = experiment.train(cfg_a), experiment.train(cfg_b)
    assert len(logged(cfg_a.run.run_dir)) == 6
    assert logged(cfg_a.run.run_dir) == logged(cfg_b.run.run_dir)
    # Timings, and compilations (the second run finds the first one's in the jit cache;
    # compile_*: what was compiled ahead, and what stalled).
    timing = {"train_seconds", "load_seconds", "seconds_per_image", "train_step_compiles",
              "train_step_compile_seconds", "lpips_seconds_per_image"}  # fmt: skip
    assert {k: v for k, v in metrics_a.items() if k not in timing and "compile_" not in k} == {
        k: v for k, v in metrics_b.items() if k not in timing and "compile_" not in k
    }
    assert_same_state(cfg_a, cfg_b)
    # Six checkpoints were written, two are kept.
    assert saved_steps(cfg_a.run.run_dir) == [50, 60]
    # A different seed gives a different run.
    cfg_c = override(short_config(sphere_scene, tmp_path / "c"), seed=1, n_iters=20,
                     upsample_steps=(), mask_steps=())  # fmt: skip
    experiment.train(cfg_c)
    assert logged(cfg_c.run.run_dir)[0]["loss"] != logged(cfg_a.run.run_dir)[0]["loss"]


def test_non_finite_steps_stop_training_and_keep_the_good_checkpoint(
    sphere_scene, tmp_path, monkeypatch
):
    cfg = override(
        short_config(sphere_scene, tmp_path / "nan"), upsample_steps=(), mask_steps=()
    )
    experiment.train(override(cfg, max_minutes=0.0, eval_max_views=1))
    assert saved_steps(cfg.run.run_dir) == [1]

    render = steps.render_rays

    def poisoned(*args, **kwargs):
        out = render(*args, **kwargs)
        return {**out, "rgb": out["rgb"] * np.nan}

    monkeypatch.setattr(steps, "render_rays", poisoned)
    jax.clear_caches()  # train_step must be traced again with the poisoned renderer
    with pytest.raises(TrainingError, match="3 steps in a row up to step 4"):
        experiment.train(override(cfg, resume=True, max_bad_steps=3))
    assert saved_steps(cfg.run.run_dir) == [1]
    state = checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[0]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
