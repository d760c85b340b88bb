"""What every entry point shares: bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tensorf.checkpoint import CheckpointError
from tensorf.data import DatasetError

T = TypeVar("T")


class ConfigError(Exception):
    """Options that cannot work together."""


class TrainingError(Exception):
    """Training cannot go on (e.g. a non-finite loss)."""


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def check_writable(path: Path, flag: str = "--out") -> None:
    """Fail before any work is done if `path` cannot be written."""
    folder = path.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: cannot write to {folder}; choose another path")


def run_main(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Interrupted as stop:
        print(str(stop), file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except (DatasetError, CheckpointError, ConfigError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
