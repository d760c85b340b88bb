"""Scene loaders, one module per format; the format is detected from the folder's files.

- Blender / NeRF-synthetic (`transforms_train.json`): `tensorf.data.blender`
- LLFF forward-facing captures (`poses_bounds.npy`): `tensorf.data.llff`
- instant-ngp / nerfstudio captures (`transforms.json`): `tensorf.data.transforms`
- COLMAP reconstructions (`sparse/0/` beside `images/`): `tensorf.data.colmap`
"""

from __future__ import annotations

import math
from pathlib import Path

from tensorf.data import blender, colmap, llff, transforms
from tensorf.data.location import data_dir, default_dataset_path
from tensorf.data.resolution import FullSize
from tensorf.data.views import DOWNLOAD_HINT, IMAGE_SUFFIXES, DatasetError, SceneKind, Views

__all__ = [
    "DatasetError", "FullSize", "SceneKind", "Views", "available_splits", "data_dir",
    "default_dataset_path", "detect_format", "full_size", "load_views",
]  # fmt: skip

# What marks each format's scene folder, in the order they are tried.
FORMATS = {
    "blender": "transforms_train.json",
    "llff": llff.POSES_FILE,
    "transforms": transforms.FILE,
    "colmap": str(colmap.MODEL_DIR),
}
_LOADERS = {"blender": blender, "llff": llff, "transforms": transforms, "colmap": colmap}
CAPTURES = ("transforms", "colmap")  # the formats whose frames may name missing images


def detect_format(dataset_path: Path | str) -> str:
    """The format of a scene folder (a key of FORMATS), from its files."""
    root = Path(dataset_path)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found; {DOWNLOAD_HINT}")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file, not a dataset folder; {DOWNLOAD_HINT}")
    for name, marker in FORMATS.items():
        if (root / marker).exists():
            return name
    # Blender scenes may lack a train split but still be evaluated on another one.
    if blender.available_splits(root):
        return "blender"
    expected = " or ".join(f"{marker} ({name})" for name, marker in FORMATS.items())
    photos = next((folder for folder in (root, root / "images") if _holds_photos(folder)), None)
    if photos is not None:
        raise DatasetError(f"{root}: photos without camera poses, it has none of "
                           f"{expected}; pose them first with `tensorf-process {photos} OUT` and "
                           "train on OUT")  # fmt: skip
    # A common slip is pointing at nerf_synthetic/ itself rather than at one scene.
    scenes = sorted(
        p.name for p in root.iterdir() if any((p / m).exists() for m in FORMATS.values())
    )
    hint = (
        f"point --dataset-path at one of the scene folders inside it: {', '.join(scenes)}"
        if scenes
        else DOWNLOAD_HINT
    )
    raise DatasetError(f"{root}: not a scene folder, it has none of {expected}; {hint}")


def _holds_photos(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def available_splits(dataset_path: Path | str) -> list[str]:
    """The splits a scene folder offers, sorted."""
    return _LOADERS[detect_format(dataset_path)].available_splits(dataset_path)


def load_views(
    dataset_path: Path | str,
    split: str,
    downscale: int = 1,
    max_views: int | None = None,
    shard: tuple[int, int] = (0, 1),
    drop_missing: bool = False,
) -> Views:
    """Load one split of a scene in any supported format.

    Args:
        dataset_path: the scene folder.
        split: e.g. "train" or "test" (LLFF and captures also have "all").
        downscale: integer image downscale factor >= 1.
        max_views: if given, keep this many views evenly spaced over the split.
        shard: (i, n) keeps every n-th of those views from the i-th on: process i's
            share of the views in n-process training.
        drop_missing: captures: drop the frames whose image file is missing (with a
            warning) instead of refusing the scene.

    Raises:
        DatasetError: for any problem with the files on disk (one line, with the fix).
        ValueError: for a `downscale` or `max_views` that is not a positive integer.
    """
    fmt = detect_format(dataset_path)
    if fmt in CAPTURES:
        return _LOADERS[fmt].load_views(dataset_path, split, downscale, max_views, shard,
                                        drop_missing)  # fmt: skip
    return _LOADERS[fmt].load_views(dataset_path, split, downscale, max_views, shard)


def full_size(dataset_path: Path | str, drop_missing: bool = False) -> FullSize:
    """The full size of a scene's training images (its first training view's, which sets
    the size of all) and the downscale factors its loader reads them at."""
    fmt = detect_format(dataset_path)
    if fmt == "llff":  # from poses_bounds.npy: its images/ may be missing
        return llff.full_size(dataset_path)
    first = load_views(dataset_path, "train", max_views=1, drop_missing=drop_missing)
    width, height = first.width, first.height
    if fmt == "blender":  # box-averaged: the factor must divide both sides
        common = math.gcd(width, height)
        return FullSize(width, height, [f for f in range(1, common + 1) if common % f == 0])
    return FullSize(width, height, range(1, max(width, height) + 1))  # captures: resized
