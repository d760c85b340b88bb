"""Where a training run shows itself: the progress bar, TensorBoard, log.jsonl (one JSON
line per log step) and the live viewer, which may also pause the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

from tensorf import outputs, safe_json
from tensorf.config import TrainConfig
from tensorf.progress import tqdm
from tensorf.render.sampling import RenderSettings
from tensorf.train import timing
from tensorf.train.train_state import TrainState

LOG_FILE = "log.jsonl"


class JsonLog:
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


def open_sinks(cfg: TrainConfig, step: int) -> tuple[SummaryWriter, JsonLog]:
    """Process 0's TensorBoard writer and log.jsonl, continuing a run from `step`."""
    # purge_step drops what a killed run logged after its last checkpoint.
    writer = SummaryWriter(str(cfg.run.run_dir / "tensorboard"), purge_step=step or None)
    return writer, JsonLog(cfg.run.run_dir / LOG_FILE, step)


class Monitor:
    """The sinks of one process (process 0's writer and log; None elsewhere) and what a log
    line says besides the step's metrics: rays per second since the last line, the grid,
    the buffers and the training rays."""

    def __init__(self, cfg: TrainConfig, writer, log: JsonLog | None, start: tuple[int, float],
                 viewer=None) -> None:  # fmt: skip
        self.batch_size, self.log_every = cfg.optimiser.batch_size, cfg.run.log_every
        self.n_iters = cfg.schedule.n_iters
        self.writer, self.log, self.viewer = writer, log, viewer
        self.bar = tqdm(total=cfg.schedule.n_iters, initial=start[0], desc="training", unit="step",
                        dynamic_ncols=True, disable=writer is None)  # fmt: skip
        self.last_log_step, self.last_log = start
        self.grid = (0, 0, 0)
        self.resolution = self.samples_per_ray = 0.0
        self.training_rays = 0  # of this process's pool

    def describe(self, state: TrainState, settings: RenderSettings, training_rays: int) -> None:
        """The grid's size, samples per ray and training rays, for the log."""
        self.grid = state.resolution
        self.resolution = float(np.prod(state.resolution)) ** (1 / 3)
        self.samples_per_ray = settings.samples_per_ray
        self.training_rays = training_rays

    def say(self, message: str) -> None:
        """A line under the bar (process 0)."""
        if self.writer is not None:
            tqdm.write(message)

    def note(self, step: int, message: str, tag: str) -> None:
        """A line under the bar and a TensorBoard text (process 0)."""
        if self.writer is not None:
            tqdm.write(message)
            self.writer.add_text(tag, message, step)

    def grid_event(self, step: int, state: TrainState, settings: RenderSettings,
                   training_rays: int, mask_ok: bool) -> None:  # fmt: skip
        """The new grid for the log lines to come, and a line about it."""
        if not mask_ok:
            message = f"step {step}: alpha mask would be empty (density collapsed); kept"
            self.note(step, message, "train/warnings")
        self.describe(state, settings, training_rays)
        if self.writer is not None:
            tqdm.write(f"step {step}: grid {state.resolution}, {settings.samples_per_ray} "
                       f"samples/ray, {training_rays} training rays")  # fmt: skip

    def plan(self, step: int, n_iters: int) -> None:
        self.n_iters = self.bar.total = n_iters
        self.note(step, f"step {step}: --fill-budget plans {n_iters} steps in all", "train/plan")

    def log_due(self, step: int) -> bool:
        return self.writer is not None and (step % self.log_every == 0 or step == self.n_iters)

    def write(self, step: int, m: dict, capacities: list[int]) -> None:
        """The scalars of `step` (its metrics as the step returned them, on the host) to
        TensorBoard, log.jsonl, the bar and the viewer."""
        now = timing.clock()
        batch = self.batch_size
        m = {k: float(v) for k, v in m.items() if k != "finite"}
        m["rays_per_s"] = (step - self.last_log_step) * batch / max(now - self.last_log, 1e-9)
        m["resolution"] = self.resolution
        m["samples_per_ray"] = self.samples_per_ray
        m["density_capacity"], m["appearance_capacity"] = capacities
        m["density_evals_per_ray"] = m.pop("density_count") / batch
        m["shaded_samples_per_ray"] = m.pop("appearance_count") / batch
        m["dropped_samples"] = int(m["dropped_samples"])
        m["skipped_steps"] = int(m["skipped_steps"])
        m["training_rays"] = self.training_rays
        for k, v in m.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        self.log.write(step, m)
        self.bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}",
                             rays_s=f"{m['rays_per_s']:.0f}")  # fmt: skip
        if self.viewer is not None:
            self.viewer.report(step, self.n_iters, m, self.grid)
        self.last_log, self.last_log_step = now, step

    def hand_off(self, state: TrainState, step: int, stop) -> float:
        """The viewer's turn: while a browser has paused training, wait (until `stop()`);
        then give it the state if it is ready for one. Returns the seconds paused, which
        are left out of the time budget and the rays per second."""
        if self.viewer is None:
            return 0.0
        paused = self.viewer.hold(state, step, stop)
        self.last_log += paused
        if self.viewer.wants_field():
            self.viewer.show(state, step)
        return paused
