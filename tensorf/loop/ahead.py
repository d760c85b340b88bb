"""Compile ahead: the training step of the grid stage to come is compiled on a background
thread while the current stage trains, so that a grid event swaps in a ready executable
instead of stalling the loop on a compilation (issue 30); so is the step with the smaller
buffers of a shrink the buffer sizer plans (`refit`).

Each grid event is fixed `ScheduleConfig.event_lead` steps ahead: its alpha mask, if it
updates one, is measured there, and the buffer peaks it will carry over are held. There the
loop calls `foresee`, and the worker predicts the stage after the event (the arguments and
render settings the loop will pass after it, computed from a copy of the state as the loop
will compute them: `next_stage`), exactly, and compiles it
(`jax.jit(...).lower(...).compile()`: the same program the jit call would compile, so
results are the same bit for bit). `train_steps` runs a call with the executable of its
stage when one was compiled ahead, and otherwise falls back to the jit call (a miss).

Stall accounting (`timing.compiles_since`): seconds the loop's thread spent compiling the
train step, or waiting for the worker, are stalled; the worker's compile seconds the loop
did not wait for are hidden.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tensorf.config import TrainConfig
from tensorf.field.alpha_mask import Measured
from tensorf.render.sampling import RenderSettings, carry_capacity
from tensorf.train import events, steps, timing
from tensorf.train.ray_pool import RayPool

Args = tuple  # (state, device pool, hyper): the traced arguments of `steps.train_steps`
Stage = tuple[Args, RenderSettings]


def signature(args: Args, settings: RenderSettings) -> tuple:
    """What selects a compiled step: the static settings and every argument's shape, dtype
    and sharding (the number of steps, a Python int, is always the same kind)."""
    leaves, tree = jax.tree.flatten(args)
    avals = tuple((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves)
    return settings, tree, avals


def next_stage(pool: RayPool, hyper: steps.Hyper, cfg: TrainConfig, step: int,
               voxels: dict[int, int], filtering: bool, projection, mesh: Mesh,
               before: RenderSettings, peaks: list[int] | None, state,
               measured: Measured | None = None) -> list[Stage]:  # fmt: skip
    """The stage that follows the grid events at `step`, derived as the loop derives it
    (`events.on_devices`, then `BufferSizer.new_grid` with `before`, the settings before
    the event, and `peaks`, those it will carry over), from `state`: a copy of the
    replicated state taken before (`measured`: the alpha mask measured for the event)."""
    state, _, device_pool, fresh, _ = events.on_devices(state, pool, cfg, step, voxels,
                                                        filtering, projection, mesh,
                                                        measured)  # fmt: skip
    return [((state, device_pool, hyper), carry_capacity(fresh, before, peaks))]


class Ahead:
    """The loop's train-step runner, compiling the next stages on one worker thread (off:
    every call is the plain jit call, and the stall accounting still holds)."""

    def __init__(self, spec: steps.StepSpec, mesh: Mesh, cfg: TrainConfig,
                 voxels: dict[int, int], filtering: bool = False,
                 projection=None) -> None:  # fmt: skip
        """`voxels`: the upsample steps' voxel counts (`Schedule.voxels`); `filtering`,
        `projection`: the loop's arguments of the grid events (`events.on_devices`)."""
        self.spec, self.mesh, self.cfg, self.voxels = spec, mesh, cfg, voxels
        self.filtering, self.projection = filtering, projection
        # One process only: placing a predicted pool with several would take the others
        # (`parallel.replicate_per_process`) on the worker thread.
        self.enabled = enabled = cfg.run.compile_ahead and jax.process_count() == 1
        self.ready: dict[tuple, Future] = {}  # signature -> compiled train_steps
        self.pending: list[threading.Event] = []  # predictions not yet turned into stages
        self.current: tuple | None = None  # the signature of the last call
        self.call = None  # and its executable (None: the jit call)
        self.abstract: Args | None = None  # the last call's arguments' shapes (for `refit`)
        # (step, seconds the loop stalled, seconds the devices sat idle) per stalling call
        self.stalls: list[tuple[int, float, float]] = []
        self.last = None  # the metrics of the last call queued
        self.stages: list[tuple[int, bool]] = []  # (step, compiled ahead) of each new stage
        self.lock = threading.Lock()
        self.job: _Job | None = None  # the prediction the worker is to run next
        self.compiles: list[tuple[Future, Args, RenderSettings]] = []  # the last, first
        self.wake = threading.Condition(self.lock)
        self.closed = False
        self.worker = None
        if enabled:
            self.worker = threading.Thread(target=self._work, name=timing.AHEAD_THREAD,
                                           daemon=True)
            self.worker.start()

    def foresee(self, event: int, measured: Measured | None, state, pool: RayPool,
                hyper: steps.Hyper, before: RenderSettings,
                peaks: list[int] | None) -> None:  # fmt: skip
        """Have the worker predict the stage after the grid events at `event` (`next_stage`:
        on a copy of `state`, with the alpha mask `measured` for it, the loop's `pool` and
        `hyper`, the settings `before` the event and the `peaks` it will carry over), and
        compile it."""
        if not self.enabled:
            return
        predict = functools.partial(next_stage, pool, hyper, self.cfg, event, self.voxels,
                                    self.filtering, self.projection, self.mesh, before, peaks,
                                    jax.tree.map(jnp.copy, state), measured)  # fmt: skip
        registered = threading.Event()
        self.pending.append(registered)
        with self.lock:
            # Only the newest prediction matters: an older one not started is dropped.
            if self.job is not None:
                self.job.registered.set()
            self.job = _Job(predict, registered)
            self.wake.notify()

    def train_steps(self, state, pool, n: int, hyper, settings: RenderSettings, step: int):
        """`steps.train_steps` with the executable compiled ahead for this stage, if any;
        `step`: where the call starts (for the record of stalls)."""
        stalled, began = timing.compiling(), time.perf_counter()
        key = signature((state, pool, hyper), settings)
        queued = None  # when the devices finish the call queued before a new stage's
        if key != self.current:
            if self.last is not None:
                queued = _Finish(self.last)
            self.current, self.call = key, self._find(key)
            self.abstract = jax.tree.map(_abstract, (state, pool, hyper))
            self.stages.append((step, self.call is not None))
        if self.call is None:
            out = steps.train_steps(state, pool, n, hyper, self.spec, settings, self.mesh)
        else:
            out = self.call(state, pool, n, hyper)
        stalled = timing.compiling() - stalled
        if stalled > 0:
            # The devices sat idle from when they finished the call queued before (the
            # loop's stall overlaps it) until this one was queued.
            idle_from = began if queued is None else max(began, queued.at())
            self.stalls.append((step, stalled, max(time.perf_counter() - idle_from, 0.0)))
        self.last = out[1]
        return out

    def refit(self, settings: RenderSettings) -> None:
        """Compile the last call's stage with other buffers (`settings`): a shrink the
        buffer sizer planned for the call after next."""
        if not self.enabled or self.current is None:
            return
        key = (settings, *self.current[1:])
        with self.lock:
            if key not in self.ready:
                self.ready[key] = Future()
                self.compiles.append((self.ready[key], self.abstract, settings))
                self.wake.notify()

    def settle(self) -> None:
        """Wait for the worker's predictions and compilations so far (counted as waited):
        the budget plan measures the step rate with no compilation sharing the cores (one
        in its window once cut a 15-minute plan to 12.5 minutes)."""
        if not self.enabled:
            return
        start = time.perf_counter()
        for registered in self.pending:
            registered.wait()
        for future in list(self.ready.values()):
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 (the jit call reports it, if it is used)
                pass
        timing.COMPILES["waited"] += time.perf_counter() - start

    def _find(self, key: tuple):
        """The executable of a new stage: wait for the predictions in progress, then for
        its compilation; None (the jit call) when none predicted it."""
        if self.enabled:
            start = time.perf_counter()
            for registered in self.pending:
                registered.wait()
            self.pending = []
            future = self.ready.get(key)
            compiled = None
            if future is not None:
                try:
                    compiled = future.result()
                except Exception:  # noqa: BLE001 (the jit call reports it, if it recurs)
                    compiled = None
            timing.COMPILES["waited"] += time.perf_counter() - start
            return compiled
        return None

    def _work(self) -> None:
        """Predictions first (the loop waits for their stages to be known), then the
        compilations, those of the newest prediction (the likeliest to hit) first."""
        while True:
            with self.lock:
                while self.job is None and not self.compiles and not self.closed:
                    self.wake.wait()
                if self.closed:
                    return
                job, self.job = self.job, None
                if job is None:
                    future, args, settings = self.compiles.pop()
            if job is not None:
                new = job.run(self)
                with self.lock:
                    self.compiles.extend(reversed(new))
                continue
            try:
                future.set_result(self.compile(args, settings))
            except Exception as error:  # noqa: BLE001 (the loop's jit call then reports it)
                future.set_exception(error)

    def compile(self, args: Args, settings: RenderSettings):
        """`steps.train_steps` compiled for these arguments and settings (the number of
        steps, traced, is any)."""
        state, pool, hyper = args
        lowered = steps.train_steps.lower(state, pool, 0, hyper, self.spec, settings,
                                          self.mesh)  # fmt: skip
        return lowered.compile()

    def close(self) -> None:
        """Stop the worker after what it is doing (a compilation is not interrupted)."""
        with self.lock:
            self.closed = True
            if self.job is not None:
                self.job.registered.set()
            self.job = None
            self.wake.notify()
        if self.worker is not None:
            self.worker.join()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, kind: type | None, *exc_info: object) -> None:
        # Stopped at once (a second Ctrl-C): not after a compilation; the worker is a
        # daemon thread.
        if kind is not KeyboardInterrupt:
            self.close()

    def report(self) -> dict:
        """For metrics.json: the steps where a new stage started, found compiled ahead or
        not, (step, seconds stalled, seconds idle) of every call that stalled on a
        compilation, and the devices' idle seconds in all (the seconds stalled and hidden
        in all are `timing.compiles_since`'s)."""
        return {
            "compile_ahead_hits": [step for step, hit in self.stages if hit],
            "compile_ahead_misses": [step for step, hit in self.stages if not hit],
            "compile_stalls": [[step, round(s, 3), round(idle, 3)]
                               for step, s, idle in self.stalls],  # fmt: skip
            "compile_seconds_idle": sum(idle for _, _, idle in self.stalls),
        }


