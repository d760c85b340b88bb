"""Compile ahead (`tensorf.ahead`): the stage after each grid event is predicted from a
copy of the state and compiled on a background thread; the prediction is what the loop
then uses, the numbers are the same as without it, and the compile seconds are split into
stalled and hidden."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np
import pytest
from synthetic import tiny_config

from tensorf import experiment, parallel
from tensorf.config import override
from tensorf.loop import monitor
from tensorf.loop.ahead import Ahead, signature
from tensorf.train import events, steps, timing, train_state

MESH = parallel.data_mesh()


def logged(run_dir) -> list[dict]:
    """log.jsonl without the wall-clock figures."""
    lines = (run_dir / monitor.LOG_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "rays_per_s"} for line in lines]


def test_every_grid_event_swaps_in_the_stage_compiled_ahead(tiny_run):
    """The tiny run's events (20: mask, shrink and upsample; 40: mask, ray filtering,
    shrink and regrid) start stages whose shapes and settings were predicted exactly, and so
    does the first buffer shrink (planned from step 1's counts, in use from step 10); only
    the first stage was not."""
    cfg, metrics = tiny_run
    assert cfg.run.compile_ahead
    assert metrics["compile_ahead_hits"] == [10, 20, 40]
    assert metrics["compile_ahead_misses"] == [0]
    stalled, hidden = metrics["compile_seconds_stalled"], metrics["compile_seconds_hidden"]
    total = metrics["train_step_compile_seconds"]
    assert stalled > 0 and hidden >= 0 and 0 < metrics["compile_seconds_waited"] <= stalled
    # Every second of compilation either stalled the loop or was hidden; the loop's waits
    # for the worker count as stalled, also while it was predicting rather than compiling.
    assert total - 1e-6 <= stalled + hidden <= total + metrics["compile_seconds_waited"] + 1e-6
    assert sum(s for _, s, _ in metrics["compile_stalls"]) == pytest.approx(stalled, abs=0.01)
    # The devices sit idle for at most as long as the loop stalled, and for all of the
    # first stage's compilation (nothing was queued before it).
    idle = {step: s for step, _, s in metrics["compile_stalls"]}
    stalls = {step: s for step, s, _ in metrics["compile_stalls"]}
    assert all(0 <= idle[step] <= stalls[step] + 0.05 for step in idle)
    assert idle[0] >= stalls[0] - 0.05
    assert metrics["compile_seconds_idle"] == pytest.approx(sum(idle.values()), abs=0.01)


def test_without_compile_ahead_the_same_run(tiny_run, sphere_scene, tmp_path):
    """--no-compile-ahead: every stage compiles in the loop (all stalled, nothing hidden),
    and the run logs exactly what the run with it logged."""
    cfg_a, _ = tiny_run
    cfg = override(tiny_config(sphere_scene, tmp_path / "plain"), compile_ahead=False)
    metrics = experiment.train(cfg)
    assert logged(cfg.run.run_dir) == logged(cfg_a.run.run_dir)
    assert metrics["compile_ahead_hits"] == [] and metrics["compile_seconds_hidden"] == 0.0
    assert metrics["compile_ahead_misses"][0] == 0 and 20 in metrics["compile_ahead_misses"]
    assert metrics["compile_seconds_stalled"] == pytest.approx(
        metrics["train_step_compile_seconds"], abs=1e-9
    )


def test_a_stage_is_its_settings_and_its_arguments_shapes(sphere_scene, tmp_path):
    cfg = tiny_config(sphere_scene, tmp_path / "unused")
    state = parallel.replicate(train_state.init_state(cfg), MESH)
    settings = train_state.settings_for(cfg, state)
    hyper = steps.Hyper.of(cfg)
    key = signature((state, hyper), settings)
    other = train_state.init_state(override(cfg, seed=1))
    assert signature((parallel.replicate(other, MESH), steps.Hyper.of(cfg)), settings) == key
    bigger = dataclasses.replace(settings, density_capacity=2 * settings.density_capacity)
    assert signature((state, hyper), bigger) != key
    upsampled = events.upsample(parallel.local_copy(state), cfg.optimiser, 20**3)
    assert signature((parallel.replicate(upsampled, MESH), hyper), settings) != key
    local = jax.tree.map(np.asarray, state)  # the same shapes, not placed on the mesh
    assert signature((local, hyper), settings) != key


def test_settle_waits_for_the_worker(sphere_scene, tmp_path, monkeypatch):
    """The budget plan's window starts with no compilation on the worker: `settle` returns
    once the compilations queued are done, and counts its wait as waited."""
    cfg = tiny_config(sphere_scene, tmp_path / "unused")
    with Ahead(steps.StepSpec.of(cfg), MESH, cfg, {}) as ahead:
        monkeypatch.setattr(ahead, "compile", lambda args, settings: time.sleep(0.5) or "done")
        ahead.current = ("settings", "tree", "shapes")  # a stage in use
        waited = timing.COMPILES["waited"]
        ahead.refit("smaller")
        ahead.settle()
        assert ahead.ready[("smaller", "tree", "shapes")].result(timeout=0) == "done"
        assert timing.COMPILES["waited"] - waited >= 0.4
