"""A training run end to end: data, schedule, logging, checkpoints, time budget, evaluation."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from tensorboardX import SummaryWriter

from tensorf import alpha_mask, checkpoint, checks, cli, data, outputs, parallel, training
from tensorf.cli import ConfigError, Interrupted, TrainingError, run_main
from tensorf.config import (
    PRESETS,
    DataConfig,
    DistributedConfig,
    EvalConfig,
    RenderConfig,
    RunConfig,
    TrainConfig,
    flat_dict,
    override,
    resumable_options,
)
from tensorf.data import safe_json
from tensorf.evaluate import evaluate_views, summary
from tensorf.progress import tqdm
from tensorf.render import carry_capacity, fit_capacity

LOG_FILE = "log.jsonl"
LOCK_FILE = "lock"


def main() -> None:
    """The training command line (train.py, train_lego.py, tensorf-train): a preset, then
    any option. Returns nothing: a console script exits with what its function returns."""
    run_main(lambda: train(tyro.extras.overridable_config_cli(PRESETS)))


def check_distributed(cfg: DistributedConfig) -> None:
    if cfg.num_processes < 1 or not 0 <= cfg.process_id < cfg.num_processes:
        raise ConfigError(
            "--distributed.num-processes must be >= 1 and --distributed.process-id between 0 "
            f"and {cfg.num_processes - 1}"
        )


def _check_run_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite a run; on --resume check the saved config against ours."""
    cli.check_creatable(cfg.run.run_dir, "--run-dir")
    has_run = (cfg.run.run_dir / checkpoint.CONFIG_FILE).exists()
    if not cfg.run.resume:
        if has_run:
            raise ConfigError(
                f"{cfg.run.run_dir} already holds a run; pass --resume to continue it "
                "or choose another --run-dir"
            )
        return
    if not has_run:
        raise ConfigError(f"{cfg.run.run_dir}: nothing to resume; drop --resume to start a new run")
    saved = checkpoint.load_config(cfg.run.run_dir)
    # By the options' flat names (n_iters, not schedule.n_iters), as the flags are.
    ours, theirs, free = flat_dict(cfg), flat_dict(saved), resumable_options()
    differ = sorted(k for k in ours if k not in free and ours[k] != theirs.get(k))
    if differ:
        raise ConfigError(
            f"--resume with options that differ from the saved run: {', '.join(differ)}; "
            "use the same options (or a new --run-dir)"
        )


def make_pool(views: data.Views) -> training.RayPool:
    n = views.n_views * views.height * views.width
    cameras = training.Cameras.of(views)
    return training.RayPool(views.images.reshape(-1, 3), np.arange(n, dtype=np.int32), cameras)


_KIND_NAMES = {"object": "an object scene", "capture": "a 360-degree capture"}


