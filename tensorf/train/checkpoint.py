"""Checkpoints of the full train state with orbax, plus the resolved config as JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import jmp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

from tensorf import outputs, safe_json
from tensorf.config import TrainConfig
from tensorf.config_json import from_dict, to_dict
from tensorf.data.views import Views
from tensorf.errors import CheckpointError
from tensorf.field import field
from tensorf.field.alpha_mask import AlphaMask, Measured
from tensorf.geometry.cameras import Intrinsics
from tensorf.outputs import is_disk_full
from tensorf.parallel import REPLICATED, data_mesh, replicate
from tensorf.train.pose_refinement import PoseCorrections, load_refined
from tensorf.train.train_state import ADAM, TrainState, initial_loss_scale

CONFIG_FILE = "config.json"
CAMERAS_FILE = "cameras.json"  # the training cameras, so renders need no dataset


def manager(run_dir: Path, keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
    """The run's checkpoints; readers pass create=False, so that looking at a run whose
    checkpoints were deleted does not leave an empty folder behind."""
    folder = Path(run_dir).absolute() / "checkpoints"
    if not create and not folder.is_dir():
        raise CheckpointError(f"{folder}: not found, so the run has no checkpoint; train it "
                              "again (or restore the folder)")  # fmt: skip
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return _Manager(folder, options=options)


class _Manager(ocp.CheckpointManager):
    """orbax's manager, with a save that fails for want of space (raised by the save that
    follows it, or by the wait for it) reported as one CheckpointError: the earlier
    checkpoints are whole, and orbax keeps its partial one apart under a temporary name."""

    def save(self, step: int, *args, **kwargs) -> bool:
        with self._disk_errors():
            return super().save(step, *args, **kwargs)

    def wait_until_finished(self) -> None:
        with self._disk_errors():
            super().wait_until_finished()

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            if isinstance(error, CheckpointError) or not is_disk_full(str(error)):
                raise
            kept = self.latest_step()
            kept = f"step {kept} is the latest whole one" if kept is not None else "none was kept"
            raise CheckpointError(
                f"{self.directory}: a checkpoint could not be written: no space left on the "
                f"device ({kept}); free some space, then --resume"
            ) from None


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    # Renamed into place (as cameras.json): a kill while --resume rewrites it leaves the
    # old file, so the run stays resumable.
    outputs.write_json(Path(run_dir) / CONFIG_FILE, to_dict(cfg))


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is {run_dir} a run directory of train_lego.py?")
    try:
        return from_dict(TrainConfig, _read_json(path))
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise _corrupt(path, error) from error


def _read_json(path: Path) -> dict:
    try:
        values = safe_json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise _corrupt(path, error) from error
    if not isinstance(values, dict):
        raise _corrupt(path, TypeError(f"a JSON {type(values).__name__}, not an object"))
    return values


def _corrupt(path: Path, error: Exception) -> CheckpointError:
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
    return CheckpointError(f"{path}: corrupt ({reason}); restore it from a copy, or train the "
                           "run again")  # fmt: skip


def save_cameras(run_dir: Path, views: Views) -> None:
    cameras = {
        "intrinsics": views.intrinsics.to_dict(),
        "c2w": np.asarray(views.c2w).tolist(),
        "kind": views.kind,
        "depth_bounds": views.depth_bounds,
        "placement": views.placement,
    }
    outputs.write_json(Path(run_dir) / CAMERAS_FILE, cameras, indent=None)


def load_cameras(run_dir: Path) -> dict:
    """The training views' cameras: {"intrinsics": Intrinsics, "c2w": (n, 4, 4) array (as
    refined by --refine-poses, where the run did: refined_poses.json),
    "kind": scene kind, "depth_bounds": (near, far) or None, "placement": how a capture's
    world was placed (`tensorf.data.placement`) or None}."""
    path = Path(run_dir) / CAMERAS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; the run predates it, train it again")
    cameras = _read_json(path)
    try:
        if "intrinsics" in cameras:
            intrinsics = Intrinsics.from_dict(cameras["intrinsics"])
        else:  # written before full intrinsics: one focal, principal point at the centre
            width, height, focal = cameras["width"], cameras["height"], cameras["focal"]
            intrinsics = Intrinsics(focal, focal, 0.5 * width, 0.5 * height, width, height)
        bounds = cameras.get("depth_bounds")
        c2w = np.array(cameras["c2w"], np.float64)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or not np.isfinite(c2w).all():
            raise ValueError(f"c2w of shape {c2w.shape}, expected finite (n, 4, 4)")
        refined = load_refined(Path(run_dir), len(c2w))
        return {
            "intrinsics": intrinsics,
            "c2w": c2w if refined is None else refined,
            "kind": cameras.get("kind", "object"),
            "depth_bounds": None if bounds is None else tuple(bounds),
            "placement": cameras.get("placement"),
        }
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise _corrupt(path, error) from error


def load_run(run_dir: Path) -> tuple[TrainConfig, TrainState]:
    """The config and the latest readable state of a run directory."""
    cfg = load_config(run_dir)
    return cfg, restore_latest(manager(run_dir, create=False), cfg)[0]


def save(mngr: ocp.CheckpointManager, state: TrainState, buffers: dict | None = None,
         measured: Measured | None = None) -> None:  # fmt: skip
    """Save asynchronously; the shapes that vary during training go in a JSON sidecar, with
    the render buffer sizes in use (`buffers`), so a resumed run continues bit for bit; so
    does an alpha mask `measured` ahead of its update."""
    step = int(state.step)
    shapes = {"resolution": list(state.resolution), "mask_cells": list(state.mask.cells.shape)}
    if "codes" in state.params:
        shapes["training_views"] = int(state.params["codes"].shape[0])
    if state.poses is not None:
        shapes["pose_views"] = int(state.poses.table.shape[0])
    state = _storable(state)
    shapes["buffers"] = buffers or {}
    items = {"state": ocp.args.StandardSave(state)}
    if measured is not None:
        shapes["measured"] = {"step": measured.step, "bounds": measured.bounds.tolist(),
                              "cells": list(measured.mask.cells.shape)}  # fmt: skip
        # Replicated, as the state is: every process saves the same.
        mask = replicate(measured.mask, data_mesh())
        items["measured"] = ocp.args.StandardSave(mask)
    mngr.save(step, args=ocp.args.Composite(shapes=ocp.args.JsonSave(shapes), **items))


def _storable(state: TrainState) -> TrainState:
    """jmp's DynamicLossScale (f16 runs) goes in as a plain dict of its two arrays: orbax
    rebuilds trees with None leaves on the way, which DynamicLossScale refuses. The other
    precisions' NoOpLossScale has no leaves, so their checkpoints are unchanged."""
    scale = state.loss_scale
    if isinstance(scale, jmp.DynamicLossScale):
        plain = {"loss_scale": scale.loss_scale, "counter": scale.counter}
        return dataclasses.replace(state, loss_scale=plain)
    return state


