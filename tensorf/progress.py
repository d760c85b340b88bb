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
        self._live = hasattr(stream, "isatty") and stream.isatty()
        if not self._live:
            kwargs.setdefault("mininterval", LOG_INTERVAL)
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        # tqdm redraws on every new postfix (each log step): in a log file, only with the
        # next update that the interval lets through.
        super().set_postfix(ordered_dict, refresh=refresh and self._live, **kwargs)
