"""The training loop's promises: it never waits for the step it just queued; --fill-budget
fits the run to the budget (checked with a fake clock), reproducibly, evaluations during
training included; those evaluations reach TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import threading

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from jax._src.array import ArrayImpl
from synthetic import tiny_config
from tensorboardX.proto import event_pb2

from tensorf import data, experiment
from tensorf.cli import Interrupted
from tensorf.config import override
from tensorf.eval.evaluation import Probe, evaluate_views
from tensorf.loop import budget, monitor, schedule
from tensorf.presets import PRESETS
from tensorf.train import checkpoint, steps, timing


def loop_config(scene, run_dir, **overrides):
    """The tiny run (events at 20 and 40) for 80 steps, a checkpoint every 30."""
    values = dict(n_iters=80, checkpoint_every=30, eval_max_views=1)
    return override(tiny_config(scene, run_dir), **{**values, **overrides})


class StepRecorder:
    """Wraps train_steps: counts the calls and the steps they ran, and remembers the arrays
    of the last two calls."""

    def __init__(self, monkeypatch) -> None:
        self.steps = self.calls = 0
        self.latest: set[int] = set()
        self.previous: set[int] = set()
        self.real = steps.train_steps
        monkeypatch.setattr(steps, "train_steps", self)

    def __call__(self, state, pool, n, *args, **kwargs):
        state, metrics = self.real(state, pool, n, *args, **kwargs)
        self.steps += n
        self.calls += 1
        self.previous, self.latest = self.latest, {id(x) for x in jax.tree.leaves((state, metrics))}
        return state, metrics


def test_the_loop_never_waits_for_the_steps_it_queued(sphere_scene, tmp_path, monkeypatch):
    """Every device-to-host read is recorded. Between grid events and checkpoints (where
    the state itself must come to the host) the loop may only read the call before the
    one in flight; a read of the queued call, or of anything else (rays drawn on the host
    and sent back, counts kept on the host), fails. The steps run in calls that end where
    the host has work (step 1, log lines every 10 steps, checkpoints, grid events)."""
    cfg = loop_config(sphere_scene, tmp_path / "run")
    recorder = StepRecorder(monkeypatch)
    reads = []  # (steps dispatched, "queued" | "previous" | "other")
    value = ArrayImpl._value

    def recorded(array):
        # The compile-ahead worker reads its copy of the state on its own thread: the loop
        # does not wait for that.
        if recorder.steps and threading.current_thread() is threading.main_thread():
            kind = ("queued" if id(array) in recorder.latest
                    else "previous" if id(array) in recorder.previous else "other")  # fmt: skip
            reads.append((recorder.steps, kind))
        return value.fget(array)

    monkeypatch.setattr(ArrayImpl, "_value", property(recorded))
    experiment.train(cfg)
    assert recorder.steps == cfg.schedule.n_iters
    # Step 1, then one call per log line.
    assert recorder.calls == 1 + cfg.schedule.n_iters // cfg.run.log_every
    # Where the state must reach the host: grid events and where they are fixed ahead
    # (10, 30: an alpha mask is measured), checkpoints, the end; and step 1, whose counts
    # size the buffers.
    every = cfg.run.checkpoint_every
    drains = {1, 10, 20, 30, 40, cfg.schedule.n_iters,
              *range(every, cfg.schedule.n_iters, every)}  # fmt: skip
    waits = sorted({step for step, kind in reads if kind != "previous" and step not in drains})
    assert waits == []
    # The counts of (nearly) every call are read, one call late.
    lagged = {step for step, kind in reads if kind == "previous"}
    assert len(lagged) >= recorder.calls - len(drains) - 1


class FakeClock:
    """A clock that advances `seconds_per_step` with every train step dispatched."""

    def __init__(self, monkeypatch, seconds_per_step: float) -> None:
        self.recorder = StepRecorder(monkeypatch)
        self.seconds_per_step = seconds_per_step
        monkeypatch.setattr(timing, "clock", self)
        monkeypatch.setattr(timing, "compiling", lambda: 0.0)  # no time passes in it

    def __call__(self) -> float:
        return self.recorder.steps * self.seconds_per_step


def planned(cfg) -> int:
    """The planned length of a run, as its latest checkpoint saved it."""
    return checkpoint.restore_latest(checkpoint.manager(cfg.run.run_dir), cfg)[1]["n_iters"]


@pytest.mark.parametrize(
    "speed",
    [
        pytest.param(2.0, id="twice-as-fast", marks=pytest.mark.slow),
        pytest.param(0.5, id="half-as-fast"),
    ],
)
def test_fill_budget_ends_at_the_budget_with_a_complete_schedule(
    sphere_scene, tmp_path, monkeypatch, speed
):
    """A machine that runs the given n_iters in half (or twice) the budget trains twice
    (half) as many steps, ending at the budget with the learning rate fully decayed."""
    seconds = 60.0
    cfg = loop_config(sphere_scene, tmp_path / "run", n_iters=400, max_minutes=seconds / 60,
                      fill_budget=True)  # fmt: skip
    clock = FakeClock(monkeypatch, seconds / (cfg.schedule.n_iters * speed))
    metrics = experiment.train(cfg)
    n_iters = planned(cfg)
    assert metrics["step"] == n_iters == clock.recorder.steps
    # The plan leaves 2% of the budget for the final checkpoint.
    assert n_iters == pytest.approx(cfg.schedule.n_iters * speed * (1 - budget.RESERVE), abs=2)
    assert (1 - 2 * budget.RESERVE) * seconds <= metrics["train_seconds"] <= seconds
    last = json.loads((cfg.run.run_dir / monitor.LOG_FILE).read_text().splitlines()[-1])
    assert last["step"] == n_iters
    # The last step's rate is that of step n_iters - 1, counted from the upsample.
    since = n_iters - 1 - cfg.schedule.upsample_steps[-1]
    decayed = cfg.optimiser.lr_decay_ratio ** (since / n_iters)
    assert last["lr_grid"] == pytest.approx(cfg.optimiser.lr_grid * decayed, rel=1e-5)


def test_fill_budget_plan_survives_resume(sphere_scene, tmp_path, monkeypatch):
    """Interrupted after the plan, a resumed run keeps it and ends bit for bit where the
    uninterrupted one did."""
    seconds = 60.0
    cfg_a, cfg_b = (
        loop_config(sphere_scene, tmp_path / name, n_iters=400, max_minutes=seconds / 60,
                    fill_budget=True)
        for name in ("a", "b")
    )  # fmt: skip
    seconds_per_step = seconds / 600
    FakeClock(monkeypatch, seconds_per_step)
    experiment.train(cfg_a)

    clock = FakeClock(monkeypatch, seconds_per_step)
    stop_at = 300  # past the plan (made at step 160)
    step = clock.recorder.__call__

    def interrupting(*args, **kwargs):
        out = step(*args, **kwargs)
        if clock.recorder.steps == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(steps, "train_steps", interrupting)
    with pytest.raises(Interrupted):
        experiment.train(cfg_b)
    assert planned(cfg_b) == planned(cfg_a) > stop_at
    FakeClock(monkeypatch, 1.5 * seconds_per_step)  # a slower machine on resume: same plan
    experiment.train(override(cfg_b, resume=True))
    state_a = checkpoint.restore_latest(checkpoint.manager(cfg_a.run.run_dir), cfg_a)[0]
    state_b = checkpoint.restore_latest(checkpoint.manager(cfg_b.run.run_dir), cfg_b)[0]
    assert int(state_a.step) == int(state_b.step) == planned(cfg_a)
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def read_tensorboard(folder) -> dict[str, dict[int, object]]:
    """Every value in a TensorBoard folder's event files (TFRecords of Event protos):
    {tag: {step: scalar, or an image's encoded bytes}}."""
    values: dict[str, dict[int, object]] = {}
    for path in sorted(folder.glob("events.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])  # then the length's CRC
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4  # and the data's CRC
            for v in event.summary.value:
                image = v.image.encoded_image_string
                values.setdefault(v.tag, {})[event.step] = image or v.simple_value
    return values


def test_evaluations_during_training_reach_tensorboard(sphere_scene, tmp_path):
    """--eval-every: at steps 20, 40 and 60 of 80, the PSNR of two held-out views and their
    renders are logged; each is that of the state checkpointed at its step (20 and 60
    checked)."""
    cfg = loop_config(sphere_scene, tmp_path / "run", eval_every=20, eval_every_views=2,
                      checkpoint_every=20, keep_checkpoints=4)  # fmt: skip
    experiment.train(cfg)
    logged = read_tensorboard(cfg.run.run_dir / "tensorboard")
    tag = "test_during_training"
    assert sorted(logged[f"{tag}/psnr"]) == [20, 40, 60]
    assert sorted(logged["test/psnr"]) == [80]
    for name in ("rgb_0", "rgb_1", "depth_0", "depth_1"):
        for step in (20, 40, 60):
            assert iio.imread(logged[f"{tag}/{name}"][step]).shape == (32, 32, 3)
    views = data.load_views(sphere_scene, "test", max_views=2)
    for step in (20, 60):
        alone = tmp_path / f"at_{step}"
        shutil.copytree(cfg.run.run_dir / "checkpoints" / str(step),
                        alone / "checkpoints" / str(step))  # fmt: skip
        state = checkpoint.restore_latest(checkpoint.manager(alone), cfg)[0]
        metrics, _ = evaluate_views(state, cfg, views, None)
        assert logged[f"{tag}/psnr"][step] == pytest.approx(metrics["psnr"], abs=1e-4)
        assert logged[f"{tag}/ssim"][step] == pytest.approx(metrics["ssim"], abs=1e-4)
        assert logged[f"{tag}/lpips"][step] == pytest.approx(metrics["lpips"], abs=1e-4)
    assert logged[f"{tag}/psnr"][60] > logged[f"{tag}/psnr"][20]


def test_fill_budget_plans_for_evaluations_and_compilations_during_training():
    cfg = override(PRESETS["quick"][1], max_minutes=10.0)
    plan = budget.BudgetPlan(cfg, planned=False)
    at = plan.at
    plan.note(at - budget.PLAN_STEPS, 100.0)
    # 100 steps took 10 s of training; an evaluation took 5 s and a buffer refit compiled
    # for 3 s in between (118 s in all, 110 s of steps alone). Evaluations will go on
    # costing 5 ms per step: the rest of the budget (588 s less the 118 spent) goes to
    # steps of 100 + 5 ms.
    n_iters = plan.n_iters(at, 118.0, steady=110.0, eval_per_step=0.005)
    assert n_iters == at + int((600 * (1 - budget.RESERVE) - 118) / 0.105)


def test_evaluations_during_training_are_planned_without_their_compilation(tiny_run):
    """The first evaluation compiles its renders; the plan counts what the later ones cost
    (lego quick's plan, counting the first's compilation on each, stopped at 91%)."""
    cfg, _ = tiny_run
    _, state = checkpoint.load_run(cfg.run.run_dir)
    probe = Probe(override(cfg, eval_every=10, eval_every_views=1), None)
    jax.clear_caches()  # as in a fresh process: the renders compile again
    first = probe.run(state, 10)
    assert 0 < probe.compiling < first
    compiled = probe.compiling
    second = probe.run(state, 20)
    assert probe.compiling == pytest.approx(compiled, abs=0.05)  # nothing the second time
    assert probe.per_step() == pytest.approx((first + second - compiled) / 2 / 10)
    assert probe.report() == {"eval_during_training_seconds": first + second,
                              "eval_during_training_compile_seconds": compiled}  # fmt: skip


def test_calls_end_where_the_host_has_work():
    """`next_stop`, worked by hand: log lines every 50, checkpoints every 500, grid events
    at 120 and 200, at most 64 steps a call, 1000 in all."""
    stops, step = [], 0
    while step < 1000:
        step = schedule.next_stop(step, 1000, 64, (50, 500, 0), {120, 200})
        stops.append(step)
    assert stops[:8] == [50, 100, 120, 150, 200, 250, 300, 350]
    assert stops[-1] == 1000 and len(stops) == 21  # the 20 log lines and the event at 120
    # Past the last event, without logging: the most a call may run, then the end.
    assert schedule.next_stop(980, 1000, 64, (0,), {120}) == 1000
    assert schedule.next_stop(900, 1000, 64, (0,), set()) == 964
    # Resumed from its checkpoint at 500, a run cuts its calls as the uninterrupted one.
    chain = [500]
    while chain[-1] < 1000:
        chain.append(schedule.next_stop(chain[-1], 1000, 64, (500,), set()))
    assert chain == [500, 564, 628, 692, 756, 820, 884, 948, 1000]


def test_grid_events_are_fixed_ahead_within_their_stage():
    """The quick preset's events (masks at 500, 1000, 2000; upsamples at 500, 1000, 1500)
    are fixed 128 steps early; a closer event before one halves the lead (it is fixed on
    the stage the event ends), and a lead of 0 fixes none early."""
    cfg = PRESETS["quick"][1]
    leads = {372: 500, 872: 1000, 1372: 1500, 1872: 2000}
    assert schedule.Schedule.of(cfg, evaluates=False).leads == leads
    assert schedule.event_leads({20, 40}, 128) == {10: 20, 30: 40}
    assert schedule.event_leads({1, 250, 300}, 128) == {126: 250, 275: 300}
    assert schedule.event_leads({500}, 0) == {}
    plain = schedule.Schedule.of(override(cfg, event_lead=0), evaluates=False)
    assert plain.stop(300, 5000, set()) == 350 and plain.leads == {}
    assert schedule.Schedule.of(cfg, evaluates=False).stop(350, 5000, set()) == 372


def test_the_budget_plan_asks_for_calls_to_end_where_it_measures():
    cfg = override(PRESETS["quick"][1], max_minutes=10.0)
    plan = budget.BudgetPlan(cfg, planned=False)
    assert plan.stops() == {plan.at - budget.PLAN_STEPS, plan.at}
    plan.note(plan.at - budget.PLAN_STEPS + 30, 100.0)  # resumed inside the window
    assert plan.stops() == {plan.at, plan.at - budget.PLAN_STEPS + 30 + budget.PLAN_WARMUP}
    assert budget.BudgetPlan(cfg, planned=True).stops() == set()


@pytest.mark.parametrize("preset", ["quick", "quick-cp", "llff-quick", "unbounded-quick"])
def test_every_cpu_preset_fills_its_budget(preset):
    """llff-quick once ended its 5000 steps in 9.9 of 15 minutes: every CPU preset plans
    its length from the measured step rate once its last grid event is past."""
    cfg = override(PRESETS[preset][1], max_minutes=15.0)
    plan = budget.BudgetPlan(cfg, planned=False)
    last_event = max(cfg.schedule.mask_steps + cfg.schedule.upsample_steps)
    assert plan.at == last_event + budget.PLAN_WARMUP + budget.PLAN_STEPS
    assert plan.at < cfg.schedule.n_iters
