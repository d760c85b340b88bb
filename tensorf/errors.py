"""The errors that every entry point turns into one `error:` line and exit status 2
(`cli.run_main`). They live below every other module, so that any module can raise or
catch them without importing the module that usually raises them."""

from __future__ import annotations


class DatasetError(Exception):
    """Bad input data. str(error) is ONE line naming the file and the problem and the fix."""

    def __init__(self, message: str) -> None:
        # Collapsing whitespace keeps the one-line promise even when the message embeds
        # text from a third-party exception.
        super().__init__(" ".join(message.split()))


class CheckpointError(Exception):
    """A run directory without a usable checkpoint."""


class ConfigError(Exception):
    """Options that cannot work together."""


class TrainingError(Exception):
    """Training cannot go on (e.g. a non-finite loss)."""


class OutputError(Exception):
    """An output could not be written (e.g. the video encoder failed)."""


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
