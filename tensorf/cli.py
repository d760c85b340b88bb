"""What every entry point shares: bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tensorf.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    Interrupted,
    OutputError,
    TrainingError,
)

T = TypeVar("T")


def check_writable(path: Path, flag: str = "--out") -> None:
    """Fail before any work is done if `path` cannot be written."""
    folder = path.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: cannot write to {folder}; choose another path")


def check_numbers(*specs: tuple[str, object, float, float, type]) -> None:
    """Each (flag, value, lowest, highest, int or float) must be a finite number of that
    type within [lowest, highest] (None passes: the option's default); one ConfigError
    names every one that is not."""
    problems = number_problems(*specs)
    if problems:
        raise ConfigError("; ".join(problems))


def number_problems(*specs: tuple[str, object, float, float, type]) -> list[str]:
    """What `check_numbers` would refuse, one phrase per option."""
    problems = []
    for flag, value, low, high, kind in specs:
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) if kind is int else math.isfinite(value))
        if not (ok and low <= value <= high):
            what = "an integer" if kind is int else "a finite number"
            problems.append(f"{flag} must be {what} from {low:g} to {high:g}")
    return problems


def host_problems(flag: str, host: str) -> list[str]:
    """A server address must be one word (127.0.0.1, 0.0.0.0, a host name)."""
    if host and not any(c.isspace() for c in host):
        return []
    return [f"{flag} {host!r}: give an address such as 127.0.0.1"]


def check_creatable(folder: Path, flag: str) -> None:
    """Fail before any work is done if `folder` can neither be used nor created."""
    folder = folder.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {folder}: cannot create or write it ({existing} is not a "
                          "writable folder); choose another path")  # fmt: skip


def _quiet_abandoned_reads(unraisable) -> None:
    """After a checkpoint fails to restore, orbax's pending background reads finish on an
    event loop it has closed, or are dropped mid-read, and each prints an unraisable
    traceback: those say nothing (the failure was reported, in one line), so they go."""
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    closed_loop = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
    if closed_loop or (code is not None and "orbax" in code.co_filename):
        return
    sys.__unraisablehook__(unraisable)


def _not_abandoned_read(record: logging.LogRecord) -> bool:
    """The asyncio logger's half of the same: reads orbax started and never collected."""
    message = str(record.msg)
    return not message.startswith(("Task exception was never retrieved",
                                   "Future exception was never retrieved"))  # fmt: skip


def run_main(fn: Callable[[], T]) -> T:
    sys.unraisablehook = _quiet_abandoned_reads
    asyncio_log = logging.getLogger("asyncio")
    if _not_abandoned_read not in asyncio_log.filters:
        asyncio_log.addFilter(_not_abandoned_read)
    try:
        return fn()
    except Interrupted as stop:
        print(str(stop), file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except (DatasetError, CheckpointError, ConfigError, TrainingError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # a second Ctrl-C while training, or one at any other time
        print("interrupted: stopped at once (the last checkpoint is kept)", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except OSError as error:  # a full disk, a folder that vanished, a read-only mount
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; free some space or choose a "
              "writable path (what was saved before is kept)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
