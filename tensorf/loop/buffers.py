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
        # The first fit of a run (step 1's counts) leaves a shading buffer that fits alone:
        # a field at its initial values shades few samples (lego: 800 at step 1, 16,000 by
        # step 50), and a buffer fitted to them would drop samples until it grew.
        self.first = saved.get("first", True)
        # The peaks of the last call read since the last grid event (`peaks` until `fit`).
        self.last = saved.get("last")
        self.planned = saved.get("planned")  # capacities of a shrink decided, due next call
        # The peaks a grid event fixed ahead carries over (see `hold`).
        self.held = saved.get("held")
        self.capacities = [0, 0]  # the buffers of the last call dispatched

    @staticmethod
    def restored(settings: RenderSettings, saved: dict) -> RenderSettings:
        """`settings` with the buffer sizes a checkpoint saved (a resumed run uses them)."""
        return dataclasses.replace(settings, **{k: saved[k] for k in CAPACITIES if k in saved})

    def note(self, peaks: list[int]) -> None:
        """The largest counts on one device over a call's steps, per buffer."""
        self.peaks = peaks
        self.last = peaks
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
            if self.first:
                shaded, size = peaks["appearance_capacity"], settings.appearance_capacity
                if shaded <= size:
                    del peaks["appearance_capacity"]
                self.first = False
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

    def hold(self) -> list[int] | None:
        """Where a grid event is fixed ahead (its call read): keep the peaks read last for
        the event to carry over, so that the stage after it is known there, buffers and
        all."""
        self.held = self.last
        return self.held

    def new_grid(self, fresh: RenderSettings, before: RenderSettings) -> RenderSettings:
        """After a grid event (its call read): the new grid's settings (`fresh`, sized for
        the worst case) with buffers carried over from the peaks `hold` kept, or else the
        last ones (`carry_capacity`); the peaks so far were counted with the old grid's
        buffers, and are dropped."""
        settings = carry_capacity(fresh, before, self.held if self.held is not None else self.last)
        self.peaks = self.high = self.held = self.last = None
        self.planned = None
        self.may_shrink = True
        return settings

    def saved(self, settings: RenderSettings) -> dict:
        """What a checkpoint saves, so that a resumed run sizes its buffers the same."""
        saved = {k: getattr(settings, k) for k in CAPACITIES}
        saved.update(peaks=self.peaks, high=self.high, may_shrink=self.may_shrink,
                     last=self.last, planned=self.planned, held=self.held,
                     first=self.first)  # fmt: skip
        return saved
