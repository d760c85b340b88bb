"""Reliability, round 3 (issue 32), runs: a full disk under a checkpoint, a bad test image
found before the first step rather than after the last, and resumes that rewrite their
files atomically and log exactly what the uninterrupted run logged."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_hostile_outputs import one_line_exit
from test_reliability import logged, saved_steps, short_config

from tensorf import data, experiment, outputs
from tensorf.cli import ConfigError
from tensorf.config import override
from tensorf.data import DatasetError
from tensorf.field import tensor_vm
from tensorf.loop import monitor
from tensorf.render import sampling, visualize
from tensorf.render.sampling import bucket
from tensorf.train import checkpoint, checks
from tensorf.train.checkpoint import CheckpointError

# What tensorstore raised on a 600 kB tmpfs (orbax 0.11, 2026-12-04), shortened.
RESOURCE_EXHAUSTED = ('RESOURCE_EXHAUSTED: Error writing "dropped_samples/0" in OCDBT database '
                      'at local file "ckpt/10.orbax-checkpoint-tmp/": Failed to write 144476 '
                      "bytes to file 8: No space left on device [os_error_code='28']")  # fmt: skip


def test_a_full_disk_under_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, caplog):
    """orbax raises a full disk from the save after the one that failed (or from the wait
    for it), after its threads have logged it with tracebacks."""
    for method in ("save", "wait_until_finished"):

        def full(*args, **kwargs):
            logging.getLogger("absl").error("Save Finalize thread failed: %s", RESOURCE_EXHAUSTED)
            raise ValueError(RESOURCE_EXHAUSTED)

        mngr = checkpoint.manager(tmp_path / method)
        monkeypatch.setattr(ocp.CheckpointManager, method, full)

        def call(mngr=mngr, method=method):
            return mngr.save(20, args=None) if method == "save" else mngr.wait_until_finished()

        caplog.clear()
        message = one_line_exit(call, capsys)
        assert "no space left on the device" in message and "--resume" in message
        assert not [r for r in caplog.records if r.name == "absl"], method  # said once
        monkeypatch.undo()
    # Other orbax errors are not a full disk, and pass as they are.
    mngr = checkpoint.manager(tmp_path / "other")
    monkeypatch.setattr(ocp.CheckpointManager, "save", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        mngr.save(1, args=None)


def bad_test_images(scene: Path) -> Iterator[tuple[str, Path]]:
    """(what, scene folder): copies of the scene with one test image broken."""
    for what, damage in (("truncated", lambda p: p.write_bytes(p.read_bytes()[:60])),
                         ("not an image", lambda p: p.write_text("hello")),
                         ("missing", lambda p: p.unlink())):  # fmt: skip
        copy = scene.parent / f"{scene.name}_{what.replace(' ', '_')}"
        if not copy.exists():
            shutil.copytree(scene, copy)
            damage(sorted((copy / "test").glob("*.png"))[-1])
        yield what, copy


def test_a_bad_test_image_fails_before_the_first_step(sphere_scene, tmp_path):
    for what, scene in bad_test_images(sphere_scene):
        cfg = override(short_config(scene, tmp_path / what), eval_every=10**6)
        with pytest.raises(DatasetError, match="test/") as error:
            experiment.train(cfg)
        assert saved_steps(cfg.run.run_dir) == [], what  # not a step was trained
        assert "\n" not in str(error.value)


def kills_while_rewriting(monkeypatch) -> Iterator[str]:
    """Ways a process dies while it replaces a file: half the new text written, or all of
    it but not yet renamed into place. Each is patched in before it is yielded."""
    real_write = Path.write_text

    def half_written(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    def before_the_rename(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_written)
    yield "half written"
    monkeypatch.undo()
    monkeypatch.setattr(outputs.os, "replace", before_the_rename)
    yield "before the rename"
    monkeypatch.undo()


def test_a_kill_while_resume_rewrites_the_run_files_leaves_them_whole(sphere_run, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    cfg, _ = sphere_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run)
    names = (checkpoint.CONFIG_FILE, checkpoint.CAMERAS_FILE, monitor.LOG_FILE)
    before = {name: (run / name).read_text() for name in names}
    views = data.load_views(cfg.data.dataset_path, "train")
    rewrites = {
        checkpoint.CONFIG_FILE: lambda: checkpoint.save_config(run, cfg),
        checkpoint.CAMERAS_FILE: lambda: checkpoint.save_cameras(run, views),
        monitor.LOG_FILE: lambda: monitor.JsonLog(run / monitor.LOG_FILE, 200),
    }
    for what in kills_while_rewriting(monkeypatch):
        for name, rewrite in rewrites.items():
            with pytest.raises(KeyboardInterrupt):
                rewrite()
            assert (run / name).read_text() == before[name], (what, name)
    checkpoint.load_config(run)
    checkpoint.load_cameras(run)


def test_a_resumed_run_logs_what_the_uninterrupted_run_logged(sphere_run, tmp_path):
    """From the checkpoint at step 200, where the training rays were filtered: every line
    after it, `training_rays` included, is the uninterrupted run's."""
    cfg, _ = sphere_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "300")
    experiment.train(override(cfg, run_dir=run, resume=True))
    assert logged(run) == logged(cfg.run.run_dir)
    rays = [line["training_rays"] for line in logged(run)]
    assert rays[-1] < rays[0]  # the filter at step 200 shows in the log


