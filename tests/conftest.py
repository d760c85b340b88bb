"""Fixtures shared across the suite: the sphere scene, one trained sphere run for the tests
that need a field worth looking at, and one tiny run for the contracts (resume, kills,
devices, corrupt files) that only need every kind of event to have happened.

The suite's processes share a persistent JAX compilation cache (`.cache/jax-tests`), so
a subprocess that compiles what an earlier test compiled (a resumed run, a CLI call) reads
it instead, and a second `make test` compiles little."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Before JAX is imported, here and (through the environment) in every subprocess.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402
from synthetic import sphere_config, tiny_config, write_sphere_scene  # noqa: E402

from tensorf import experiment  # noqa: E402


@pytest.fixture(scope="session")
def sphere_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sphere_scene(tmp_path_factory.mktemp("sphere"), size=32, n_train=24, n_test=4)


@pytest.fixture(scope="session")
def sphere_run(sphere_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """A field worth looking at (300 steps): (config, final metrics)."""
    cfg = sphere_config(sphere_scene, tmp_path_factory.mktemp("runs") / "sphere_a")
    return cfg, experiment.train(cfg)


@pytest.fixture(scope="session")
def tiny_run(sphere_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted reference for the contracts (60 steps): (config, final metrics)."""
    cfg = tiny_config(sphere_scene, tmp_path_factory.mktemp("runs") / "tiny_a")
    return cfg, experiment.train(cfg)
