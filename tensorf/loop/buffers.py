"""The render buffers of the train step, sized from the counts that its calls report: they
grow as soon as a step needs more, and shrink only at a few points, since each new size is
a compilation; a shrink takes effect one call after it is decided, so that compile ahead
(`Ahead.refit`) can compile it behind that call."""

from __future__ import annotations

import dataclasses

from tensorf.render.sampling import RenderSettings, carry_capacity, fit_capacity

# The render buffer sizes saved with a checkpoint, so that a resumed run uses the same.
CAPACITIES = ("density_capacity", "appearance_capacity")


class BufferSizer:
    """The peaks of the last call read, the largest since the last shrink point, and
    whether the next fit may shrink; `saved` is what a checkpoint saved of them."""

    def __init__(self, saved: dict) -> None:
        self.peaks = saved.get("peaks")  # of the last call read, applied by `fit`
        # The buffers grow as soon as a step needs more, but shrink only at a few points
        # (the first fit after the start or a grid event, and after each checkpoint step),
        # to the largest peaks since the last such point: each resize is a compilation.
        self.high = saved.get("high")
        self.may_shrink = saved.get("may_shrink", True)
        # The peaks of the last two calls read since the last grid event, the newest last:
        # a grid event carries over the older one's (see `carried`).
        self.recent = saved.get("recent", [])
        self.planned = saved.get("planned")  # capacities of a shrink decided, due next call
        self.capacities = [0, 0]  # the buffers of the last call dispatched

    @staticmethod
    def restored(settings: RenderSettings, saved: dict) -> RenderSettings:
        """`settings` with the buffer sizes a checkpoint saved (a resumed run uses them)."""
        return dataclasses.replace(settings, **{k: saved[k] for k in CAPACITIES if k in saved})

    def note(self, peaks: list[int]) -> None:
        """The largest counts on one device over a call's steps, per buffer."""
        self.peaks = peaks
        self.recent = [*self.recent[-1:], peaks]
        self.high = peaks if self.high is None else list(map(max, self.high, peaks))

    def fit(self, settings: RenderSettings, called: bool) -> tuple[RenderSettings, bool]:
        """The buffers grown to the peaks read last (once), or at a shrink point fitted to
        the largest since the last one; `called`: a call was dispatched since the last fit.
        A shrink is planned, applied at the first fit after the next call; returns the
        settings and whether a shrink was planned just now."""
        if called and self.planned is not None:
            settings, self.planned = self.planned_settings(settings), None
        planned = False
        if self.peaks is not None:
            shrink = self.may_shrink
            peaks = dict(zip(CAPACITIES, self.high if shrink else self.peaks, strict=True))
            grown = fit_capacity(settings, peaks, shrink=False)
            if shrink and (fitted := fit_capacity(settings, peaks, shrink=True)) != grown:
                self.planned, planned = [getattr(fitted, k) for k in CAPACITIES], True
            settings = grown
            self.peaks = None
            if shrink:
                self.high, self.may_shrink = None, False
        self.capacities = [getattr(settings, k) for k in CAPACITIES]
        return settings, planned

    def planned_settings(self, settings: RenderSettings) -> RenderSettings:
        """`settings` with the planned shrink (there must be one)."""
        return dataclasses.replace(settings, **dict(zip(CAPACITIES, self.planned, strict=True)))

    def carried(self, pending: bool) -> list[int] | None:
        """The peaks a grid event carries over: those of the call before the one that ends
        at the event, which is the newest read while that call is `pending` (queued, not
        read yet). Compile ahead predicts the stage after the event then, so the prediction
        and the event agree on the buffers (the last call's peaks are read only at the
        event, too late to compile for them)."""
        recent = self.recent if pending else self.recent[:-1]
        return recent[-1] if recent else None

    def new_grid(self, fresh: RenderSettings, before: RenderSettings) -> RenderSettings:
        """After a grid event (its call read): the new grid's settings (`fresh`, sized for
        the worst case) with buffers carried over (`carried`, `carry_capacity`); the peaks
        so far were counted with the old grid's buffers, and are dropped."""
        settings = carry_capacity(fresh, before, self.carried(pending=False))
        self.peaks = self.high = None
        self.recent, self.planned = [], None
        self.may_shrink = True
        return settings

    def saved(self, settings: RenderSettings) -> dict:
        """What a checkpoint saves, so that a resumed run sizes its buffers the same."""
        saved = {k: getattr(settings, k) for k in CAPACITIES}
        saved.update(peaks=self.peaks, high=self.high, may_shrink=self.may_shrink,
                     recent=self.recent, planned=self.planned)  # fmt: skip
        return saved
