"""The training loop's parts, each without a training run: the event schedule, the buffer
sizer, the readings a call late, the monitor's log line, the viewer hand-off, signals, the
time budget and the run directory's lock. (The budget plan and `next_stop` are worked by
hand in test_loop.py.)"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from tensorf.config import override
from tensorf.errors import ConfigError, TrainingError
from tensorf.loop import monitor, rundir
from tensorf.loop.budget import budget_spent
from tensorf.loop.buffers import BufferSizer
from tensorf.loop.readings import Readings
from tensorf.loop.schedule import Schedule
from tensorf.loop.signals import StopOnSignals, interrupted
from tensorf.presets import PRESETS
from tensorf.render.sampling import bucket, render_settings
from tensorf.train import events, timing

QUICK = PRESETS["quick"][1]  # 7000 steps; masks at 500, 1000, 2000; upsamples at 500-1500


def test_the_schedule_says_what_is_due_at_each_step():
    schedule = Schedule.of(QUICK, evaluates=True)
    assert schedule.voxels == dict(zip((500, 1000, 1500), events.voxel_schedule(QUICK.schedule),
                                       strict=True))  # fmt: skip
    assert schedule.voxels[1500] == 200**3 and schedule.per_call == 64
    # Calls end at step 1, every log line (50), checkpoint (500), evaluation (2000), grid
    # event, and the budget plan's steps; 64 steps at most.
    n = QUICK.schedule.n_iters
    stops = [schedule.stop(s, n, set()) for s in (0, 1, 480, 1490, 6990)]
    assert stops == [1, 50, 500, 1500, 7000]
    assert schedule.stop(450, n, {460}) == 460
    assert Schedule.of(override(QUICK, log_every=1000), True).stop(100, n, set()) == 164
    assert [s for s in range(1, n + 1) if schedule.grid_event(s)] == [500, 1000, 1500, 2000]
    assert [s for s in range(1, n + 1) if schedule.save(s, n)][:3] == [500, 1000, 1500]
    assert schedule.save(6999, 6999) and not schedule.save(501, n)
    assert schedule.log(6999, 6999) and schedule.log(50, n) and not schedule.log(51, n)
    # The evaluation at the last step is the final one, not one during training.
    assert [s for s in range(1, n + 1) if schedule.evaluate(s, n)] == [2000, 4000, 6000]
    assert not Schedule.of(QUICK, evaluates=False).evaluate(2000, n)
    assert Schedule.of(override(QUICK, steps_per_call=8), True).per_call == 8


def quick_settings():
    """The quick preset's settings at 64^3, sized for the worst case (1024 rays)."""
    return render_settings(QUICK, np.reshape(QUICK.schedule.aabb, (2, 3)), (64, 64, 64))


def test_the_buffers_grow_at_once_and_shrink_a_call_late_only_at_shrink_points():
    sizer, settings = BufferSizer({}), quick_settings()

    def fit(settings):  # after a call
        return sizer.fit(settings, called=True)[0]

    assert settings.density_capacity > 4096 and fit(settings) == settings
    assert sizer.capacities == [settings.density_capacity, settings.appearance_capacity]
    # The first fit may shrink: 25% over the peaks, rounded up to a bucket (1024 at least),
    # planned for the call after the next one (compile ahead compiles it behind that one);
    # the shading buffer, whose count at the initial field says little, stays as it is.
    worst = settings.appearance_capacity
    sizer.note([1000, 300])
    assert sizer.fit(settings, called=True) == (settings, True)
    assert sizer.planned == [1280, worst] and not sizer.may_shrink
    assert sizer.fit(settings, called=False) == (settings, False)  # no call since: not yet
    settings = fit(settings)
    assert (settings.density_capacity, settings.appearance_capacity) == (1280, worst)
    assert sizer.planned is None
    sizer.note([900, 200])  # fits: nothing changes, and nothing compiles
    assert fit(settings) == settings
    sizer.note([2000, 100])  # overflowed: grows at once
    settings = fit(settings)
    assert settings.density_capacity == 2560
    # At the next shrink point (after a checkpoint) the largest peak since the last one
    # counts, not the last call's.
    sizer.note([700, 100])
    sizer.may_shrink = True
    assert fit(settings).density_capacity == 2560  # the shading buffer shrinks at last:
    assert sizer.planned == [2560, 1024]
    sizer.note([700, 100])
    sizer.may_shrink = True
    assert fit(settings).density_capacity == 2560 and sizer.planned == [1024, 1024]
    sizer.note([3000, 100])  # a grow on top of the planned shrink, at once
    assert fit(settings).density_capacity == bucket(int(3000 * 1.25) + 1)


