"""What every benchmark prints first: hardware, software and commit, so figures compare."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks import tensorf from this checkout


def header(title: str) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"# {title}")
    print(f"# host: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; jax {jax.__version__} on {jax.devices()[0].device_kind}; "
          f"commit {commit or 'uncommitted'}")  # fmt: skip
