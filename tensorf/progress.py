"""Progress bars that suit where they go: live on a terminal, sparse in a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm as _tqdm

# A log file or CI's output is read afterwards: a line every 10 s is enough, where tqdm's
# default of ten a second fills megabytes over a long run.
LOG_INTERVAL = 10.0


class tqdm(_tqdm):  # lower case: a drop-in for tqdm.tqdm
    """`tqdm.tqdm` that updates at most every `LOG_INTERVAL` seconds when its stream is not
    a terminal."""

    def __init__(self, *args, **kwargs) -> None:
        stream = kwargs.get("file") or sys.stderr
        if not (hasattr(stream, "isatty") and stream.isatty()):
            kwargs.setdefault("mininterval", LOG_INTERVAL)
        super().__init__(*args, **kwargs)
