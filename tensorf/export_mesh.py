"""Export the density's iso-surface as a coloured PLY mesh (marching cubes).

python -m tensorf.export_mesh --run-dir R --out mesh.ply
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import trimesh
import tyro
from skimage import measure

from tensorf import cli, outputs
from tensorf.field import field
from tensorf.progress import tqdm
from tensorf.render.sampling import voxel_step
from tensorf.render.visualize import to_uint8
from tensorf.train import checkpoint
from tensorf.train.events import alpha_fn


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    """Extract an iso-surface of a run's density with marching cubes and write it as PLY."""

    run_dir: Path
    """Run directory written by train_lego.py (latest checkpoint is used)."""
    out: Path = Path("mesh.ply")
    """Output PLY file."""
    resolution: int | None = None
    """Samples along the longest side of the occupied box (default: the grid's)."""
    level: float = 0.005
    """Iso-level of alpha (opacity of one render step), as the official export uses."""
    chunk: int = 65536
    """Points per jitted density / colour call."""


MESH_SUFFIXES = (".ply", ".obj", ".glb", ".off", ".stl")  # formats trimesh writes


def _batched(fn, points: np.ndarray, chunk: int, desc: str) -> np.ndarray:
    """fn over (n, ...) points in fixed-size chunks (one compilation), as numpy."""
    n = points.shape[0]
    padded = np.concatenate([points, np.zeros(((-n) % chunk, *points.shape[1:]), points.dtype)])
    parts = [
        np.asarray(fn(jnp.asarray(padded[i : i + chunk])))
        for i in tqdm(range(0, len(padded), chunk), desc=desc, unit="chunk", leave=False)
    ]
    return np.concatenate(parts)[:n]


def export_mesh(args: ExportArgs) -> trimesh.Trimesh:
    cli.check_numbers(("--resolution", args.resolution, 2, 1024, int),
                      ("--level", args.level, 1e-9, 1.0, float),
                      ("--chunk", args.chunk, 1, 2**22, int))  # fmt: skip
    if args.out.suffix.lower() not in MESH_SUFFIXES:
        raise cli.ConfigError(f"--out {args.out}: name a mesh file ({', '.join(MESH_SUFFIXES)})")
    cli.check_writable(args.out)
    cfg, state = checkpoint.load_run(args.run_dir)
    if cfg.render.ndc:
        raise cli.ConfigError(
            f"{args.run_dir} is a forward-facing (NDC) run: its grid lives in normalised device "
            "coordinates, stretched in depth, so it has no metric surface to export"
        )
    # Only the occupied region: the aabb was shrunk to the alpha mask, which masks alpha too.
    aabb = np.asarray(state.aabb, np.float64)
    if cfg.render.contract:
        # Contraction is the identity on the inner box alone: the mesh is of the region of
        # interest there, not of the background squeezed around it.
        aabb = np.clip(aabb, -1.0, 1.0)
    size = aabb[1] - aabb[0]
    longest = args.resolution or max(state.resolution)
    counts = np.maximum(np.round(size / size.max() * (longest - 1)).astype(int) + 1, 2)
    axes = [np.linspace(lo, hi, c) for lo, hi, c in zip(aabb[0], aabb[1], counts, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    alpha = alpha_fn(state, cfg, voxel_step(cfg.render, aabb, state.resolution))  # jitted
    volume = _batched(alpha, points, args.chunk, "density").reshape(*counts)
    if not volume.max() > args.level > volume.min():
        raise cli.ConfigError(
            f"alpha spans [{volume.min():.3g}, {volume.max():.3g}], so there is no surface at "
            f"--level {args.level}; choose a level inside that range"
        )
    spacing = tuple(size / (counts - 1))
    verts, faces, normals, _ = measure.marching_cubes(volume, args.level, spacing=spacing)
    verts = (verts + aabb[0]).astype(np.float32)

    # Colour each vertex as seen from outside the surface (view direction = -normal; the
    # normals point down the alpha gradient, i.e. out of the object).
    @jax.jit
    def colour(vertex_and_normal):
        xyz, normal = vertex_and_normal[:, :3], vertex_and_normal[:, 3:]
        viewdir = -normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
        return field.radiance(state.params, cfg.model, field.normalize(xyz, state.aabb), viewdir)

    rgb = _batched(colour, np.concatenate([verts, normals], 1).astype(np.float32),
                   args.chunk, "colour")  # fmt: skip
    colours = np.concatenate([to_uint8(rgb), np.full((len(rgb), 1), 255, np.uint8)], 1)
    mesh = trimesh.Trimesh(verts, faces, vertex_normals=normals, vertex_colors=colours,
                           process=False)  # fmt: skip

    def verify(partial: Path) -> str | None:
        back = trimesh.load(partial, force="mesh", process=False)
        if back.vertices.shape != verts.shape or back.faces.shape != faces.shape:
            return (f"it reads back with {len(back.vertices)} vertices and {len(back.faces)} "
                    f"faces, not {len(verts)} and {len(faces)}")  # fmt: skip
        return None

    with outputs.atomic(args.out, verify) as partial:
        mesh.export(partial)
    grid = "x".join(map(str, counts))
    print(f"{args.out}: {len(verts)} vertices, {len(faces)} faces, from a {grid} grid")
    return mesh


def main() -> None:
    """The command line (`python -m tensorf.export_mesh`, `tensorf-mesh`)."""
    cli.run_main(lambda: export_mesh(tyro.cli(ExportArgs)))


if __name__ == "__main__":
    main()