def _restored(state: TrainState, cfg: TrainConfig) -> TrainState:
    """Inverse of `_storable`: the loss scale's fixed settings come from the config."""
    if isinstance(state.loss_scale, dict):
        scale = dataclasses.replace(initial_loss_scale(cfg.run), **state.loss_scale)
        return dataclasses.replace(state, loss_scale=scale)
    return state


def _abstract_state(cfg: TrainConfig, resolution, mask_cells, training_views: int,
                    pose_views: int | None) -> TrainState:  # fmt: skip
    def build():
        params = field.init_params(jax.random.PRNGKey(0), cfg.model, tuple(resolution),
                                   training_views)  # fmt: skip
        return TrainState(
            params=params,
            opt_state=ADAM.init(params),
            aabb=jnp.zeros((2, 3)),
            mask=AlphaMask(jnp.zeros(tuple(mask_cells), bool), jnp.zeros((2, 3))),
            step=jnp.int32(0),
            lr_reset_step=jnp.int32(0),
            l1_weight=jnp.float32(0),
            rng=jax.random.PRNGKey(0),
            skipped_steps=jnp.int32(0),
            dropped_samples=jnp.int32(0),
            loss_scale=initial_loss_scale(cfg.run),
            poses=None if pose_views is None else PoseCorrections.zeros(pose_views),
        )

    return _replicated(jax.eval_shape(lambda: _storable(build())))


def _abstract_mask(cells: list[int]) -> AlphaMask:
    return _replicated(AlphaMask(jax.ShapeDtypeStruct(tuple(cells), bool),
                                 jax.ShapeDtypeStruct((2, 3), jnp.float32)))  # fmt: skip


def _replicated(tree):
    """Restored replicated on every device (of every process), as training keeps it."""
    replicated = NamedSharding(data_mesh(), REPLICATED)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        tree)  # fmt: skip


def restore_latest(
    mngr: ocp.CheckpointManager, cfg: TrainConfig, set_aside: Path | None = None
) -> tuple[TrainState, dict]:
    """The newest readable checkpoint: (state, the render buffer sizes saved with it).

    A checkpoint that cannot be read (truncated or corrupt files) is reported with a
    warning and the previous one is tried; with `set_aside`, the unreadable one is moved
    there, so that training can save that step again.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        raise CheckpointError(f"{mngr.directory}: no checkpoint found")
    for step in steps:
        try:
            shapes = mngr.restore(step, args=ocp.args.Composite(shapes=ocp.args.JsonRestore()))
            shapes = shapes["shapes"]
            target = _abstract_state(cfg, shapes["resolution"], shapes["mask_cells"],
                                     shapes.get("training_views", 0),
                                     shapes.get("pose_views"))  # fmt: skip
            items = {"state": ocp.args.StandardRestore(target)}
            if "measured" in shapes:
                items["measured"] = ocp.args.StandardRestore(_abstract_mask(
                    shapes["measured"]["cells"]))  # fmt: skip
            restored = mngr.restore(step, args=ocp.args.Composite(**items))
            saved = shapes.get("buffers", {})
            if "measured" in shapes:
                measured = shapes["measured"]
                saved["measured"] = Measured(measured["step"], restored["measured"],
                                             np.array(measured["bounds"], np.float32))  # fmt: skip
            return _restored(restored["state"], cfg), saved
        except Exception as error:  # orbax / tensorstore raise many types for bad files
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            print(f"warning: checkpoint {mngr.directory / str(step)} is unreadable ({reason})",
                  file=sys.stderr)  # fmt: skip
            if set_aside is not None:
                set_aside.mkdir(parents=True, exist_ok=True)
                shutil.move(mngr.directory / str(step), set_aside / str(step))
                print(f"warning: moved it to {set_aside / str(step)}", file=sys.stderr)
                mngr.reload()
    raise CheckpointError(
        f"{mngr.directory}: no readable checkpoint (tried steps {steps}); start a new run"
    )
