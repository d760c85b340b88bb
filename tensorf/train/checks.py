"""Every option of the trainer checked before any work starts: ranges, finiteness,
consistency, and whether the run fits in this machine's memory.

Each problem is one phrase naming the flag and what it must be; `check_config` joins them
into one `ConfigError` line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import numpy as np

from tensorf import cli
from tensorf.cli import ConfigError, number_problems
from tensorf.config import OPTION_GROUPS, TrainConfig
from tensorf.data.views import MAX_IMAGE_SIDE
from tensorf.field import field, tensor_vm
from tensorf.geometry.contraction import OUTER_AABB
from tensorf.render import sampling
from tensorf.train import steps

# (lowest, highest) of each integer option, by its path in the config.
INTS = {
    "batch_size": (1, 2**24), "n_iters": (1, 10**9), "grid_init": (2, 4096),
    "grid_final": (2, 4096), "checkpoint_every": (1, 10**9), "keep_checkpoints": (1, 10**6),
    "log_every": (1, 10**9), "max_bad_steps": (1, 10**9), "downscale": (1, 10**4),
    "target_long_side": (0, MAX_IMAGE_SIDE),
    "seed": (0, 2**31 - 1), "mask_max_resolution": (2, 1024), "event_lead": (0, 10**9),
    "model.appearance_dim": (1, 4096), "model.mlp_width": (1, 4096),
    "model.feature_pe": (0, 16), "model.view_pe": (0, 16), "model.appearance_codes": (0, 1024),
    "render.max_samples": (1, 10**6), "render.chunk": (1, 2**22),
    "render.outer_samples": (1, 4096),
    "distributed.num_processes": (1, 10**5), "distributed.process_id": (0, 10**5),
    "eval_every": (0, 10**9), "eval_every_views": (1, 10**6), "viewer_port": (0, 65535),
    "steps_per_call": (0, steps.MAX_STEPS_PER_CALL), "pose_warmup_steps": (0, 10**9),
}  # fmt: skip
# (lowest, highest) of each float option, which must also be finite; TINY stands for
# "above zero".
TINY = 1e-12
FLOATS = {
    "lr_grid": (TINY, 1e3), "lr_network": (TINY, 1e3), "lr_decay_ratio": (TINY, 1.0),
    "lr_poses": (TINY, 1e3),
    "mask_threshold": (TINY, 1.0), "l1_initial": (0.0, 1e6), "l1_rest": (0.0, 1e6),
    "tv_density": (0.0, 1e6), "tv_appearance": (0.0, 1e6), "ortho_weight": (0.0, 1e6),
    "distortion_weight": (0.0, 1e6),
    "model.density_shift": (-1e3, 1e3), "model.distance_scale": (TINY, 1e6),
    "model.init_scale": (TINY, 1e3), "render.step_ratio": (TINY, 1e3),
    "render.near": (0.0, 1e9), "render.far": (TINY, 1e9), "render.image_threshold": (TINY, 1.0),
}  # fmt: skip
# Per-step memory beyond the parameters, per sample of the batch: points, their
# contracted / normalised copies, masks, indices and the compositing arrays.
_BYTES_PER_SAMPLE = 96
# Parameters, gradients and Adam's two moments.
_COPIES_OF_PARAMS = 4


def flag(path: str) -> str:
    return "--" + path.replace("_", "-")


def _get(cfg: TrainConfig, path: str):
    value = cfg
    first = path.split(".")[0]
    for name in ([OPTION_GROUPS[first]] if first in OPTION_GROUPS else []) + path.split("."):
        value = getattr(value, name)
    return value


def range_problems(cfg: TrainConfig) -> list[str]:
    specs = [(flag(path), _get(cfg, path), low, high, int) for path, (low, high) in INTS.items()]
    specs += [(flag(path), _get(cfg, path), low, high, float)
              for path, (low, high) in FLOATS.items()]  # fmt: skip
    # None is an option's "unset" for check_numbers; none of these options may be unset.
    return [f"{f} must be set" for f, value, *_ in specs if value is None] + number_problems(*specs)


def check_config(cfg: TrainConfig) -> None:
    """Every problem with cfg's options, as one ConfigError; nothing reads the data."""
    problems = range_problems(cfg)
    if problems:  # the checks below assume sane numbers
        raise ConfigError("; ".join(problems))
    if cfg.optimiser.batch_size % len(jax.devices()):
        problems.append(f"--batch-size must be a multiple of the {len(jax.devices())} devices")
    if cfg.schedule.grid_final < cfg.schedule.grid_init:
        problems.append("--grid-final must be >= --grid-init")
    for name in ("upsample_steps", "mask_steps"):
        steps = getattr(cfg.schedule, name)
        if list(steps) != sorted(set(steps)) or any(s <= 0 for s in steps):
            problems.append(f"{flag(name)} must be increasing positive steps")
        elif steps and steps[-1] > cfg.schedule.n_iters:
            problems.append(f"{flag(name)} go beyond --n-iters {cfg.schedule.n_iters}")
    render, model = cfg.render, cfg.model
    if not 1 <= render.appearance_samples <= render.max_samples:
        problems.append(
            f"--render.appearance-samples (k = {render.appearance_samples}) must be between 1 "
            f"and --render.max-samples ({render.max_samples})"
        )
    if render.near >= render.far:
        problems.append("--render.near must be below --render.far")
    for name in ("density_components", "appearance_components"):
        counts = getattr(model, name)
        if len(counts) != 3 or not all(1 <= c <= 1024 for c in counts):
            problems.append(f"--model.{flag(name)[2:]} must be three counts from 1 to 1024 "
                            "(one per axis pair)")  # fmt: skip
    if len(model.cp_components) != 2 or not all(1 <= c <= 4096 for c in model.cp_components):
        problems.append("--model.cp-components must be two counts from 1 to 4096")
    aabb = cfg.schedule.aabb
    if len(aabb) != 6 or not all(math.isfinite(x) and abs(x) <= 1e6 for x in aabb):
        problems.append("--aabb must be six finite numbers within +-1e6")
    elif any(a >= b for a, b in zip(cfg.schedule.aabb[:3], cfg.schedule.aabb[3:], strict=True)):
        problems.append("--aabb must be x0 y0 z0 x1 y1 z1 with x0 < x1, y0 < y1, z0 < z1")
    if render.contract and (render.ndc or tuple(cfg.schedule.aabb) != OUTER_AABB):
        problems.append("--render.contract needs --aabb -2 -2 -2 2 2 2 (the contracted box) "
                        "and no --render.ndc")  # fmt: skip
    if render.contract and render.near <= 0:
        problems.append("--render.contract needs --render.near > 0")
    if cfg.run.max_minutes is not None and not 0 <= cfg.run.max_minutes <= 1e7:
        problems.append("--max-minutes must be a finite number of minutes >= 0")
    if cfg.eval.eval_max_views is not None and not 1 <= cfg.eval.eval_max_views <= 10**6:
        problems.append("--eval-max-views must be a positive number of views")
    if Path(cfg.run.run_dir) == Path():  # what '' parses to: the run would fill this folder
        problems.append("--run-dir is empty (or '.'): name a folder of its own for the run, "
                        "such as runs/NAME")  # fmt: skip
    problems += cli.host_problems("--viewer-host", cfg.live.viewer_host)
    if cfg.live.viewer and cfg.distributed.num_processes > 1:
        problems.append("--viewer serves single-process training; drop it, and look at the "
                        "run with python -m tensorf.viewer --run-dir instead")  # fmt: skip
    if not problems:
        problems += _memory_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def _shaded_sample_bytes(cfg: TrainConfig) -> int:
    """Memory per sample of the shading buffer: the MLP's input (features, view direction
    and their encodings) and hidden layers, kept for the backward pass with their
    gradients (float32)."""
    model = cfg.model
    inputs = ((model.appearance_dim + 3) * (1 + 2 * max(model.feature_pe, model.view_pe))
              + model.appearance_codes)
    return 4 * 2 * (inputs + 2 * model.mlp_width + 3)


