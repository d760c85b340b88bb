"""What is due at step N: the grid events, log lines, checkpoints and evaluations of a run,
and where a call of steps must end so that the host is there for them. Pure: a function
of the step (and the run's length) alone."""

from __future__ import annotations

import dataclasses

from tensorf.config import TrainConfig
from tensorf.train import events, steps


def next_stop(step: int, n_iters: int, most: int, every: tuple[int, ...], at: set[int]) -> int:
    """Where the call of steps starting after `step` ends: at the first step after it that
    is a multiple of one of `every` (0: none), one of `at`, or the last (`n_iters`), and
    `most` steps later at the latest. A function of `step` alone, so that a resumed run
    cuts its steps into the same calls as the uninterrupted one from its checkpoint on."""
    stops = [n_iters, step + most, *((step // k + 1) * k for k in every if k)]
    return min(stops + [s for s in at if s > step])


def event_leads(grid: set[int], lead: int) -> dict[int, int]:
    """The step at which each grid event (`grid`: their steps) is fixed -> the event's
    step: `lead` steps before it, at most half the way from the event before it (so that
    the stage it is fixed on is the one the event ends); none for a lead of 0."""
    leads = {}
    for event in sorted(grid):
        before = max((s for s in grid if s < event), default=0)
        if (early := min(lead, (event - before) // 2)) > 0:
            leads[event - early] = event
    return leads


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The steps at which the loop has work: `voxels` maps each upsample step to its voxel
    count; `eval_every` is 0 when nothing is evaluated during training."""

    mask_steps: tuple[int, ...]
    voxels: dict[int, int]
    log_every: int
    checkpoint_every: int
    eval_every: int
    per_call: int  # steps one call runs at most
    leads: dict[int, int]  # the step each grid event is fixed at -> the event's

    @classmethod
    def of(cls, cfg: TrainConfig, evaluates: bool) -> Schedule:
        """`evaluates`: whether the run evaluates during training (--eval-every)."""
        counts = events.voxel_schedule(cfg.schedule)
        voxels = dict(zip(cfg.schedule.upsample_steps, counts, strict=True))
        masks = tuple(cfg.schedule.mask_steps)
        leads = event_leads({*masks, *voxels}, cfg.schedule.event_lead)
        return cls(masks, voxels, cfg.run.log_every, cfg.run.checkpoint_every,
                   cfg.eval.eval_every if evaluates else 0,
                   cfg.run.steps_per_call or steps.MAX_STEPS_PER_CALL, leads)  # fmt: skip

    def stop(self, step: int, n_iters: int, also: set[int]) -> int:
        """The last step of the call that starts after `step`: the next step with work, or
        one of `also` (the budget plan's). Step 1 ends a call of its own: its counts size
        the buffers at once (the first ones are sized for the worst case), and a budget is
        first checked there."""
        every = (self.log_every, self.checkpoint_every, self.eval_every)
        return next_stop(step, n_iters, self.per_call, every,
                         {1, *self.mask_steps, *self.voxels, *self.leads, *also})  # fmt: skip

    def grid_event(self, step: int) -> bool:
        return step in self.mask_steps or step in self.voxels

    def save(self, step: int, n_iters: int) -> bool:
        return step % self.checkpoint_every == 0 or step == n_iters

    def log(self, step: int, n_iters: int) -> bool:
        return step % self.log_every == 0 or step == n_iters

    def evaluate(self, step: int, n_iters: int) -> bool:
        """An evaluation during training (the last step's is the final one)."""
        return bool(self.eval_every) and step % self.eval_every == 0 and step < n_iters
