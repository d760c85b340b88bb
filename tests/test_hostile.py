"""Reliability, round 2: what a hostile user found. f16 checkpoints, odd-sized videos,
two trainers on one run directory, non-finite training, half-written files, full disks,
a second Ctrl-C, and a --resume with nothing to resume."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import time

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from synthetic import tiny_config
from test_reliability import assert_same_state, logged, saved_steps, short_config, start_run

from tensorf import cli, experiment
from tensorf.cli import ConfigError, OutputError, TrainingError
from tensorf.config import override
from tensorf.eval import evaluation
from tensorf.loop import monitor
from tensorf.orbit import OrbitArgs, render_orbit
from tensorf.render import visualize
from tensorf.train import checkpoint, steps


def one_line_exit(fn, capsys) -> str:
    """What `run_main` prints for fn: exactly one `error:` line, with exit status 2."""
    capsys.readouterr()  # what earlier calls printed
    with pytest.raises(SystemExit) as stop:
        cli.run_main(fn)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.slow
def test_f16_checkpoints_and_resumes_bit_for_bit(sphere_scene, tmp_path):
    whole = override(short_config(sphere_scene, tmp_path / "a"), precision="f16")
    experiment.train(whole)
    parts = override(whole, run_dir=tmp_path / "b")
    experiment.train(override(parts, max_minutes=0.0))
    assert saved_steps(parts.run.run_dir) == [1]
    experiment.train(override(parts, resume=True))
    assert_same_state(whole, parts)
    assert logged(whole.run.run_dir) == logged(parts.run.run_dir)
    state = checkpoint.load_run(parts.run.run_dir)[1]
    assert float(state.loss_scale.loss_scale) > 0  # a dynamic loss scale came back


def test_odd_sized_videos_are_padded(tiny_run, tmp_path):
    cfg, _ = tiny_run
    out = tmp_path / "odd.mp4"
    render_orbit(OrbitArgs(run_dir=cfg.run.run_dir, out=out, frames=2, width=51, height=33))
    for name in ("odd.mp4", "odd_depth.mp4"):
        frames = np.stack(list(iio.imiter(tmp_path / name, plugin="FFMPEG")))
        assert frames.shape == (2, 34, 52, 3)


def test_encoder_failures_are_errors(tmp_path, monkeypatch):
    frame = np.zeros((8, 8, 3), np.uint8)
    writer = visualize.VideoWriter(tmp_path / "a.mp4", 10)

    def broken(_):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(writer._writer, "append_data", broken)
    with pytest.raises(OutputError, match="a.mp4: the video encoder failed"):
        writer.write(frame)
    monkeypatch.undo()
    writer._writer.close()
    # An encoder that exits without writing anything.
    empty = tmp_path / "b.mp4"
    with pytest.raises(OutputError, match="wrote nothing"):
        with visualize.VideoWriter(empty, 10) as video:
            monkeypatch.setattr(video, "_writer", _NullWriter())


class _NullWriter:
    def append_data(self, frame):
        pass

    def close(self):
        pass


def test_a_second_trainer_on_the_same_run_dir_is_refused(sphere_scene, tmp_path):
    run_dir = tmp_path / "run"
    long = 10**6  # still training when the second trainer comes
    first = start_run(sphere_scene, run_dir, n_iters=long)
    try:
        deadline = time.monotonic() + 300
        while not saved_steps(run_dir):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cfg = override(tiny_config(sphere_scene, run_dir), n_iters=long, resume=True)
        with pytest.raises(ConfigError, match="in use by another trainer"):
            experiment.train(cfg)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed trainer's lock does not outlive it.
    experiment.train(override(cfg, max_minutes=0.0))


def test_non_finite_options_are_refused_up_front(sphere_scene, tmp_path):
    cfg = short_config(sphere_scene, tmp_path / "nan")
    for name in ("lr_grid", "lr_network", "lr_decay_ratio", "mask_threshold"):
        with pytest.raises(ConfigError, match=name.replace("_", "-")):
            experiment.train(override(cfg, **{name: float("nan")}))
    assert not cfg.run.run_dir.exists()


def test_exploding_parameters_stop_training(sphere_scene, tmp_path, monkeypatch):
    """Huge steps leave the loss finite for a while but blow the grids up: those updates
    are skipped like non-finite ones, and the advice (a lower rate, --resume) works. (The
    limit is lowered so that the largest learning rate the checks allow crosses it.)"""
    cfg = override(short_config(sphere_scene, tmp_path / "big"), upsample_steps=(),
                   mask_steps=(), eval_max_views=1)  # fmt: skip
    experiment.train(override(cfg, max_minutes=0.0))
    monkeypatch.setattr(steps, "PARAMETER_LIMIT", 100.0)
    jax.clear_caches()  # train_step must be traced again with the lower limit
    with pytest.raises(TrainingError, match="lower --lr-grid") as error:
        experiment.train(override(cfg, resume=True, lr_grid=1e3, max_bad_steps=3))
    assert "3 steps in a row up to step 4" in str(error.value)
    assert "blew up past 100" in str(error.value)
    assert saved_steps(cfg.run.run_dir) == [1]
    monkeypatch.undo()
    jax.clear_caches()
    metrics = experiment.train(override(cfg, resume=True, lr_grid=0.01))
    assert np.isfinite(metrics["psnr"]) and metrics["step"] == cfg.schedule.n_iters


def test_non_finite_metrics_never_exit_0(sphere_scene, tmp_path, monkeypatch):
    cfg = override(short_config(sphere_scene, tmp_path / "m"), n_iters=2,
                   upsample_steps=(), mask_steps=(), eval_max_views=1)  # fmt: skip
    real = evaluation.evaluate_views

    def nan_metrics(*args, **kwargs):
        metrics, previews = real(*args, **kwargs)
        return {**metrics, "psnr": float("nan")}, previews

    monkeypatch.setattr(evaluation, "evaluate_views", nan_metrics)
    with pytest.raises(TrainingError, match="not finite"):
        experiment.train(cfg)
    assert json.loads((cfg.run.run_dir / "metrics.json").read_text())["psnr"] is None


def test_half_written_files(tiny_run, tmp_path, capsys):
    cfg, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run)
    resumed = override(cfg, run_dir=run, resume=True)
    # A crash in the middle of a log line: the partial line is dropped on resume.
    lines = (run / monitor.LOG_FILE).read_text()
    (run / monitor.LOG_FILE).write_text(lines + '{"step": 61, "loss": 0.0')
    experiment.train(resumed)
    assert (run / monitor.LOG_FILE).read_text() == lines
    # A corrupt config.json: every tool says so in one line.
    (run / checkpoint.CONFIG_FILE).write_text('{"batch_size": 12')
    for args in (["render_360.py", "--run-dir", str(run), "--out", str(tmp_path / "o.mp4")],
                 ["-m", "tensorf.evaluate", "--run-dir", str(run)],
                 ["-m", "tensorf.export_mesh", "--run-dir", str(run), "--out",
                  str(tmp_path / "m.ply")]):  # fmt: skip
        assert_one_line_error(run_cli(*args), "config.json", "corrupt")
    message = one_line_exit(lambda: experiment.train(resumed), capsys)
    assert "config.json" in message and "corrupt" in message
    # A corrupt cameras.json too.
    checkpoint.save_config(run, resumed)
    (run / checkpoint.CAMERAS_FILE).write_text("[1, 2")
    result = run_cli("render_360.py", "--run-dir", str(run), "--out", str(tmp_path / "o.mp4"))
    assert_one_line_error(result, "cameras.json", "corrupt")


def test_full_disk_and_unwritable_run_dir(sphere_scene, tmp_path, capsys):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    message = one_line_exit(full, capsys)
    assert "No space left on device" in message and str(tmp_path / "x") in message
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = short_config(sphere_scene, blocker / "run")
    with pytest.raises(ConfigError, match="--run-dir"):
        experiment.train(cfg)


def test_second_interrupt_stops_at_once_without_a_traceback(capsys):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        cli.run_main(interrupted)
    assert stop.value.code == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err


def test_resume_without_a_checkpoint_says_so(sphere_scene, tmp_path, capsys):
    cfg = override(short_config(sphere_scene, tmp_path / "r"), n_iters=2,
                   upsample_steps=(), mask_steps=(), eval_max_views=1)  # fmt: skip
    checkpoint.save_config(cfg.run.run_dir, cfg)  # a run killed before its first checkpoint
    experiment.train(override(cfg, resume=True))
    assert "no checkpoint" in capsys.readouterr().err


def test_unreadable_checkpoints_from_the_command_line(tiny_run, tmp_path):
    """orbax's abandoned background reads print no tracebacks after a failed restore."""
    cfg, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run)
    for path in (run / "checkpoints").glob("*/state/d/*"):
        path.write_bytes(path.read_bytes()[:10])
    result = run_cli("render_360.py", "--run-dir", str(run), "--out", str(tmp_path / "o.mp4"),
                     own_process=True)  # what orbax's abandoned reads print at exit
    assert_one_line_error(result, "no readable checkpoint")
    assert "Event loop is closed" not in result.stderr