def check_scene_kind(scene: DataConfig, render: RenderConfig, views: data.Views) -> None:
    """Forward-facing captures need NDC rays, and objects world rays."""
    if views.kind == "forward-facing" and not render.ndc:
        raise ConfigError(
            f"{scene.dataset_path} is a forward-facing (LLFF) capture, which needs NDC rays: "
            "use a preset made for it (llff, llff-quick) or pass --render.ndc"
        )
    if views.kind != "forward-facing" and render.ndc:
        raise ConfigError(
            f"{scene.dataset_path} is {_KIND_NAMES[views.kind]}, which NDC cannot represent "
            "(it needs cameras that all look the same way): drop --render.ndc or use a "
            "preset made for it"
        )


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and evaluate; returns the final metrics (also in metrics.json).

    With several processes (cfg.distributed), every process runs this: each loads its
    share of the training views, and process 0 alone writes logs, metrics and renders.
    """
    check_distributed(cfg.distributed)
    try:
        parallel.initialize(cfg.distributed)
    except (RuntimeError, ValueError) as error:  # jax.distributed's errors
        reason = " ".join(str(error).split())[:160]
        raise ConfigError(f"--distributed: could not join the other processes ({reason}); "
                          "check --distributed.coordinator-address") from error  # fmt: skip
    checks.check_config(cfg)
    _check_run_dir(cfg)
    use_compile_cache(cfg.run.compile_cache)
    shard = (jax.process_index(), jax.process_count())
    load_start = time.perf_counter()
    views = data.load_views(cfg.data.dataset_path, "train", downscale=cfg.data.downscale,
                            shard=shard, drop_missing=cfg.data.drop_missing_images)  # fmt: skip
    check_scene_kind(cfg.data, cfg.render, views)
    checks.check_memory(cfg, views.images.nbytes)
    load_seconds = time.perf_counter() - load_start
    projection = training.ndc_for(cfg.render, views.intrinsics)
    if cfg.eval.eval_split not in data.available_splits(cfg.data.dataset_path):
        splits = ", ".join(data.available_splits(cfg.data.dataset_path))
        raise ConfigError(f"--eval-split {cfg.eval.eval_split}: {cfg.data.dataset_path} has the "
                          f"splits {splits}")  # fmt: skip
    load_seconds += check_eval_views(cfg.data, cfg.eval)
    parallel.sync("run dir checked")  # by every process, before process 0 writes to it
    # The viewer binds its address before the lock is taken, so a trainer never holds the
    # run while it waits on the network. Single-process only (checks.py).
    viewer = start_viewer(cfg, views) if cfg.live.viewer else None
    lock = None
    try:
        # Only process 0 writes to the run directory, so it alone holds the lock.
        lock = _lock(cfg.run.run_dir) if parallel.is_primary() else None
        return _train(cfg, views, load_seconds, projection, viewer)
    finally:
        if viewer is not None:
            viewer.close()
        if lock is not None:
            lock.close()


def check_eval_views(scene: DataConfig, evaluation: EvalConfig) -> float:
    """Read the views the final evaluation will read, before the first step: a bad test
    image found after training would cost the whole run. They are read again at the end
    rather than held, which would keep their memory from training. Returns the seconds."""
    start = time.perf_counter()
    data.load_views(scene.dataset_path, evaluation.eval_split, downscale=scene.downscale,
                    max_views=evaluation.eval_max_views,
                    drop_missing=scene.drop_missing_images)  # fmt: skip
    return time.perf_counter() - start


def use_compile_cache(folder: Path | None) -> None:
    """Compiled programs go to (and come from) `folder`, unless JAX_COMPILATION_CACHE_DIR
    chose another. JAX caches only the programs that took over a second to compile (its
    default): the train step, the renderer, the alpha mask; on a CPU too."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # The cache only saves time: a folder it cannot have (a read-only home) is no
            # reason to refuse to train, and JAX would warn at every compilation.
            print(f"warning: --compile-cache {folder}: {error.strerror or error}; compiling "
                  "without the persistent cache", file=sys.stderr)  # fmt: skip
            folder = None
    jax.config.update("jax_compilation_cache_dir", None if folder is None else str(folder))


def start_viewer(cfg: TrainConfig, views: data.Views):
    """The live viewer (--viewer) of this run, showing the training cameras."""
    from tensorf.viewer import FieldViewer  # viser's import costs a second: only when asked

    cameras = {"intrinsics": views.intrinsics, "c2w": np.asarray(views.c2w, np.float64),
               "kind": views.kind, "depth_bounds": views.depth_bounds}  # fmt: skip
    viewer = FieldViewer(cfg, cameras, cfg.live.viewer_host, cfg.live.viewer_port, training=True,
                         flags=("--viewer-host", "--viewer-port"))  # fmt: skip
    print(f"viewer: open {viewer.url} to watch training (pause it from the page)")
    return viewer


