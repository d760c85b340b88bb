"""What every entry point shares: bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from tensorf.checkpoint import CheckpointError
from tensorf.data import DatasetError

T = TypeVar("T")


class ConfigError(Exception):
    """Options that cannot work together."""


class TrainingError(Exception):
    """Training cannot go on (e.g. a non-finite loss)."""


def run_main(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (DatasetError, CheckpointError, ConfigError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
