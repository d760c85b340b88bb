"""Fixtures shared by the end-to-end and reliability tests: one trained sphere run."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import sphere_config, write_sphere_scene

from tensorf import experiment


@pytest.fixture(scope="session")
def sphere_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sphere_scene(tmp_path_factory.mktemp("sphere"), size=32, n_train=24, n_test=4)


@pytest.fixture(scope="session")
def sphere_run(sphere_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted reference run: (config, final metrics)."""
    cfg = sphere_config(sphere_scene, tmp_path_factory.mktemp("runs") / "sphere_a")
    return cfg, experiment.train(cfg)