def _lock(run_dir: Path):
    """An exclusive lock on the run directory, held while the returned file is open. The
    kernel drops it when the process dies, so a killed trainer never blocks --resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        message = (f"{run_dir} is in use by another trainer (pid {holder}); wait for it to "
                   "finish or stop it, or choose another --run-dir")  # fmt: skip
        raise ConfigError(message) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _train(cfg: TrainConfig, views: data.Views, load_seconds: float, projection, viewer) -> dict:
    primary = parallel.is_primary()
    pool = make_pool(views)
    # Rays that miss the box can never be anything but background (official: bbox_only).
    # In NDC every ray crosses the box, as the official code assumes by not filtering, and
    # a contracted box holds every ray whole.
    filter_rays = not (cfg.render.ndc or cfg.render.contract)
    if filter_rays:
        initial_box = alpha_mask.everything(np.reshape(cfg.schedule.aabb, (2, 3)))
        pool = training.filter_rays(initial_box, pool, cfg.render)
        if not len(pool.index):
            raise ConfigError(
                f"no training ray reaches the box --aabb {' '.join(map(str, cfg.schedule.aabb))} "
                f"between --render.near {cfg.render.near} and --render.far {cfg.render.far}: the "
                "scene is elsewhere; fix those options (or use the preset made for this scene)"
            )
    # Written only once the data loaded, so a failed start leaves no run behind.
    if primary:
        checkpoint.save_config(cfg.run.run_dir, cfg)
        checkpoint.save_cameras(cfg.run.run_dir, views)
    mesh = parallel.data_mesh()
    mngr = checkpoint.manager(cfg.run.run_dir, cfg.run.keep_checkpoints)
    buffers = {}
    if cfg.run.resume and mngr.all_steps():
        unreadable = cfg.run.run_dir / "unreadable_checkpoints"
        state, buffers = checkpoint.restore_latest(mngr, cfg, set_aside=unreadable)
    else:
        if cfg.run.resume and primary:
            print(f"warning: --resume: {cfg.run.run_dir} has no checkpoint yet (the run stopped "
                  "before its first); starting from step 0", file=sys.stderr)  # fmt: skip
        state = training.init_state(cfg)
    step = int(state.step)
    if filter_rays and any(s <= step for s in cfg.schedule.mask_steps[1:]):
        pool = training.filter_rays(state.mask, pool, cfg.render)
    state = parallel.replicate(state, mesh)

    writer = log = None
    if primary:
        # purge_step drops what a killed run logged after its last checkpoint.
        writer = SummaryWriter(str(cfg.run.run_dir / "tensorboard"), purge_step=step or None)
        log = _JsonLog(cfg.run.run_dir / LOG_FILE, step)
    schedule = training.voxel_schedule(cfg.schedule)
    voxels = dict(zip(cfg.schedule.upsample_steps, schedule, strict=True))
    capacities = {k: buffers[k] for k in CAPACITIES if k in buffers}
    settings = dataclasses.replace(training.settings_for(cfg, state, projection), **capacities)
    # A filled budget's plan (see `BudgetPlan`) is part of the run: saved, and kept on resume.
    run_cfg = override(cfg, n_iters=buffers.get("n_iters", cfg.schedule.n_iters))
    plan = BudgetPlan(cfg, planned="n_iters" in buffers)
    load_start = time.perf_counter()
    probe = _Probe(cfg, writer)
    load_seconds += time.perf_counter() - load_start
    start, compiles = clock(), COMPILES.copy()
    bar = tqdm(total=run_cfg.schedule.n_iters, initial=step, desc="training", unit="step",
               dynamic_ncols=True, disable=not primary)  # fmt: skip
    meter = _Meter(run_cfg, pool, writer, log, bar, (step, start), buffers, viewer)
    meter.describe(state, settings)
    device_pool = pool.on(mesh, cfg.run.seed)
    spec, hyper = training.StepSpec.of(cfg), training.Hyper.of(run_cfg)
    per_call = cfg.run.steps_per_call or training.MAX_STEPS_PER_CALL
    unread = None  # (last step, steps, metrics) of the call in flight
    with _StopOnSignals() as signals:
        while step < run_cfg.schedule.n_iters:
            every = (cfg.run.log_every, cfg.run.checkpoint_every,
                     cfg.eval.eval_every if probe.views else 0)
            # Step 1 ends a call of its own: its counts size the buffers at once (the first
            # ones are sized for the worst case), and a budget is first checked there.
            events = {1, *cfg.schedule.mask_steps, *voxels, *plan.stops()}
            n = next_stop(step, run_cfg.schedule.n_iters, per_call, every, events) - step
            state, metrics = training.train_steps(state, device_pool, n, hyper, spec, settings,
                                                  mesh)  # fmt: skip
            step += n
            bar.update(n)
            # This call is queued behind the previous one, whose counts are read now: the
            # devices never wait for the host. The buffers follow with that one call's lag.
            if unread is not None:
                meter.read(*unread)
            settings = meter.fit(settings)
            unread = (step, n, metrics)
            event = step in cfg.schedule.mask_steps or step in voxels
            # Process 0 decides, so that every process stops at the same step.
            out_of_time, signum = parallel.from_primary(
                budget_spent(cfg.run, clock() - start), signals.signum or 0
            )
            save = step % cfg.run.checkpoint_every == 0 or step == run_cfg.schedule.n_iters
            probe_due = probe.due(step, run_cfg.schedule.n_iters) and not (out_of_time or signum)
            # The plan's measurements wait for the devices too: a clock read while a call
            # is still in flight counted its steps in the window (lego quick planned 20%
            # too few steps).
            measures = step in plan.stops()
            if event or save or out_of_time or signum or measures or probe_due or step == 1:
                meter.read(*unread)
                settings, unread = meter.fit(settings), None
            if save:
                meter.may_shrink = True
            # The step rate is measured without evaluations and compilations (a buffer
            # refit in the window once cut a 15-minute plan to half the budget).
            steady = clock() - start - probe.seconds - (compiling() - compiles["seconds"])
            if plan.due(step):
                n_iters = plan.n_iters(step, clock() - start, steady, probe.per_step())
                run_cfg = override(run_cfg, n_iters=n_iters)
                hyper = training.Hyper.of(run_cfg)
                bar.total = run_cfg.schedule.n_iters
                meter.plan(step, run_cfg.schedule.n_iters)
            plan.note(step, steady)
            if event:
                state = parallel.local_copy(state)  # grid events run in each process
                state, pool = grid_events(state, pool, cfg, step, voxels, meter, filter_rays)
                meter.pool = pool  # logs count the rays of the filtered pool from now on
                state, device_pool = parallel.replicate(state, mesh), pool.on(mesh, cfg.run.seed)
                fresh = training.settings_for(cfg, state, projection)
                settings = carry_capacity(fresh, settings, meter.peaks)
                meter.new_grid(state, settings)
                if primary:
                    tqdm.write(
                        f"step {step}: grid {state.resolution}, {settings.samples_per_ray} "
                        f"samples/ray, {len(pool.index)} training rays"
                    )
            if probe_due:
                meter.last_log += probe.run(state, step)  # left out of the rays/s
            if save or out_of_time or signum:
                checkpoint.save(mngr, state, meter.buffers(settings, run_cfg, plan))
            if signum:
                mngr.wait_until_finished()
                raise Interrupted(
                    f"stopped by {signal.Signals(signum).name} at step {step}; "
                    f"checkpoint saved, continue with --resume --run-dir {cfg.run.run_dir}",
                    signum,
                )
            if out_of_time:
                if primary:
                    tqdm.write(f"--max-minutes {cfg.run.max_minutes} reached at step {step}")
                break
            if viewer is not None:
                # A pause from the page is left out of the time budget and the rays/s.
                paused = viewer.hold(state, step, lambda: signals.signum)
                start += paused
                meter.last_log += paused
                if viewer.wants_field():
                    viewer.show(state, step)
    bar.close()
    train_seconds = clock() - start
    mngr.wait_until_finished()
    counts = {"train_step_compiles": COMPILES["count"] - compiles["count"],
              "train_step_compile_seconds": COMPILES["seconds"] - compiles["seconds"],
              "compile_cache_hits": COMPILES["cache_hits"] - compiles["cache_hits"]}  # fmt: skip
    return finish(state, cfg, writer, train_seconds, load_seconds, counts)


# The render buffer sizes saved with a checkpoint, so that a resumed run uses the same.
CAPACITIES = ("density_capacity", "appearance_capacity")
# The trainer's clock (a test swaps it for a fake one).
clock = time.perf_counter


def compiling() -> float:
    """Seconds spent compiling the train step so far (tests fake it with `clock`)."""
    return COMPILES["seconds"]


# The train step's compilations in this process and their seconds (tracing, lowering, XLA,
# or loading from the persistent cache), and the programs of any kind the persistent cache
# held, from JAX's monitoring events.
COMPILES = {"count": 0, "seconds": 0.0, "cache_hits": 0}
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")  # fmt: skip


def _count_compiles(event: str, seconds: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS and "train_step" in str(kwargs.get("fun_name", "")):
        COMPILES["seconds"] += seconds
        COMPILES["count"] += event == _COMPILE_EVENTS[-1]


def _count_cache_hits(event: str, **kwargs) -> None:
    COMPILES["cache_hits"] += event == "/jax/compilation_cache/cache_hits"


jax.monitoring.register_event_duration_secs_listener(_count_compiles)
jax.monitoring.register_event_listener(_count_cache_hits)


def budget_spent(run: RunConfig, seconds: float) -> bool:
    return run.max_minutes is not None and seconds > run.max_minutes * 60.0


def read(tree):
    """Device values to the host: the training loop's one way of reading them, so that a
    test can check it never waits for the step it just queued."""
    return jax.device_get(tree)


class _Meter:
    """What the loop learns from each call's metrics, read a call late: buffer peaks,
    non-finite steps in a row, and the logged scalars (TensorBoard, log.jsonl, tqdm)."""

    def __init__(self, cfg, pool, writer, log, bar, start: tuple[int, float], saved,
                 viewer=None) -> None:  # fmt: skip
        self.cfg, self.pool, self.writer, self.log, self.bar = cfg, pool, writer, log, bar
        self.viewer = viewer
        self.peaks = saved.get("peaks")  # of the last step read, applied by `fit`
        # The buffers grow as soon as a step needs more, but shrink only at a few points
        # (the first fit after the start or a grid event, and after each checkpoint step),
        # to the largest peaks since the last such point: each resize is a compilation.
        self.high = saved.get("high")
        self.may_shrink = saved.get("may_shrink", True)
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.last_log_step, self.last_log = start
        self.resolution = self.samples_per_ray = 0.0
        self.capacities = [0, 0]  # the buffers of the last step dispatched

    def read(self, step: int, n: int, metrics: dict) -> None:
        """The metrics of a call's `n` steps (see `training.train_steps`), the last `step`."""
        m = read(metrics)
        peaks = [int(m[k][:n].max()) for k in ("density_peak", "appearance_peak")]
        self.peaks = peaks
        self.high = peaks if self.high is None else list(map(max, self.high, peaks))
        for i, finite in enumerate(m["finite"][:n]):
            self.bad_steps = 0 if finite else self.bad_steps + 1
            if self.bad_steps >= self.cfg.run.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_steps} steps in a row up to step {step - n + 1 + i} had a "
                    "non-finite loss or gradient, or parameters that blew up past "
                    f"{training.PARAMETER_LIMIT:g} (all skipped); the last good checkpoint "
                    f"is in {self.cfg.run.run_dir}; lower --lr-grid / --lr-network and --resume "
                    "(both may change on resume)"
                )
        last = step == self.cfg.schedule.n_iters
        if self.writer is not None and (step % self.cfg.run.log_every == 0 or last):
            self._log(step, {k: v[n - 1] for k, v in m.items()})

    def fit(self, settings):
        """The buffers grown to the peaks read last (once), or at a shrink point fitted to
        the largest since the last one."""
        if self.peaks is not None:
            shrink = self.may_shrink
            peaks = self.high if shrink else self.peaks
            settings = fit_capacity(settings, dict(zip(CAPACITIES, peaks, strict=True)), shrink)
            self.peaks = None
            if shrink:
                self.high, self.may_shrink = None, False
        self.capacities = [getattr(settings, k) for k in CAPACITIES]
        return settings

    def describe(self, state: training.TrainState, settings) -> None:
        """The grid's size and samples per ray, for the log."""
        self.grid = state.resolution
        self.resolution = float(np.prod(state.resolution)) ** (1 / 3)
        self.samples_per_ray = settings.samples_per_ray

    def new_grid(self, state: training.TrainState, settings) -> None:
        """After a grid event: the last peaks were counted with the old grid's buffers."""
        self.describe(state, settings)
        self.peaks = self.high = None
        self.may_shrink = True

    def plan(self, step: int, n_iters: int) -> None:
        self.cfg = override(self.cfg, n_iters=n_iters)
        if self.writer is not None:
            message = f"step {step}: --fill-budget plans {n_iters} steps in all"
            tqdm.write(message)
            self.writer.add_text("train/plan", message, step)

    def buffers(self, settings, cfg: TrainConfig, plan: BudgetPlan) -> dict:
        saved = {k: getattr(settings, k) for k in CAPACITIES}
        saved.update(peaks=self.peaks, high=self.high, may_shrink=self.may_shrink)
        if plan.planned:
            saved["n_iters"] = cfg.schedule.n_iters
        return saved

    def _log(self, step: int, m: dict) -> None:
        now = clock()
        batch = self.cfg.optimiser.batch_size
        m = {k: float(v) for k, v in m.items() if k != "finite"}
        m["rays_per_s"] = (step - self.last_log_step) * batch / max(now - self.last_log, 1e-9)
        m["resolution"] = self.resolution
        m["samples_per_ray"] = self.samples_per_ray
        m["density_capacity"], m["appearance_capacity"] = self.capacities
        m["density_evals_per_ray"] = m.pop("density_count") / batch
        m["shaded_samples_per_ray"] = m.pop("appearance_count") / batch
        m["dropped_samples"] = int(m["dropped_samples"])
        m["skipped_steps"] = int(m["skipped_steps"])
        m["training_rays"] = len(self.pool.index)  # of this process
        for k, v in m.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        self.log.write(step, m)
        self.bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}",
                             rays_s=f"{m['rays_per_s']:.0f}")  # fmt: skip
        if self.viewer is not None:
            self.viewer.report(step, self.cfg.schedule.n_iters, m, self.grid)
        self.last_log, self.last_log_step = now, step


