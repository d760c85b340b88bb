"""A run directory: refuse to overwrite a run, check a --resume against the saved config, and
lock the directory while a trainer writes to it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tensorf import cli
from tensorf.config import TrainConfig, resumable_options
from tensorf.config_json import flat_dict
from tensorf.errors import ConfigError
from tensorf.train import checkpoint

LOCK_FILE = "lock"


def check_run_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite a run; on --resume check the saved config against ours."""
    cli.check_creatable(cfg.run.run_dir, "--run-dir")
    has_run = (cfg.run.run_dir / checkpoint.CONFIG_FILE).exists()
    if not cfg.run.resume:
        if has_run:
            raise ConfigError(
                f"{cfg.run.run_dir} already holds a run; pass --resume to continue it "
                "or choose another --run-dir"
            )
        return
    if not has_run:
        raise ConfigError(f"{cfg.run.run_dir}: nothing to resume; drop --resume to start a new run")
    saved = checkpoint.load_config(cfg.run.run_dir)
    # By the options' flat names (n_iters, not schedule.n_iters), as the flags are.
    ours, theirs, free = flat_dict(cfg), flat_dict(saved), resumable_options()
    differ = sorted(k for k in ours if k not in free and ours[k] != theirs.get(k))
    if differ:
        raise ConfigError(
            f"--resume with options that differ from the saved run: {', '.join(differ)}; "
            "use the same options (or a new --run-dir)"
        )


def lock(run_dir: Path):
    """An exclusive lock on the run directory, held while the returned file is open. The
    kernel drops it when the process dies, so a killed trainer never blocks --resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    held = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "unknown"
        held.close()
        message = (f"{run_dir} is in use by another trainer (pid {holder}); wait for it to "
                   "finish or stop it, or choose another --run-dir")  # fmt: skip
        raise ConfigError(message) from None
    held.truncate(0)
    held.write(str(os.getpid()))
    held.flush()
    return held
