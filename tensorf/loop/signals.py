"""SIGINT and SIGTERM during training: stop after the current call of steps, with a
checkpoint."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tensorf.errors import Interrupted


class StopOnSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current step (and checkpoint);
    a second signal stops at once."""

    def __enter__(self) -> StopOnSignals:
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


def interrupted(signum: int, step: int, run_dir: Path) -> Interrupted:
    """The error that ends a run stopped by a signal, once its checkpoint is saved."""
    return Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint "
                       f"saved, continue with --resume --run-dir {run_dir}", signum)  # fmt: skip
