"""The render buffers of the train step, sized from the counts that its calls report: they
grow as soon as a step needs more, and shrink only at a few points, since each new size is
a compilation."""

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
        self.capacities = [0, 0]  # the buffers of the last call dispatched

    @staticmethod
    def restored(settings: RenderSettings, saved: dict) -> RenderSettings:
        """`settings` with the buffer sizes a checkpoint saved (a resumed run uses them)."""
        return dataclasses.replace(settings, **{k: saved[k] for k in CAPACITIES if k in saved})

    def note(self, peaks: list[int]) -> None:
        """The largest counts on one device over a call's steps, per buffer."""
        self.peaks = peaks
        self.high = peaks if self.high is None else list(map(max, self.high, peaks))

    def fit(self, settings: RenderSettings) -> RenderSettings:
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

    def new_grid(self, fresh: RenderSettings, before: RenderSettings) -> RenderSettings:
        """After a grid event: the new grid's settings (`fresh`, sized for the worst case)
        with buffers carried over from the last peaks (see `carry_capacity`); those peaks
        were counted with the old grid's buffers, and are dropped."""
        settings = carry_capacity(fresh, before, self.peaks)
        self.peaks = self.high = None
        self.may_shrink = True
        return settings

    def saved(self, settings: RenderSettings) -> dict:
        """What a checkpoint saves, so that a resumed run sizes its buffers the same."""
        saved = {k: getattr(settings, k) for k in CAPACITIES}
        saved.update(peaks=self.peaks, high=self.high, may_shrink=self.may_shrink)
        return saved