def grid_events(state, pool, cfg: TrainConfig, step: int, voxels: dict, meter: _Meter,
                filter_rays: bool):  # fmt: skip
    """The schedule's alpha-mask updates (shrinking the box, filtering the training rays)
    and upsamples at `step`; returns the new state and pool."""
    if step in cfg.schedule.mask_steps:
        first = step == cfg.schedule.mask_steps[0]
        follow = cfg.schedule.shrink == "every" and not first
        state, ok = training.update_mask(state, cfg, shrink=first or follow)
        if not ok and meter.writer is not None:
            message = f"step {step}: alpha mask would be empty (density collapsed); kept"
            tqdm.write(message)
            meter.writer.add_text("train/warnings", message, step)
        if first:
            state = dataclasses.replace(state, l1_weight=jnp.float32(cfg.optimiser.l1_rest))
        elif filter_rays:
            pool = training.filter_rays(state.mask, pool, cfg.render)
        if ok and follow and step not in voxels:
            # Spend the voxels the schedule has reached on the smaller box.
            state = training.regrid(state, training.scheduled_voxels(cfg.schedule, step))
    if step in voxels:
        state = training.upsample(state, cfg.optimiser, voxels[step])
    return state, pool


# --fill-budget: the step rate is measured over PLAN_STEPS steps, starting PLAN_WARMUP steps
# after the last grid event (whose new buffers compile in the first few), and the run ends
# RESERVE of the budget early (the final checkpoint).
PLAN_WARMUP, PLAN_STEPS, RESERVE = 20, 100, 0.02