class _Finish:
    """When the devices finish computing `outputs`, watched on a thread of its own (the
    loop thread may be compiling meanwhile)."""

    def __init__(self, outputs) -> None:
        self.done = 0.0
        self.thread = threading.Thread(target=self._watch, args=(outputs,), daemon=True)
        self.thread.start()

    def _watch(self, outputs) -> None:
        jax.block_until_ready(outputs)
        self.done = time.perf_counter()

    def at(self) -> float:
        self.thread.join()
        return self.done


def _abstract(x):
    """An argument's shape, dtype and placement: what a compilation needs of it (the
    argument itself is donated to the call)."""
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x),
                                sharding=getattr(x, "sharding", None))  # fmt: skip


class _Job:
    """One prediction: its stages are registered (so that the loop knows what is coming)
    before any is compiled."""

    def __init__(self, predict: Callable[[], Sequence[Stage]], registered: threading.Event):
        self.predict, self.registered = predict, registered

    def run(self, ahead: Ahead) -> list[tuple[Future, Args, RenderSettings]]:
        """Register the predicted stages not compiled yet; returns them, to compile."""
        stages = []
        try:
            if not self.registered.is_set():  # else superseded before it started
                stages = [(signature(*stage), *stage) for stage in self.predict()]
        except Exception:  # noqa: BLE001 (a failed prediction is a miss, not an error)
            stages = []
        new = []
        for key, args, settings in stages:
            if key not in ahead.ready:
                ahead.ready[key] = Future()
                new.append((ahead.ready[key], args, settings))
        self.registered.set()
        return new
