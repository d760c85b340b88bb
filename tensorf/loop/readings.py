"""The metrics of the calls of steps, read one call late: the call in flight is queued behind
the one read, so the devices never wait for the host. Each call's buffer peaks go to the
buffer sizer, its non-finite steps are counted, and its last step's scalars are logged when
a log line is due."""

from __future__ import annotations

from collections.abc import Callable

import jax

from tensorf.config import TrainConfig
from tensorf.errors import TrainingError
from tensorf.loop.buffers import BufferSizer
from tensorf.loop.monitor import Monitor
from tensorf.render.sampling import RenderSettings
from tensorf.train import steps

Call = tuple[int, int, dict]  # (its last step, its steps, its metrics on the devices)


def read(tree):
    """Device values to the host: the training loop's one way of reading them, so that a
    test can check it never waits for the step it just queued."""
    return jax.device_get(tree)


class Readings:
    """What the loop learns from each call (see `steps.train_steps`), a call late."""

    def __init__(self, cfg: TrainConfig, sizer: BufferSizer, monitor: Monitor,
                 refit: Callable[[RenderSettings], None] = lambda _: None) -> None:  # fmt: skip
        """`refit`: told the settings of each shrink planned (`Ahead.refit` compiles them)."""
        self.cfg, self.sizer, self.monitor, self.refit = cfg, sizer, monitor, refit
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.unread: Call | None = None

    def queue(self, call: Call, settings: RenderSettings) -> RenderSettings:
        """Read the call before `call` (if not read yet) and keep `call` for later; returns
        the settings with the buffers fitted to what was read. The buffers follow with one
        call's lag."""
        if self.unread is not None:
            self._read(*self.unread)
        self.unread = call
        return self._fit(settings, called=True)

    def drain(self, settings: RenderSettings) -> RenderSettings:
        """Read the call in flight (waiting for it): where the host needs the state."""
        self._read(*self.unread)
        self.unread = None
        return self._fit(settings, called=False)

    def _fit(self, settings: RenderSettings, called: bool) -> RenderSettings:
        settings, planned = self.sizer.fit(settings, called)
        if planned:
            self.refit(self.sizer.planned_settings(settings))
        return settings

    def _read(self, step: int, n: int, metrics: dict) -> None:
        m = read(metrics)
        self.sizer.note([int(m[k][:n].max()) for k in ("density_peak", "appearance_peak")])
        for i, finite in enumerate(m["finite"][:n]):
            self.bad_steps = 0 if finite else self.bad_steps + 1
            if self.bad_steps >= self.cfg.run.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_steps} steps in a row up to step {step - n + 1 + i} had a "
                    "non-finite loss or gradient, or parameters that blew up past "
                    f"{steps.PARAMETER_LIMIT:g} (all skipped); the last good checkpoint "
                    f"is in {self.cfg.run.run_dir}; lower --lr-grid / --lr-network and --resume "
                    "(both may change on resume)"
                )
        if self.monitor.log_due(step):
            self.monitor.write(step, {k: v[n - 1] for k, v in m.items()}, self.sizer.capacities)
