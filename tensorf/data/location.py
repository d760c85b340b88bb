"""Where the datasets live: `$TENSORF_DATA_DIR`, else `shared/data` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """`$TENSORF_DATA_DIR` if set, else the `shared/data` folder beside the repository."""
    env = os.environ.get("TENSORF_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def default_dataset_path() -> Path:
    """The lego scene under `data_dir()`."""
    return data_dir() / "nerf_synthetic" / "lego"
