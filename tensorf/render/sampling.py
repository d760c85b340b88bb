"""How rays are sampled: `RenderSettings`, derived from a config and a grid (sample spacing and
count, the occupied window), and the sizes of a render's buffers, fitted to the counts of
the samples that needed them."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from tensorf.config import Precision, RenderConfig, RunConfig, TrainConfig
from tensorf.field import alpha_mask
from tensorf.field.alpha_mask import AlphaMask
from tensorf.geometry import ndc
from tensorf.geometry.cameras import Intrinsics


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """Static (hashable) sampling settings: jit specialises on them."""

    n_samples: int  # evenly spaced samples per ray through the aabb
    step_size: float  # in world units, or in NDC ray parameter t
    density_capacity: int  # occupied samples per batch that get a density evaluation
    appearance_capacity: int  # samples per batch that get the shading MLP
    appearance_samples: int  # top-k by weight per ray considered for shading
    unselected: Literal["renormalize", "black"]
    near: float
    far: float
    weight_threshold: float = 1e-4  # official rm_weight_mask_thre
    precision: Precision = "f32"  # compute dtype of grid lookups and the MLP
    ndc: tuple[float, float] | None = None  # NDC projection (`ndc.projection`), or world rays
    background: float = 1.0  # colour where rays end on nothing (1 white, 0 black)
    contract: bool = False  # unbounded: the aabb is contracted space (`geometry.contraction`)
    outer_samples: int = 0  # with `contract`: samples per ray beyond the inner box
    # The box holding the alpha mask's occupied cells (xmin ymin zmin xmax ymax zmax, in
    # lookup coordinates; None: unknown), and how many samples cover any ray's way through
    # it (0: the whole ray). See `occupied_window`.
    occupied: tuple[float, ...] | None = None
    window: int = 0
    # Two passes (`render_image`; 0: one): the first marches this many samples of every
    # ray; the rays still visible after it that have samples left in the occupied box
    # march the rest, packed into `rest_rays` rays with `rest_density_capacity` samples.
    segment: int = 0
    rest_rays: int = 0
    rest_density_capacity: int = 0

    @property
    def samples_per_ray(self) -> int:
        """Samples each ray marches (and the size of the dense per-ray arrays)."""
        return self.window or self.n_samples + self.outer_samples


DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}


# The buffers of a render (RenderSettings fields) and the counts (of render_rays) they hold.
BUFFERS = {
    "density_capacity": "density_count",
    "appearance_capacity": "appearance_count",
    "rest_rays": "rest_count",
    "rest_density_capacity": "rest_density_count",
}


def bucket(n: int) -> int:
    """Round a buffer size up to (1, 1.25, 1.5 or 1.75) * 2^i, at least 1024: four sizes per
    octave waste at most 25% while bounding recompilations."""
    size = 1024
    while size * 2 < n:
        size *= 2
    return next(size * q // 4 for q in (4, 5, 6, 7, 8) if size * q // 4 >= n)


def fit_capacity(settings: RenderSettings, peaks: dict[str, int], shrink: bool) -> RenderSettings:
    """Buffers (named as in BUFFERS) with ~25% headroom over the counts a batch needed.
    They grow whenever a count overflowed; with `shrink`, they also shrink once they
    exceed 1.6x the count, a margin a freshly fitted buffer (1.25x, then up to 1.25x by
    `bucket`) stays under."""

    def fit(cap: int, count: int) -> int:
        if count > cap or (shrink and 1.6 * count < cap):
            return bucket(int(count * 1.25) + 1)
        return cap

    return dataclasses.replace(
        settings, **{k: fit(getattr(settings, k), count) for k, count in peaks.items()}
    )


def carry_capacity(
    settings: RenderSettings, before: RenderSettings, peaks: tuple[int, int] | None
) -> RenderSettings:
    """Buffers for a new grid (`settings`, sized for the worst case) from the peaks counted
    just before it: the density count scaled by the change in samples per ray, the shaded
    count by the change in sample spacing (a surface's visible samples are as many as fit
    in its depth: lego's grew 1.7x at an upsample to 1.5x the samples, overflowing an
    unscaled buffer for 100 steps), with the usual 25% headroom. Compiling the worst case
    and then the fitted size would cost two compilations (and a very slow step) per grid
    event; this usually costs none (compile ahead)."""
    if peaks is None:
        return settings
    scale = settings.samples_per_ray / before.samples_per_ray
    denser = max(before.step_size / settings.step_size, 1.0)
    return dataclasses.replace(
        settings,
        density_capacity=min(settings.density_capacity, bucket(int(peaks[0] * scale * 1.25) + 1)),
        appearance_capacity=min(settings.appearance_capacity,
                                bucket(int(peaks[1] * denser * 1.25) + 1)),  # fmt: skip
    )


def precision(run: RunConfig) -> Precision:
    if run.precision != "auto":
        return run.precision
    return "bf16" if jax.default_backend() == "gpu" else "f32"


def ndc_for(render: RenderConfig, intrinsics: Intrinsics) -> tuple[float, float] | None:
    """The NDC projection of a scene's (training) cameras when the config samples in NDC."""
    return ndc.projection(intrinsics) if render.ndc else None


