"""The training loop, top to bottom. The devices run the steps in calls that end where the
host has work (`Schedule`); each call is queued behind the one whose metrics the host
reads (`Readings`), so the devices never wait for the host between those points."""

from __future__ import annotations

from orbax.checkpoint import CheckpointManager

from tensorf import data, parallel
from tensorf.config import TrainConfig, override
from tensorf.eval.evaluation import Probe, finish
from tensorf.field.alpha_mask import Measured
from tensorf.loop import start
from tensorf.loop.ahead import Ahead
from tensorf.loop.budget import BudgetPlan, budget_spent
from tensorf.loop.buffers import BufferSizer
from tensorf.loop.monitor import Monitor, open_sinks
from tensorf.loop.readings import Readings
from tensorf.loop.schedule import Schedule
from tensorf.loop.signals import StopOnSignals, interrupted
from tensorf.train import checkpoint, events, steps, timing, train_state
from tensorf.train.ray_pool import RayPool
from tensorf.train.train_state import TrainState


def run(cfg: TrainConfig, views: data.Views, load_seconds: float, projection, viewer) -> dict:
    """Train (or resume) on `views` and evaluate; returns the final metrics. `projection`:
    the scene's NDC projection (None for world rays); `viewer`: the live viewer or None."""
    begun = start.begin(cfg, views)
    pool, mngr, mesh, step = begun.pool, begun.mngr, parallel.data_mesh(), int(begun.state.step)
    state = parallel.replicate(begun.state, mesh)
    writer, log = open_sinks(cfg, step) if parallel.is_primary() else (None, None)
    settings = BufferSizer.restored(train_state.settings_for(cfg, state, projection), begun.saved)
    # A filled budget's plan (see `BudgetPlan`) is part of the run: saved, and kept on resume.
    run_cfg = override(cfg, n_iters=begun.saved.get("n_iters", cfg.schedule.n_iters))
    plan = BudgetPlan(cfg, planned="n_iters" in begun.saved)
    probe = Probe(cfg, writer)
    schedule = Schedule.of(cfg, evaluates=probe.views is not None)
    began, compiles = timing.clock(), timing.COMPILES.copy()
    monitor = Monitor(run_cfg, writer, log, (step, began), viewer)
    monitor.describe(state, settings, len(pool.index))
    sizer = BufferSizer(begun.saved)
    device_pool = pool.on(mesh, cfg.run.seed)
    spec, hyper = steps.StepSpec.of(cfg), steps.Hyper.of(run_cfg)
    ahead = Ahead(spec, mesh, cfg, schedule.voxels, begun.filter_rays, projection)
    readings = Readings(cfg, sizer, monitor, ahead.refit)
    # An alpha mask measured ahead of its update (`ScheduleConfig.event_lead`).
    measured = begun.saved.get("measured")
    with StopOnSignals() as signals, ahead:
        if sizer.held is not None:  # resumed between an event's lead and the event
            coming = min(s for s in schedule.leads.values() if s > step)
            ahead.foresee(coming, measured, state, pool, hyper, settings, sizer.held)
        while step < run_cfg.schedule.n_iters:
            n = schedule.stop(step, run_cfg.schedule.n_iters, plan.stops()) - step
            state, metrics = ahead.train_steps(state, device_pool, n, hyper, settings, step)
            step += n
            monitor.bar.update(n)
            settings = readings.queue((step, n, metrics), settings)
            event, save = schedule.grid_event(step), schedule.save(step, run_cfg.schedule.n_iters)
            # Process 0 decides, so that every process stops at the same step.
            out_of_time, signum = parallel.from_primary(
                budget_spent(cfg.run, timing.clock() - began), signals.signum or 0
            )
            evaluate = (schedule.evaluate(step, run_cfg.schedule.n_iters)
                        and not (out_of_time or signum))
            # The plan's measurements wait for the devices too: a clock read while a call
            # is still in flight counted its steps in the window (lego quick planned 20%
            # too few steps).
            measures = step in plan.stops()
            lead = schedule.leads.get(step)
            if event or save or out_of_time or signum or measures or evaluate or lead or step == 1:
                settings = readings.drain(settings)  # the host needs the state now
            sizer.may_shrink |= save  # a checkpoint step is a shrink point
            planned = replan(plan, step, began, probe, compiles, run_cfg, monitor, ahead)
            if planned is not run_cfg:
                run_cfg, hyper = planned, steps.Hyper.of(planned)
            if event:
                state, pool, device_pool, fresh, ok = events.on_devices(
                    state, pool, cfg, step, schedule.voxels, begun.filter_rays, projection,
                    mesh, measured,
                )  # fmt: skip
                settings, measured = sizer.new_grid(fresh, settings), None
                monitor.grid_event(step, state, settings, len(pool.index), ok)
            if lead:
                if lead in schedule.mask_steps:
                    measured = events.measure_mask(parallel.local_copy(state), cfg, lead)
                ahead.foresee(lead, measured, state, pool, hyper, settings, sizer.hold())
            if evaluate:
                monitor.last_log += probe.run(state, step)  # left out of the rays/s
            if save or out_of_time or signum:
                saved = {**sizer.saved(settings), **plan.saved(run_cfg.schedule.n_iters)}
                save_run(mngr, state, saved, cfg, views, pool, measured)
            if signum:
                mngr.wait_until_finished()
                raise interrupted(signum, step, cfg.run.run_dir)
            if out_of_time:
                monitor.say(f"--max-minutes {cfg.run.max_minutes} reached at step {step}")
                break
            # A pause from the page is left out of the time budget.
            began += monitor.hand_off(state, step, lambda: signals.signum)
    monitor.bar.close()
    train_seconds = timing.clock() - began
    mngr.wait_until_finished()
    counts = {**timing.compiles_since(compiles), **ahead.report(), **probe.report()}
    return finish(state, cfg, writer, train_seconds, load_seconds + probe.load_seconds, counts)


def replan(plan: BudgetPlan, step: int, began: float, probe: Probe, compiles: dict,
           run_cfg: TrainConfig, monitor: Monitor, ahead: Ahead) -> TrainConfig:  # fmt: skip
    """`run_cfg` with the length `--fill-budget` plans, where its plan is due (training
    `began` then); the plan notes the step rate's window. The rate is measured without
    evaluations and compilations (a buffer refit in the window once cut a 15-minute plan to
    half the budget), and with no compilation sharing the cores (`Ahead.settle`)."""
    if step in plan.stops():
        ahead.settle()
    seconds = timing.clock() - began
    steady = seconds - probe.seconds - timing.compile_seconds_since(compiles)
    if plan.due(step):
        n_iters = plan.n_iters(step, seconds, steady, probe.per_step())
        run_cfg = override(run_cfg, n_iters=n_iters)
        monitor.plan(step, n_iters)
    plan.note(step, steady)
    return run_cfg


def save_run(mngr: CheckpointManager, state: TrainState, saved: dict, cfg: TrainConfig,
             views: data.Views, pool: RayPool,
             measured: Measured | None) -> None:  # fmt: skip
    """A checkpoint (`saved`: what goes with the state; `measured`: an alpha mask measured
    ahead of its update), and from process 0 the poses refined so far (--refine-poses)."""
    checkpoint.save(mngr, state, saved, measured)
    if parallel.is_primary():
        start.export_poses(cfg, views, pool, state)
