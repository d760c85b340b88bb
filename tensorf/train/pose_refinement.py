"""--refine-poses: a learned correction of every training camera's pose (`se3.corrected`),
its Adam state and learning rate, and where the refined poses go (refined_poses.json, and
renders of the training views)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tensorf import outputs, safe_json
from tensorf.data.views import Views, spread_indices
from tensorf.errors import DatasetError
from tensorf.geometry import se3

# The field's Adam (train_state.ADAM), for the corrections' own state.
ADAM = optax.scale_by_adam(b1=0.9, b2=0.99)
POSES_FILE = "refined_poses.json"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PoseCorrections:
    """Every training view's correction and its Adam state; the table is indexed by the
    view's place in the whole training split, whichever process holds the view."""

    table: jax.Array  # (views, 6) float32: rotation vector (radians), translation (world)
    opt_state: optax.ScaleByAdamState

    @classmethod
    def zeros(cls, n_views: int) -> PoseCorrections:
        """No correction: every pose as given."""
        table = jnp.zeros((n_views, 6), jnp.float32)
        return cls(table, ADAM.init(table))

    def step(self, grads: jax.Array, lr: jax.Array) -> PoseCorrections:
        """One Adam step of the table with gradients (views, 6) at learning rate `lr`."""
        updates, opt_state = ADAM.update(grads, self.opt_state)
        return PoseCorrections(self.table - lr * updates, opt_state)


def learning_rate(lr: jax.Array, warmup: jax.Array, decay_ratio: jax.Array,
                  n_iters: jax.Array, step: jax.Array) -> jax.Array:  # fmt: skip
    """The corrections' learning rate at `step`: a linear ramp from 0 over `warmup` steps,
    then (all along) the exponential decay to `decay_ratio` over `n_iters` steps. Unlike
    the field's, it does not restart on upsample: the grid's resolution does not change
    what the poses are."""
    ramp = jnp.minimum(1.0, (step + 1) / jnp.maximum(warmup, 1))
    return lr * ramp * decay_ratio ** (step / n_iters)


def sizes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each correction's rotation (degrees) and translation (world units), (views,) each."""
    table = np.asarray(table, np.float64)
    return np.degrees(np.linalg.norm(table[:, :3], axis=1)), np.linalg.norm(table[:, 3:], axis=1)


def refined_c2w(c2w: np.ndarray, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Poses (n, 4, 4) corrected by the rows `ids` (n,) of the table (views, 6)."""
    table = np.asarray(table, np.float32)[np.asarray(ids)]
    return np.asarray(se3.corrected(jnp.asarray(c2w, jnp.float32), jnp.asarray(table)))


def export(run_dir: Path, views: Views, ids: np.ndarray, poses: PoseCorrections,
           step: int) -> None:  # fmt: skip
    """<run_dir>/refined_poses.json: the refined camera-to-world of `views` (the training
    views of this process, ids (n,) their places in the split), with the corrections that
    made them. Videos and the viewer read it (`checkpoint.load_cameras`)."""
    table = np.asarray(jax.device_get(poses.table), np.float64)
    c2w = refined_c2w(views.c2w, table, ids).astype(np.float64)
    frames = [{"name": name, "c2w": np.round(pose, 7).tolist(),
               "correction": np.round(table[i], 8).tolist()}
              for name, pose, i in zip(views.names, c2w, ids, strict=True)]  # fmt: skip
    outputs.write_json(Path(run_dir) / POSES_FILE, {
        "convention": "camera-to-world, OpenGL axes (the camera looks down -z, +y up), in "
                      "the world the run trained in (cameras.json); correction: rotation "
                      "vector (radians) then translation, in the given camera's frame: "
                      "refined = given @ [[R, t], [0, 1]]",
        "step": int(step),
        "frames": frames,
    }, indent=None)  # fmt: skip


def load_refined(run_dir: Path, n_views: int) -> np.ndarray | None:
    """The refined poses (n_views, 4, 4) of a run, or None where it has none (no
    --refine-poses). Raises ValueError where the file does not hold n_views poses."""
    path = Path(run_dir) / POSES_FILE
    if not path.is_file():
        return None
    c2w = np.array([f["c2w"] for f in safe_json.loads(path.read_text())["frames"]], np.float64)
    if c2w.shape != (n_views, 4, 4) or not np.isfinite(c2w).all():
        raise ValueError(f"{POSES_FILE}: poses of shape {c2w.shape}, expected ({n_views}, 4, 4)")
    return c2w


def seen_from_refined(views: Views, poses: PoseCorrections | None, split: str,
                      max_views: int | None) -> Views:  # fmt: skip
    """`views` of `split` (loaded with `max_views`) as training refined them: the training
    split's views moved by their corrections; any other split, or a run without
    --refine-poses, as given (held-out views have no correction)."""
    if poses is None or split != "train":
        return views
    ids = np.array(spread_indices(int(poses.table.shape[0]), max_views))
    if len(ids) != views.n_views:
        raise DatasetError(f"the training split has {views.n_views} views here, but the run "
                           f"refined the poses of {len(ids)}: evaluate on the scene it "
                           "trained on")  # fmt: skip
    table = jax.device_get(poses.table)
    return dataclasses.replace(views, c2w=refined_c2w(views.c2w, table, ids).astype(np.float32))
