"""The presets: named configurations (`python train.py PRESET [options]`), each with its
one-line description, and the demo scene shipped with the package."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tensorf.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimiserConfig,
    RenderConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    override,
)
from tensorf.data.location import data_dir, default_dataset_path

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "paper": (
        "Official lego settings (VM-192, 30k steps, 128^3 -> 300^3). Meant for a GPU.",
        TrainConfig(),
    ),
    "quick": (
        "Tuned for a 2-core CPU (use with --max-minutes 15): VM-96, 64^3 -> 200^3 over 7k "
        "steps of 1024 rays, one sample per voxel, early and repeated alpha masks.",
        TrainConfig(
            model=ModelConfig(density_components=(8, 8, 8), appearance_components=(24, 24, 24)),
            render=RenderConfig(step_ratio=1.0, appearance_samples=16),
            schedule=ScheduleConfig(
                n_iters=7000,
                grid_init=64,
                grid_final=200,
                upsample_steps=(500, 1000, 1500),
                mask_steps=(500, 1000, 2000),
                shrink="every",
            ),
            optimiser=OptimiserConfig(batch_size=1024),
            run=RunConfig(checkpoint_every=500, log_every=50, fill_budget=True),
            eval=EvalConfig(eval_every=2000, eval_every_views=1),
        ),
    ),
}

# The official LLFF settings (configs/flower.txt): a flat box in NDC, few components on
# the planes that do not face the cameras, TV instead of L1, no view encoding.
_LLFF = TrainConfig(
    data=DataConfig(dataset_path=data_dir() / "nerf_llff_data" / "fern", downscale=4),
    model=ModelConfig(
        density_components=(16, 4, 4),
        appearance_components=(48, 12, 12),
        density_activation="relu",
        feature_pe=0,
        view_pe=0,
    ),
    render=RenderConfig(ndc=True, background="random"),
    schedule=ScheduleConfig(
        n_iters=25_000,
        aabb=(-1.5, -1.67, -1.0, 1.5, 1.67, 1.0),
        grid_final=640,
        upsample_steps=(2000, 3000, 4000, 5500),
        mask_steps=(2500,),
    ),
    optimiser=OptimiserConfig(l1_initial=0.0, l1_rest=0.0, tv_density=1.0, tv_appearance=1.0),
    run=RunConfig(run_dir=Path("runs/fern")),
)
PRESETS["llff"] = (
    "Official LLFF settings (VM [16,4,4]/[48,12,12], NDC, 25k steps of 4096 rays, 128^3 -> "
    "640^3, TV 1.0) at images_4. Meant for a GPU.",
    _LLFF,
)
PRESETS["llff-quick"] = (
    "LLFF tuned for a 2-core CPU (use with --max-minutes 15) at a long side near 504 px "
    "(the LLFF scenes' images_8): 5000 steps of 1024 rays, 64^3 -> 256^3 by step 2000, half "
    "the official samples per ray, a second alpha mask at step 2500.",
    override(
        _LLFF,
        downscale=1,
        target_long_side=504,
        n_iters=5000,
        batch_size=1024,
        grid_init=64,
        grid_final=256,
        upsample_steps=(500, 1000, 1500, 2000),
        mask_steps=(1000, 2500),
        render=dataclasses.replace(_LLFF.render, step_ratio=1.0, appearance_samples=16),
        checkpoint_every=500,
        log_every=50,
        fill_budget=True,
        eval_every=2500,
        eval_every_views=1,
    ),
)


# The official lego CP settings (configs/lego.txt, its TensorCP lines): CP-384, 500^3.
_CP = ModelConfig(decomposition="cp", cp_components=(96, 288), init_scale=0.2)
PRESETS["paper-cp"] = (
    "Official lego CP settings (CP-384: 96 density + 288 appearance components, 30k steps, "
    "128^3 -> 500^3, L1 1e-5). Meant for a GPU.",
    override(TrainConfig(), model=_CP, grid_final=500, l1_initial=1e-5, l1_rest=1e-5),
)
PRESETS["quick-cp"] = (
    "CP for a 2-core CPU (use with --max-minutes 15): CP-384, the quick schedule to a "
    "300^3 grid, 4500 steps (CP steps cost about twice VM-96's here).",
    override(PRESETS["quick"][1], model=_CP, n_iters=4500, grid_final=300, l1_initial=1e-5,
             l1_rest=1e-5),  # fmt: skip
)

# Unbounded captures: all of space contracted into -2..2 (`tensorf.geometry.contraction`); rays
# start just in front of the cameras and end far beyond the scene. Real photos take the
# LLFF regularisers (TV, no L1); the background is random, as for LLFF, so that no colour
# is learned as "nothing", and renders are composited on black.
_UNBOUNDED = TrainConfig(
    data=DataConfig(dataset_path=data_dir() / "nerf" / "fox", downscale=2),
    render=RenderConfig(contract=True, near=0.05, far=1000.0, background="random"),
    schedule=ScheduleConfig(
        aabb=(-2.0, -2.0, -2.0, 2.0, 2.0, 2.0),
        grid_final=512,
        upsample_steps=(2000, 3000, 4000, 5500, 7000),
        mask_steps=(2000, 4000),
    ),
    optimiser=OptimiserConfig(l1_initial=0.0, l1_rest=0.0, tv_density=1.0, tv_appearance=1.0),
    run=RunConfig(run_dir=Path("runs/fox")),
)
PRESETS["unbounded"] = (
    "Unbounded 360-degree captures (transforms.json, COLMAP): scene contraction, VM-192, 30k "
    "steps of 4096 rays, 128^3 -> 512^3 over the contracted box, TV 1.0, at half the "
    "photos' size. Meant for a GPU.",
    _UNBOUNDED,
)
# The length of unbounded-quick's per-image appearance codes (--model.appearance-codes):
# 0, off, until they are measured on the captures (issue 33); 16 turns them on.
UNBOUNDED_QUICK_APPEARANCE_CODES = 0
PRESETS["unbounded-quick"] = (
    "Unbounded captures on a 2-core CPU (use with --max-minutes 15) at a long side near 400 "
    "px: VM-96, 5000 steps of 1024 rays, 64^3 -> 256^3 by step 2000, one sample per voxel "
    "inside the inner box and 64 beyond it.",
    override(
        _UNBOUNDED,
        downscale=1,
        target_long_side=400,
        n_iters=5000,
        batch_size=1024,
        grid_init=64,
        grid_final=256,
        upsample_steps=(500, 1000, 1500, 2000),
        mask_steps=(1000, 2500),
        model=ModelConfig(density_components=(8, 8, 8), appearance_components=(24, 24, 24),
                          appearance_codes=UNBOUNDED_QUICK_APPEARANCE_CODES),
        render=dataclasses.replace(_UNBOUNDED.render, step_ratio=1.0, appearance_samples=16),
        checkpoint_every=500,
        log_every=50,
        fill_budget=True,
        eval_every=2500,
        eval_every_views=1,
    ),
)

DEMO_SCENE = Path(__file__).resolve().parent / "demo" / "lego"


def _demo_dataset_path() -> Path:
    """The shipped 100x100 lego, unless TENSORF_DATA_DIR points at the real data."""
    return default_dataset_path() if os.environ.get("TENSORF_DATA_DIR") else DEMO_SCENE


PRESETS["demo"] = (
    "About two minutes on a 2-core CPU: the 100x100 lego shipped with the code (or the real "
    "one with --dataset-path / TENSORF_DATA_DIR), VM-48, 32^3 -> 96^3, 1500 steps.",
    override(
        PRESETS["quick"][1],
        dataset_path=_demo_dataset_path(),
        run_dir=Path("runs/demo"),
        n_iters=1500,
        grid_init=32,
        grid_final=96,
        upsample_steps=(250, 500, 750),
        mask_steps=(250, 500),
        model=ModelConfig(density_components=(4, 4, 4), appearance_components=(12, 12, 12)),
        checkpoint_every=500,
        eval_max_views=8,
    ),
)
