"""The training rays: every pixel's camera and colour, and the pool of pixel ids still used,
on the host and on the devices (alpha masks filter it: `events.filter_rays`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tensorf import parallel
from tensorf.config import OptimiserConfig, RunConfig
from tensorf.data.views import Views
from tensorf.geometry import se3
from tensorf.geometry.cameras import Intrinsics, camera_directions, camera_rays, pixel_rays
from tensorf.render.sampling import bucket


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cameras:
    """The training cameras of this process; rays are generated from pixel ids.

    Ideal pinholes that all views share compute their directions; otherwise (lens
    distortion, per-view intrinsics) each distinct camera's per-pixel directions are
    tabulated once (`camera_directions`) and looked up.
    """

    c2w: jax.Array  # (views, 4, 4)
    directions: jax.Array | None  # (cameras, H * W, 3) camera-frame directions, or None
    camera_of_view: jax.Array | None  # (views,) int32 row of `directions`, or None
    view_ids: jax.Array  # (views,) int32 each view's place in the whole training split
    intrinsics: Intrinsics = dataclasses.field(metadata={"static": True})  # the image size

    @classmethod
    def of(cls, views: Views) -> Cameras:
        """The cameras of `views`, this process's share of the training split."""
        c2w = jnp.asarray(views.c2w)
        ids = jnp.asarray(parallel.view_ids(views.n_views))
        cameras = [views.camera(i) for i in range(views.n_views)]
        if views.per_view is None and views.intrinsics.distortion is None:
            return cls(c2w, None, None, ids, views.intrinsics)
        distinct = list(dict.fromkeys(cameras))
        table = np.stack([camera_directions(c).reshape(-1, 3) for c in distinct])
        index = np.array([distinct.index(c) for c in cameras], np.int32)
        return cls(c2w, jnp.asarray(table), jnp.asarray(index), ids, views.intrinsics)

    def corrected(self, table: jax.Array) -> Cameras:
        """The cameras moved by their views' rows of the correction table (all views, 6)
        (--refine-poses, `se3.corrected`). Rays are then made as before: a tabulated
        camera-frame direction turns with its camera."""
        return dataclasses.replace(self, c2w=se3.corrected(self.c2w, table[self.view_ids]))

    def view_of(self, ids: jax.Array) -> jax.Array:
        """Pixel ids (n,) -> the view (n,) of each, among this process's views."""
        return ids // (self.intrinsics.height * self.intrinsics.width)

    def rays(self, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pixel ids (n,) -> origins, directions (n, 3)."""
        height, width = self.intrinsics.height, self.intrinsics.width
        view, pix = jnp.divmod(ids, height * width)
        if self.directions is not None:
            return camera_rays(self.c2w[view], self.directions[self.camera_of_view[view], pix])
        row, col = jnp.divmod(pix, width)
        return pixel_rays(self.c2w[view], col, row, self.intrinsics)


@dataclasses.dataclass(frozen=True)
class RayPool:
    """This process's training pixels on the host, where ray filtering works on them. The
    training loop puts them on the devices (`on`), which draw every batch themselves;
    `sample` / `next_batch` draw one on the host for a single `train_step` (tests,
    benchmarks). The devices generate the rays from pixel ids (with several processes,
    each draws from its own share of the views)."""

    rgb: np.ndarray  # (views * H * W, 3) float32 targets
    index: np.ndarray  # (rays,) int32 pixel ids still used for training
    cameras: Cameras
    # The cameras replicated over each mesh they were used with: put there once.
    placed: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def sample(self, seed: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n pixel ids and their colours; the same for the same seed, step and process."""
        rng = np.random.default_rng((seed, step, jax.process_index()))
        ids = self.index[rng.integers(0, len(self.index), n)]
        return ids, self.rgb[ids]

    def on(self, mesh: Mesh, seed: int) -> DevicePool:
        """The pool on every device of the mesh (see `DevicePool`). The colours and
        cameras go once per mesh; the pixel ids, padded to a few sizes (`bucket`), each
        time (after ray filtering)."""
        if ("rgb", mesh) not in self.placed:
            self.placed["rgb", mesh] = parallel.replicate_per_process(self.rgb, mesh)
        index = np.zeros(bucket(len(self.index)), np.int32)
        index[: len(self.index)] = self.index
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)  # not the state's stream
        placed = parallel.replicate_per_process(
            (index, np.array([len(self.index)], np.int32)), mesh
        )
        return DevicePool(self.placed["rgb", mesh], *placed, parallel.replicate(key, mesh),
                          self.cameras_on(mesh))  # fmt: skip

    def cameras_on(self, mesh: Mesh) -> Cameras:
        """The cameras on every device of the mesh. With several processes each puts its
        own views' cameras on its own devices, which only its own pixel ids index: the
        step reads them inside shard_map, per device, and never moves them."""
        if mesh not in self.placed:
            self.placed[mesh] = parallel.replicate_per_process(self.cameras, mesh)
        return self.placed[mesh]


def make_pool(views: Views) -> RayPool:
    """Every training pixel of `views` (this process's share)."""
    n = views.n_views * views.height * views.width
    return RayPool(views.images.reshape(-1, 3), np.arange(n, dtype=np.int32), Cameras.of(views))


Batch = tuple[Cameras, jax.Array, jax.Array]  # cameras, pixel ids (rays,), colours (rays, 3)


def next_batch(pool: RayPool, run: RunConfig, optimiser: OptimiserConfig, step: int,
               mesh: Mesh) -> Batch:  # fmt: skip
    """The batch of a step: the (replicated) cameras, and pixel ids and target colours split
    over the mesh, every process contributing its share of the rays. Host to device only:
    nothing here waits for the devices."""
    ids, rgb = pool.sample(run.seed, step, optimiser.batch_size // jax.process_count())
    return (pool.cameras_on(mesh), *parallel.shard_rows(mesh, ids, rgb))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DevicePool:
    """This process's training pixels on the devices: each device holds its process's
    colours and pixel ids whole and draws its own share of every batch (`_draw`), so a
    step copies nothing from the host. Whole rather than split, so that a batch is the same
    on 1 device as on 4; it costs 16 bytes per pixel per device (256 MB for the 400x400
    lego). Colours stay float32: Blender's images composited on the background are not
    multiples of 1/255, and uint8 would change the targets."""

    rgb: jax.Array  # (pixels, 3) float32 target colour of every training pixel
    index: jax.Array  # (rows,) int32 pixel ids still used for training, then padding
    count: jax.Array  # (1,) int32 how many of `index` are used
    key: jax.Array  # PRNG key of the batches (a step's is folded with its number)
    cameras: Cameras