def test_the_buffers_survive_a_checkpoint_and_carry_over_a_grid_event():
    sizer, fresh = BufferSizer({}), quick_settings()
    sizer.note([1000, 300])
    settings, _ = sizer.fit(fresh, called=True)
    sizer.note([1100, 310])
    saved = sizer.saved(settings)
    assert saved == {"density_capacity": fresh.density_capacity,
                     "appearance_capacity": fresh.appearance_capacity, "peaks": [1100, 310],
                     "high": [1100, 310], "may_shrink": False,
                     "last": [1100, 310],
                     "planned": [1280, fresh.appearance_capacity], "held": None,
                     "first": False}  # fmt: skip
    again = BufferSizer(json.loads(json.dumps(saved)))  # as a checkpoint stores it
    assert (again.peaks, again.high, again.may_shrink) == ([1100, 310], [1100, 310], False)
    assert BufferSizer.restored(fresh, saved) == settings
    assert again.fit(settings, called=True)[0] == sizer.fit(settings, called=True)[0]
    settings = sizer.planned_settings(settings) if sizer.planned else settings
    # A grid event fixed ahead: the peaks read there are held (and saved with a checkpoint
    # in between), and the event carries them over, not the later ones: what compile ahead
    # predicted its stage from. The density buffer scales with the samples per ray, the
    # shading one with the sample spacing; then the old peaks (counted with the old grid)
    # are dropped.
    assert sizer.hold() == [1100, 310]
    sizer.note([1500, 320])
    assert BufferSizer(json.loads(json.dumps(sizer.saved(settings)))).held == [1100, 310]
    bigger = render_settings(QUICK, np.reshape(QUICK.schedule.aabb, (2, 3)), (128, 128, 128))
    scale = bigger.samples_per_ray / settings.samples_per_ray
    carried = sizer.new_grid(bigger, settings)
    assert carried.density_capacity == min(bigger.density_capacity,
                                           bucket(int(1100 * scale * 1.25) + 1))  # fmt: skip
    # Twice the samples per unit of length.
    denser = settings.step_size / bigger.step_size
    assert denser == pytest.approx(127 / 63)
    assert carried.appearance_capacity == bucket(int(310 * denser * 1.25) + 1)
    assert (sizer.peaks, sizer.high, sizer.may_shrink, sizer.held) == (None, None, True, None)
    # An event not fixed ahead (--event-lead 0) carries over the last peaks read.
    sizer.note([1000, 300])
    assert sizer.new_grid(bigger, settings).density_capacity == bucket(int(1000 * scale * 1.25) + 1)
    assert sizer.new_grid(bigger, settings) == bigger  # nothing to carry: the worst case


class FakeMonitor:
    """Logs every step a multiple of 10 by recording what it was given."""

    def __init__(self) -> None:
        self.lines = []

    def log_due(self, step: int) -> bool:
        return step % 10 == 0

    def write(self, step: int, m: dict, capacities: list[int]) -> None:
        self.lines.append((step, {k: float(v) for k, v in m.items()}, list(capacities)))