def voxel_step(render: RenderConfig, aabb: np.ndarray, resolution) -> float:
    """step_ratio times the mean voxel size (official stepSize)."""
    size = np.asarray(aabb, np.float64)[1] - np.asarray(aabb, np.float64)[0]
    return float(np.mean(size / (np.array(resolution) - 1)) * render.step_ratio)


def render_settings(
    cfg: TrainConfig, aabb: np.ndarray, resolution, ndc: tuple[float, float] | None = None,
    mask: AlphaMask | None = None,
) -> RenderSettings:
    """Sample spacing and count for a grid (official update_stepSize); `ndc`: the scene's
    NDC projection, required when cfg.render.ndc is set; `mask`: the alpha mask, whose
    occupied box limits where rays are marched."""
    if cfg.render.ndc != (ndc is not None):
        raise ValueError("an NDC projection must be given exactly when cfg.render.ndc is set")
    aabb = np.asarray(aabb, np.float64)
    size = aabb[1] - aabb[0]
    outer = cfg.render.outer_samples if cfg.render.contract else 0
    if ndc is None:
        # Contracted, these are the inner samples: the (contracted) box's diagonal covers
        # the way through the inner box from a camera up to 2 sqrt(3) outside it.
        near, far = cfg.render.near, cfg.render.far
        step = voxel_step(cfg.render, aabb, resolution)
        n_samples = min(int(np.linalg.norm(size) / step) + 1, cfg.render.max_samples)
    else:
        # Evenly over t in [0, 1] (the near plane to infinity), as many samples as the
        # official cal_n_samples gives.
        near, far = 0.0, 1.0
        n_samples = min(int(np.linalg.norm(resolution) / cfg.render.step_ratio),
                        cfg.render.max_samples)  # fmt: skip
        step = 1.0 / n_samples
    occupied, window = occupied_window(mask, step, n_samples, cfg.render.ndc)
    if cfg.render.contract:
        occupied, window = None, 0
    return RenderSettings(
        n_samples=n_samples,
        step_size=step,
        density_capacity=bucket(cfg.optimiser.batch_size * (window or n_samples + outer)),
        # Top-k takes at most every sample of a ray: a k beyond that sizes nothing.
        appearance_capacity=bucket(cfg.optimiser.batch_size * min(cfg.render.appearance_samples,
                                                         window or n_samples + outer)),
        appearance_samples=cfg.render.appearance_samples,
        unselected=cfg.render.unselected,
        near=near,
        far=far,
        precision=precision(cfg.run),
        ndc=ndc,
        background=1.0 if cfg.render.background == "white" else 0.0,
        contract=cfg.render.contract,
        outer_samples=outer,
        occupied=occupied,
        window=window,
    )


def occupied_window(
    mask: AlphaMask | None, step: float, n_samples: int, ndc: bool
) -> tuple[tuple[float, ...] | None, int]:
    """The mask's occupied box (None: unknown) and the samples that cover the longest way
    through it (0: no fewer than the whole ray): its diagonal for world rays; for NDC rays,
    whose z grows by 2 per unit of t, its z extent over 2. Three samples of margin cover
    where the first one falls."""
    box = None if mask is None else alpha_mask.occupied_box(mask)
    if box is None:
        return None, 0
    extent = box[1] - box[0]
    span = extent[2] / 2 if ndc else np.linalg.norm(extent)
    window = int(np.ceil(span / step)) + 3
    return tuple(float(x) for x in box.reshape(-1)), window if window < n_samples else 0


def image_settings(settings: RenderSettings, render: RenderConfig) -> RenderSettings:
    """Settings for rendering images rather than training (--render.image-threshold)."""
    return dataclasses.replace(settings, weight_threshold=render.image_threshold)
