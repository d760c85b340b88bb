"""What every benchmark prints first: hardware, software and commit, so figures compare."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks import tensorf from this checkout


def commit() -> str:
    """The checkout's short commit hash ('uncommitted' outside git)."""
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return found or "uncommitted"


def machine() -> str:
    """Host, processor, cores and the JAX that runs here."""
    return (f"{platform.node()} {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores; jax {jax.__version__} on {jax.devices()[0].device_kind}")


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# host: {machine()}; commit {commit()}")
