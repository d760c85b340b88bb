"""What the train step compiles: only its shapes are static, so the run's length, logging,
paths and rates never compile it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from synthetic import sphere_config

from tensorf import data, parallel
from tensorf.config import ModelConfig, override
from tensorf.train import ray_pool, steps, timing, train_state

MESH = parallel.data_mesh()


def test_run_length_logging_paths_and_rates_compile_the_step_once(sphere_scene, tmp_path):
    """Two runs that differ in everything but the step's shapes share one compilation, and
    the second's numbers (its learning rates, decayed over its own length) are in effect."""
    model = ModelConfig(density_components=(2, 2, 2), appearance_components=(2, 2, 2),
                        appearance_dim=4, mlp_width=8)  # a spec no other test compiles
    first = override(sphere_config(sphere_scene, tmp_path / "a"), model=model,
                     batch_size=128, grid_init=16)  # fmt: skip
    second = override(first, run_dir=tmp_path / "b", n_iters=1234, log_every=7,
                      checkpoint_every=11, lr_grid=0.5, lr_network=0.25,
                      lr_decay_ratio=0.5, max_minutes=3.0, eval_every=0)  # fmt: skip
    pool = ray_pool.make_pool(data.load_views(sphere_scene, "train"))
    state = parallel.replicate(train_state.init_state(first), MESH)
    settings = train_state.settings_for(first, state)
    before = timing.COMPILES["count"]
    for cfg in (first, second, first):
        batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, int(state.step), MESH)
        state, metrics = steps.train_step(state, batch, cfg, settings, MESH)
        jax.block_until_ready(metrics)
        if cfg is second:
            decay = 0.5 ** (1 / 1234)  # its second step: one step past the start
            assert float(metrics["lr_grid"]) == pytest.approx(0.5 * decay, rel=1e-6)
            assert float(metrics["lr_network"]) == pytest.approx(0.25 * decay, rel=1e-6)
    assert timing.COMPILES["count"] - before == 1
    assert np.isfinite(float(metrics["loss"]))


STEP_ONCE = """
import dataclasses, json, sys
from pathlib import Path
import jax
from synthetic import sphere_config
from tensorf import data, parallel
from tensorf.config import override
from tensorf.train import ray_pool, steps, timing, train_state
folder = None if sys.argv[2] == "off" else Path(sys.argv[2])
timing.use_compile_cache(folder)
cfg = override(sphere_config(Path(sys.argv[1]), Path("unused")), batch_size=128)
mesh = parallel.data_mesh()
state = parallel.replicate(train_state.init_state(cfg), mesh)
pool = ray_pool.make_pool(data.load_views(cfg.data.dataset_path, "train"))
batch = ray_pool.next_batch(pool, cfg.run, cfg.optimiser, 0, mesh)
_, metrics = steps.train_step(state, batch, cfg, train_state.settings_for(cfg, state), mesh)
jax.block_until_ready(metrics)
print(json.dumps(timing.COMPILES))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_step_from_the_persistent_cache(sphere_scene, tmp_path):
    """Three processes compile the same step: the first fills the cache folder, the second
    loads the step from it (a hit, in a fraction of the seconds), the third runs with the
    cache off and finds nothing."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def run(folder: str) -> dict:
        argv = [sys.executable, "-c", STEP_ONCE, str(sphere_scene), folder]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.splitlines()[-1])

    cold = run(str(tmp_path / "cache"))
    assert any(p.name.startswith("jit_jit_train_step") for p in (tmp_path / "cache").iterdir())
    warm = run(str(tmp_path / "cache"))
    off = run("off")
    assert cold["cache_hits"] == 0 and off["cache_hits"] == 0
    assert warm["cache_hits"] >= 1
    assert warm["seconds"] < cold["seconds"] / 2


def test_an_unusable_cache_folder_warns_once_and_trains_without(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)  # the suite's own cache
    before = jax.config.jax_compilation_cache_dir
    blocker = tmp_path / "a file"
    blocker.write_text("")
    try:
        timing.use_compile_cache(blocker / "cache")
        assert jax.config.jax_compilation_cache_dir is None
        assert capsys.readouterr().err.startswith(f"warning: --compile-cache {blocker}")
        timing.use_compile_cache(tmp_path / "cache")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        assert (tmp_path / "cache").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