def call(first: int, n: int, finite=None, peak: int = 100) -> tuple[int, int, dict]:
    """A call of `n` steps from step `first`, its metrics as `train_steps` returns them:
    8 rows, of which the first `n` are steps (the rest must never be read)."""
    rows = 8
    finite = np.ones(rows, bool) if finite is None else np.array(finite + [True] * rows)[:rows]
    steps = np.arange(first, first + rows, dtype=np.float32)
    junk = np.arange(rows) >= n  # rows past the call's steps: huge, so a read shows
    metrics = {"finite": finite, "loss": steps / 1000, "density_peak": np.where(junk, 10**9, peak),
               "appearance_peak": np.where(junk, 10**9, peak // 2)}  # fmt: skip
    return first + n - 1, n, metrics


def test_readings_lag_one_call_and_log_the_last_step_of_a_call():
    cfg = override(QUICK, max_bad_steps=3)
    sizer, log, refits = BufferSizer({}), FakeMonitor(), []
    readings, settings = Readings(cfg, sizer, log, refits.append), quick_settings()
    settings = readings.queue(call(1, 1, peak=3000), settings)
    assert sizer.capacities == [settings.density_capacity, settings.appearance_capacity]
    assert log.lines == [] and readings.unread[0] == 1  # nothing read yet: still in flight
    worst = settings
    settings = readings.queue(call(2, 9 - 1, peak=200), settings)  # steps 2..9
    assert settings == worst  # call 1's peaks planned a shrink, to compile ahead first:
    assert [s.density_capacity for s in refits] == [bucket(int(3000 * 1.25) + 1)]
    settings = readings.queue(call(10, 1), settings)
    assert settings == refits[0]  # in use from the call after next
    assert sizer.high == [200, 100]  # call 2's 8 steps only, never the padding rows
    assert log.lines == []  # step 9: no log line due
    readings.drain(settings)  # step 10, read at once
    assert readings.unread is None
    assert log.lines[0][0] == 10 and log.lines[0][1]["loss"] == pytest.approx(0.010)


def test_readings_stop_at_max_bad_steps_in_a_row_across_calls():
    readings = Readings(override(QUICK, max_bad_steps=3), BufferSizer({}),
                        FakeMonitor())  # fmt: skip
    settings = quick_settings()
    readings.queue(call(1, 4, finite=[True, False, True, False]), settings)
    readings.queue(call(5, 4, finite=[False, True]), settings)  # two in a row: fine
    readings.queue(call(9, 4, finite=[False, False, False]), settings)
    with pytest.raises(TrainingError, match="3 steps in a row up to step 11 had a non-finite"):
        readings.queue(call(13, 4), settings)  # reads steps 9-12


class FakeWriter:
    def __init__(self) -> None:
        self.scalars, self.texts = {}, []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag, step] = value

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts.append((tag, text, step))


class FakeViewer:
    def __init__(self) -> None:
        self.reports, self.shown = [], []

    def report(self, step, n_iters, scalars, grid) -> None:
        self.reports.append((step, n_iters, scalars["loss"], grid))

    def hold(self, state, step, stop) -> float:
        return 2.5

    def wants_field(self) -> bool:
        return True

    def show(self, state, step) -> None:
        self.shown.append(step)


def test_the_monitor_writes_one_json_line_per_log_step(tmp_path, monkeypatch):
    """The log line's fields and their order (a run's log.jsonl must stay the same), with
    rays/s over a fake clock, and the viewer's report and hand-off."""
    writer, viewer = FakeWriter(), FakeViewer()
    sink = monitor.JsonLog(tmp_path / monitor.LOG_FILE, 0)
    watch = monitor.Monitor(QUICK, writer, sink, (0, 10.0), viewer)
    watch.grid, watch.resolution, watch.samples_per_ray = (64, 64, 64), 64.0, 110
    watch.training_rays = 5000
    monkeypatch.setattr(timing, "clock", lambda: 12.0)
    step_metrics = {"finite": True, "loss": 0.5, "mse": 0.25, "psnr": 6.0, "lr_grid": 0.02,
                    "lr_network": 0.001, "loss_scale": 1.0, "density_count": 2048 * 30,
                    "appearance_count": 1024 * 8, "density_peak": 61440, "appearance_peak": 8192,
                    "skipped_steps": 2, "dropped_samples": 7}  # fmt: skip
    watch.write(50, step_metrics, [65536, 10240])
    line = json.loads((tmp_path / monitor.LOG_FILE).read_text())
    assert list(line) == [
        "step", "loss", "mse", "psnr", "lr_grid", "lr_network", "loss_scale", "density_peak",
        "appearance_peak", "skipped_steps", "dropped_samples", "rays_per_s", "resolution",
        "samples_per_ray", "density_capacity", "appearance_capacity", "density_evals_per_ray",
        "shaded_samples_per_ray", "training_rays",
    ]  # fmt: skip
    assert line["rays_per_s"] == 50 * 1024 / 2.0
    assert line["density_evals_per_ray"] == 60.0 and line["shaded_samples_per_ray"] == 8.0
    assert line["skipped_steps"] == 2 and isinstance(line["dropped_samples"], int)
    assert writer.scalars["train/psnr", 50] == 6.0
    assert viewer.reports == [(50, 7000, 0.5, (64, 64, 64))]
    # The viewer's pause is left out of the next line's rays/s, and it gets the state.
    assert watch.hand_off(state=None, step=50, stop=lambda: None) == 2.5
    assert watch.last_log == 14.5 and viewer.shown == [50]
    watch.plan(60, 9000)
    assert watch.n_iters == watch.bar.total == 9000
    assert writer.texts == [("train/plan", "step 60: --fill-budget plans 9000 steps in all", 60)]
    watch.bar.close()


def test_a_first_signal_asks_to_stop_and_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    error = interrupted(signal.SIGINT, 120, "runs/x")
    assert str(error) == ("stopped by SIGINT at step 120; checkpoint saved, continue with "
                          "--resume --run-dir runs/x")  # fmt: skip
    assert error.signum == signal.SIGINT


def test_the_budget_is_spent_past_max_minutes():
    assert not budget_spent(override(QUICK, max_minutes=None).run, 1e9)
    one = override(QUICK, max_minutes=1.0)
    assert not budget_spent(one.run, 60.0) and budget_spent(one.run, 60.01)


def test_a_run_directory_has_one_trainer_at_a_time(tmp_path):
    held = rundir.lock(tmp_path / "run")
    try:
        assert (tmp_path / "run" / rundir.LOCK_FILE).read_text() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"in use by another trainer \\(pid {os.getpid()}\\)"):
            rundir.lock(tmp_path / "run")
    finally:
        held.close()
    rundir.lock(tmp_path / "run").close()  # free again once the holder let go
