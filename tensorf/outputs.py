"""Outputs are written whole or not at all: to a temporary name beside the final one, read
back to check them, then renamed. A full disk or a dying encoder leaves no partial file and
no file that looks finished but does not open; what was at the final name before stays."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from tensorf.errors import OutputError

# What tensorstore says (as a ValueError, from orbax's save threads) when a disk is full.
DISK_FULL = ("RESOURCE_EXHAUSTED", "No space left on device", "Disk quota exceeded")


def is_disk_full(text: str) -> bool:
    return any(marker in text for marker in DISK_FULL)


def target(path: Path) -> Path:
    """Where an output at `path` goes: through symbolic links to the file they name (the
    rename would otherwise replace the link). Refused when that is not a regular file: a
    device such as /dev/full, a folder or a pipe would be replaced by the rename."""
    path = Path(path)
    try:
        real = path.resolve()
    except (RuntimeError, OSError):  # Python raises RuntimeError for a symbolic link loop
        raise OutputError(f"{path}: a symbolic link that points back at itself; fix or "
                          "remove it, or choose another path") from None  # fmt: skip
    if real.exists() and not real.is_file():
        kind = "a folder" if real.is_dir() else "not a regular file (a device or a pipe)"
        raise OutputError(f"{path}: is {kind}, which an output would replace; choose a file "
                          "path")  # fmt: skip
    return real


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is complete: hidden, in the same folder (so the
    rename is atomic) and with the same suffix (which picks the encoder)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def os_reason(error: OSError) -> str:
    """What to do about an OSError, by its kind: only a full disk needs space freed."""
    what = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}; free some space (what was saved before is kept)"
    if error.errno == errno.ELOOP:
        return f"{what}; a symbolic link points back at itself, fix or remove it"
    return f"{what}; choose a writable path (what was saved before is kept)"


def discard(partial: Path) -> None:
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)


def commit(partial: Path, path: Path, problem: str | None) -> None:
    """Rename `partial` to `path` if the read-back found no `problem`; otherwise remove it
    and raise OutputError naming `path`."""
    if problem is not None:
        discard(partial)
        raise OutputError(f"{path}: {problem}; check the disk space (nothing was written)")
    try:
        os.replace(partial, path)
    except OSError as error:
        discard(partial)
        raise OutputError(f"{path}: cannot be written: {os_reason(error)}") from error


@contextlib.contextmanager
def atomic(path: Path, verify: Callable[[Path], str | None]) -> Iterator[Path]:
    """Yields the temporary path to write; on leaving, `verify(partial)` (None when the
    file is whole, else what is wrong with it) decides between renaming and removing. An
    OSError while writing becomes an OutputError naming `path`."""
    path = target(path)
    partial = partial_path(path)
    try:
        yield partial
    except OSError as error:
        discard(partial)
        raise OutputError(f"{path}: cannot be written: {os_reason(error)}") from None
    except BaseException:
        discard(partial)
        raise
    commit(partial, path, checked(verify, partial))


def checked(verify: Callable[[Path], str | None], partial: Path) -> str | None:
    """The verifier's verdict; a reader that fails on the file is a verdict too."""
    try:
        return verify(partial)
    except Exception as error:  # the readers raise many types for a truncated file
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:120]
        return f"it does not read back ({reason})"


def write_image(path: Path, image: np.ndarray) -> None:
    """An image file (PNG, JPEG: by suffix) that is known to read back at its shape."""

    def verify(partial: Path) -> str | None:
        shape = iio.imread(partial, extension=Path(path).suffix).shape
        return None if shape == image.shape else f"it reads back as {shape}, not {image.shape}"

    with atomic(path, verify) as partial:
        iio.imwrite(partial, image, extension=Path(path).suffix)


def write_text(path: Path, text: str, check: Callable[[str], object] | None = None) -> None:
    """A text file that reads back as `text` (and, with `check`, that `check` accepts)."""

    def verify(partial: Path) -> str | None:
        back = partial.read_text(encoding="utf-8")
        if back != text:
            return "it reads back different from what was written"
        if check is not None:
            check(back)
        return None

    with atomic(path, verify) as partial:
        partial.write_text(text, encoding="utf-8")


def write_json(path: Path, value: object, indent: int | None = 2) -> None:
    """JSON that parses back; the rename makes it replace the old file in one step, so a
    kill leaves the old file or the new one, never half of either."""
    write_text(path, json.dumps(value, indent=indent), json.loads)
