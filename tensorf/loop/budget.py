"""The time budget (--max-minutes) and --fill-budget's plan: how many steps fit in it."""

from __future__ import annotations

from tensorf import parallel
from tensorf.config import RunConfig, TrainConfig

# --fill-budget: the step rate is measured over PLAN_STEPS steps, starting PLAN_WARMUP steps
# after the last grid event (whose new buffers compile in the first few), and the run ends
# RESERVE of the budget early (the final checkpoint).
PLAN_WARMUP, PLAN_STEPS, RESERVE = 20, 100, 0.02


def budget_spent(run: RunConfig, seconds: float) -> bool:
    return run.max_minutes is not None and seconds > run.max_minutes * 60.0


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

    def saved(self, n_iters: int) -> dict:
        """What a checkpoint saves of the plan (once made): the run's length."""
        return {"n_iters": n_iters} if self.planned else {}