def buffer_options() -> Iterator[dict]:
    """Render options that size the training step's buffers, up to what the checks allow."""
    yield {"appearance_samples": 10**6, "max_samples": 10**6}
    yield {"appearance_samples": 5000}
    yield {"appearance_samples": 4096, "max_samples": 4096, "step_ratio": 0.01}


def test_what_passes_the_memory_check_sizes_no_larger_buffers(sphere_scene, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """The shading buffer is sized for the top k samples of each ray, and k beyond a ray's
    samples sizes nothing: a k of 10^6 once passed the check and asked for 263 GB."""
    base = short_config(sphere_scene, tmp_path / "run")
    for options in buffer_options():
        cfg = dataclasses.replace(base, render=dataclasses.replace(base.render, **options))
        try:
            checks.check_config(cfg)
        except ConfigError as error:
            assert "needs about" in str(error), options
            continue
        aabb = np.reshape(cfg.schedule.aabb, (2, 3))
        for grid in (cfg.schedule.grid_init, cfg.schedule.grid_final):
            resolution = tensor_vm.resolution_for_voxels(grid**3, aabb)
            settings = sampling.render_settings(cfg, aabb, resolution, None)
            per_ray = min(cfg.render.appearance_samples, settings.samples_per_ray)
            shaded = cfg.optimiser.batch_size * per_ray
            assert settings.appearance_capacity == bucket(shaded), options
    # The check counts the shading buffer: with little memory, a wide MLP is refused.
    monkeypatch.setattr(checks.os, "sysconf", lambda name: 2**16 if "PAGES" in name else 4096)
    checks.check_config(base)  # 256 MiB hold the sphere run
    wide = dataclasses.replace(base, model=dataclasses.replace(base.model, mlp_width=4096))
    with pytest.raises(ConfigError, match="needs about"):
        checks.check_config(wide)
    # And the training images, once loaded (before the first step).
    checks.check_memory(base, 2**20)
    with pytest.raises(ConfigError, match="1.0 GiB of images"):
        checks.check_memory(base, 2**30)
    loaded = []

    def refuse(cfg, image_bytes):
        loaded.append(image_bytes)
        raise ConfigError("no room")

    monkeypatch.setattr(checks, "check_memory", refuse)
    with pytest.raises(ConfigError, match="no room"):
        experiment.train(base)
    assert loaded == [24 * 32 * 32 * 3 * 4] and saved_steps(base.run.run_dir) == []


def test_small_ones(sphere_run, sphere_scene, tmp_path):
    cfg, _ = sphere_run
    # Looking at a run whose checkpoints were deleted leaves no empty folder behind.
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(CheckpointError, match="checkpoints: not found"):
        checkpoint.load_run(run)
    assert not (run / "checkpoints").exists()
    # --run-dir '' would fill the current folder with the run.
    with pytest.raises(ConfigError, match="--run-dir is empty"):
        checks.check_config(override(cfg, run_dir=Path("")))
    # Videos spawn ffmpeg without JAX's warning about os.fork().
    jax.numpy.zeros(3).block_until_ready()  # JAX's threads are running
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with visualize.VideoWriter(tmp_path / "v.mp4", 10) as video:
            video.write(np.zeros((8, 8, 3), np.uint8))
    assert [str(w.message) for w in caught if "fork" in str(w.message)] == []