def next_stop(step: int, n_iters: int, most: int, every: tuple[int, ...], at: set[int]) -> int:
    """Where the call of steps starting after `step` ends: at the first step after it that
    is a multiple of one of `every` (0: none), one of `at`, or the last (`n_iters`), and
    `most` steps later at the latest. A function of `step` alone, so that a resumed run
    cuts its steps into the same calls as the uninterrupted one from its checkpoint on."""
    stops = [n_iters, step + most, *((step // k + 1) * k for k in every if k)]
    return min(stops + [s for s in at if s > step])


class BudgetPlan:
    """--fill-budget: once the schedule's last grid event is past and the step rate steady,
    set the number of steps to what fits in the rest of --max-minutes. Only the length of
    the run changes (and with it the learning-rate and TV decay); the grid events stay at
    their steps. The plan is saved with each checkpoint, so a resumed run keeps it."""

    def __init__(self, cfg: TrainConfig, planned: bool) -> None:
        self.cfg, self.planned = cfg, planned
        last = max([0, *cfg.schedule.mask_steps, *cfg.schedule.upsample_steps])
        self.at = last + PLAN_WARMUP + PLAN_STEPS
        active = cfg.run.fill_budget and cfg.run.max_minutes is not None and not planned
        if not active or self.at >= cfg.schedule.n_iters:
            self.at = None
        self.warm: tuple[int, float] | None = None  # where measuring started (step, seconds)

    def due(self, step: int) -> bool:
        return self.at is not None and self.warm is not None and step >= max(
            self.at, self.warm[0] + PLAN_WARMUP
        )

    def stops(self) -> set[int]:
        """The steps at which `note` and `due` must be asked (the loop's calls end there)."""
        if self.at is None:
            return set()
        if self.warm is None:
            return {self.at - PLAN_STEPS, self.at}
        return {self.at, self.warm[0] + PLAN_WARMUP}

    def note(self, step: int, steady: float) -> None:
        """`steady`: seconds of training steps alone (evaluations and compilations during
        training left out)."""
        if self.at is not None and self.warm is None and step >= self.at - PLAN_STEPS:
            self.warm = (step, steady)

    def n_iters(self, step: int, seconds: float, steady: float, eval_per_step: float) -> int:
        """The planned length of the run, made at `step` after `seconds` of training, of
        which `steady` went to training steps alone (as `note`); evaluations during training
        (--eval-every) will go on costing `eval_per_step` seconds per step."""
        rate = (steady - self.warm[1]) / (step - self.warm[0])  # seconds per step
        left = self.cfg.run.max_minutes * 60.0 * (1.0 - RESERVE) - seconds
        n_iters = step + max(int(left / max(rate + eval_per_step, 1e-9)), 1)
        self.at, self.planned = None, True
        return parallel.from_primary(n_iters)[0]


class _Probe:
    """--eval-every: a few held-out views evaluated every so many steps, for TensorBoard's
    curves (the final evaluation covers --eval-max-views)."""

    def __init__(self, cfg: TrainConfig, writer) -> None:
        self.cfg, self.writer = cfg, writer
        self.seconds, self.count = 0.0, 0  # spent evaluating so far
        self.views = None
        if cfg.eval.eval_every and cfg.eval.eval_every < cfg.schedule.n_iters:
            self.views = data.load_views(
                cfg.data.dataset_path, cfg.eval.eval_split, downscale=cfg.data.downscale,
                max_views=cfg.eval.eval_every_views, drop_missing=cfg.data.drop_missing_images,
            )  # fmt: skip

    def due(self, step: int, n_iters: int) -> bool:
        return self.views is not None and step % self.cfg.eval.eval_every == 0 and step < n_iters

    def run(self, state: training.TrainState, step: int) -> float:
        """Evaluate (every process renders its share) and log (process 0); returns the
        seconds it took."""
        start = clock()
        metrics, previews = evaluate_views(state, self.cfg, self.views, None)
        seconds = clock() - start
        self.seconds += seconds
        self.count += 1
        if self.writer is None:
            return seconds
        tag = f"{self.cfg.eval.eval_split}_during_training"
        self.writer.add_scalar(f"{tag}/psnr", metrics["psnr"], step)
        self.writer.add_scalar(f"{tag}/ssim", metrics["ssim"], step)
        if "lpips" in metrics:
            self.writer.add_scalar(f"{tag}/lpips", metrics["lpips"], step)
        for i, out in enumerate(previews):
            self.writer.add_image(f"{tag}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                                  dataformats="HWC")  # fmt: skip
            self.writer.add_image(f"{tag}/depth_{i}", out["depth_vis"], step, dataformats="HWC")
        tqdm.write(f"step {step}: {self.cfg.eval.eval_split} PSNR {metrics['psnr']:.2f} dB over "
                   f"{metrics['n_views']} views ({seconds:.1f} s)")  # fmt: skip
        return seconds

    def per_step(self) -> float:
        """Seconds of evaluation per training step, as measured so far."""
        return self.seconds / self.count / self.cfg.eval.eval_every if self.count else 0.0


class _StopOnSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current step (and checkpoint);
    a second signal stops at once."""

    def __enter__(self) -> _StopOnSignals:
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _JsonLog:
    """The logged scalars as one JSON line per log step (a loss curve without TensorBoard).
    On resume, the lines past the checkpoint's step are dropped, as TensorBoard's are."""

    def __init__(self, path: Path, step: int) -> None:
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if (_step_of(line) or step + 1) <= step]
        # Renamed into place: a kill while it is rewritten leaves the old log, not half.
        outputs.write_text(path, "".join(line + "\n" for line in kept))

    def write(self, step: int, scalars: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")


def _step_of(line: str) -> int | None:
    """The step of a log line; None for a line a crash left half-written (or any line
    without an integer step)."""
    try:
        entry = safe_json.loads(line)
    except ValueError:
        return None
    step = entry.get("step") if isinstance(entry, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def finish(
    state: training.TrainState, cfg: TrainConfig, writer, train_seconds: float,
    load_seconds: float, counts: dict | None = None,
) -> dict:
    """Evaluate on cfg.eval.eval_split, log to TensorBoard, write metrics.json (with the
    seconds spent training and loading the training and evaluation images)."""
    load_start = time.perf_counter()
    views = data.load_views(
        cfg.data.dataset_path, cfg.eval.eval_split, downscale=cfg.data.downscale,
        max_views=cfg.eval.eval_max_views, drop_missing=cfg.data.drop_missing_images,
    )
    # Every process renders (the rays are split over all devices); process 0 writes.
    primary = parallel.is_primary()
    out_dir = Path(cfg.run.run_dir) / "renders" if primary else None
    load_seconds += time.perf_counter() - load_start
    metrics, previews = evaluate_views(state, cfg, views, out_dir)
    metrics = {"split": cfg.eval.eval_split, "train_seconds": train_seconds,
               "load_seconds": load_seconds, **(counts or {}), **metrics}  # fmt: skip
    if not primary:
        return metrics
    step = metrics["step"]
    writer.add_scalar(f"{cfg.eval.eval_split}/psnr", metrics["psnr"], step)
    writer.add_scalar(f"{cfg.eval.eval_split}/ssim", metrics["ssim"], step)
    if "lpips" in metrics:
        writer.add_scalar(f"{cfg.eval.eval_split}/lpips", metrics["lpips"], step)
    for i, out in enumerate(previews):
        writer.add_image(f"{cfg.eval.eval_split}/rgb_{i}", np.clip(out["rgb"], 0, 1), step,
                         dataformats="HWC")  # fmt: skip
        writer.add_image(f"{cfg.eval.eval_split}/depth_{i}", out["depth_vis"], step,
                         dataformats="HWC")  # fmt: skip
    writer.close()
    finite = all(np.isfinite(metrics[k]) for k in ("psnr", "ssim"))
    # Non-finite numbers are written as null: the file stays valid JSON.
    saved = {k: None if isinstance(v, float) and not np.isfinite(v) else v
             for k, v in metrics.items()}  # fmt: skip
    outputs.write_json(Path(cfg.run.run_dir) / "metrics.json", saved)
    if not finite:
        raise TrainingError(
            f"the {cfg.eval.eval_split} metrics are not finite (PSNR {metrics['psnr']}, SSIM "
            f"{metrics['ssim']}): the model diverged; lower --lr-grid / --lr-network and "
            f"train again, or --resume from an earlier checkpoint in {cfg.run.run_dir}"
        )
    print(
        f"{cfg.eval.eval_split}: {summary(metrics)} over "
        f"{metrics['n_views']} views; trained {train_seconds / 60:.1f} min to step {step}; "
        f"model {metrics['model_mb']:.1f} MB"
    )
    print(f"{cfg.run.run_dir}: metrics.json, renders/ (the {cfg.eval.eval_split} views, RGB and "
          "depth), log.jsonl and tensorboard/ (curves), checkpoints/ (for --resume, render_360.py, "
          "tensorf.evaluate)")  # fmt: skip
    return metrics
