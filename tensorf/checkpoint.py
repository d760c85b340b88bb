"""Checkpoints of the full train state with orbax, plus the resolved config as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from tensorf import field
from tensorf.alpha_mask import AlphaMask
from tensorf.config import TrainConfig, from_dict, to_dict
from tensorf.training import ADAM, TrainState

CONFIG_FILE = "config.json"


class CheckpointError(Exception):
    """A run directory without a usable checkpoint."""


def manager(run_dir: Path, keep: int = 3) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints", options=options)


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2))


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is {run_dir} a run directory of train_lego.py?")
    return from_dict(TrainConfig, json.loads(path.read_text()))


def save(mngr: ocp.CheckpointManager, state: TrainState, buffers: dict | None = None) -> None:
    """Save asynchronously; the shapes that vary during training go in a JSON sidecar, with
    the render buffer sizes in use (`buffers`), so a resumed run continues bit for bit."""
    step = int(state.step)
    shapes = {"resolution": list(state.resolution), "mask_cells": list(state.mask.cells.shape)}
    shapes["buffers"] = buffers or {}
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), shapes=ocp.args.JsonSave(shapes)
        ),
    )


def _abstract_state(cfg: TrainConfig, resolution, mask_cells) -> TrainState:
    def build():
        params = field.init_params(jax.random.PRNGKey(0), cfg.model, tuple(resolution))
        return TrainState(
            params=params,
            opt_state=ADAM.init(params),
            aabb=jnp.zeros((2, 3)),
            mask=AlphaMask(jnp.zeros(tuple(mask_cells), bool), jnp.zeros((2, 3))),
            step=jnp.int32(0),
            lr_reset_step=jnp.int32(0),
            l1_weight=jnp.float32(0),
            rng=jax.random.PRNGKey(0),
        )

    return jax.eval_shape(build)


def _latest_shapes(mngr: ocp.CheckpointManager) -> tuple[int, dict]:
    step = mngr.latest_step()
    if step is None:
        raise CheckpointError(f"{mngr.directory}: no checkpoint found")
    return step, mngr.restore(step, args=ocp.args.Composite(shapes=ocp.args.JsonRestore()))[
        "shapes"
    ]


def latest_buffers(mngr: ocp.CheckpointManager) -> dict:
    """The render buffer sizes saved with the latest checkpoint."""
    return _latest_shapes(mngr)[1].get("buffers", {})


def restore_latest(mngr: ocp.CheckpointManager, cfg: TrainConfig) -> TrainState:
    step, shapes = _latest_shapes(mngr)
    target = _abstract_state(cfg, shapes["resolution"], shapes["mask_cells"])
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]
