"""Progress bars: sparse in log files, live on terminals."""

from __future__ import annotations

import io

from tensorf.progress import LOG_INTERVAL, tqdm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_line_every_ten_seconds_a_terminal_live_updates():
    log, terminal = io.StringIO(), Terminal()
    with tqdm(total=1000, file=log) as to_log, tqdm(total=1000, file=terminal) as live:
        assert to_log.mininterval == LOG_INTERVAL == 10.0
        assert live.mininterval == 0.1  # tqdm's own default
        for i in range(1000):  # well within 10 s: the log sees the first and last state only
            to_log.update()
            to_log.set_postfix(loss=i)  # as training does at every log step
    assert log.getvalue().count("\r") <= 3
    assert "1000/1000" in log.getvalue()