def check_memory(cfg: TrainConfig, image_bytes: int) -> None:
    """The memory check again, counting the training images once they are loaded (a
    12000 x 12000 photo takes gigabytes that the options alone do not show)."""
    problems = _memory_problems(cfg, image_bytes)
    if problems:
        raise ConfigError("; ".join(problems))


def _memory_problems(cfg: TrainConfig, image_bytes: int = 0) -> list[str]:
    """Refuse a run whose final grid, batch and images cannot fit in this machine's
    memory, rather than let it die of it hours later."""
    aabb = np.reshape(cfg.schedule.aabb, (2, 3))
    resolution = tensor_vm.resolution_for_voxels(cfg.schedule.grid_final**3, aabb)
    # One appearance code stands for them all: a view's code is C floats, nothing beside
    # the grids.
    shapes = jax.eval_shape(lambda: field.init_params(jax.random.PRNGKey(0), cfg.model,
                                                      resolution, 1))  # fmt: skip
    params = sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(shapes))
    ndc = (1.0, 1.0) if cfg.render.ndc else None
    settings = sampling.render_settings(cfg, aabb, resolution, ndc)
    samples = settings.samples_per_ray
    need = (_COPIES_OF_PARAMS * params + cfg.optimiser.batch_size * samples * _BYTES_PER_SAMPLE
            + settings.appearance_capacity * _shaded_sample_bytes(cfg) + image_bytes)  # fmt: skip
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need <= have:
        return []
    images = f", {image_bytes / 2**30:.1f} GiB of images" if image_bytes else ""
    return [f"the run needs about {need / 2**30:.0f} GiB at its final grid ({params / 2**30:.1f} "
            f"GiB of parameters{images}, {samples} samples per ray) but this machine has "
            f"{have / 2**30:.0f} GiB: lower --grid-final, --batch-size, the components or "
            "--render.appearance-samples, raise --render.step-ratio, or pass "
            "--downscale"]  # fmt: skip
