"""What the capture formats (transforms.json, COLMAP) share once their frames are parsed:
missing images, the held-out split, placement, image reading and sizes."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tensorf.data import placement
from tensorf.data.views import (
    DatasetError,
    Views,
    check_image_memory,
    read_image,
    spread_indices,
    to_unit_float,
)
from tensorf.geometry.cameras import Intrinsics

TEST_EVERY = 8  # without split lists, frames 0, 8, 16, ... are held out (as LLFF's)
SPLITS = ("train", "test", "all")
MISSING_OPTION = "--drop-missing-images"

_WARNED: set[str] = set()  # the warnings printed so far


def available_splits(dataset_path: Path | str) -> list[str]:
    """Every capture has the same three splits."""
    return sorted(SPLITS)


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One posed photo as a format gives it, in the format's world."""

    name: str  # as the format names it (file_path, or the COLMAP image name)
    path: Path
    c2w: np.ndarray  # (4, 4) float64, OpenGL convention
    intrinsics: Intrinsics  # for the size the format states


def load(
    frames: list[Frame],
    source: Path,
    split: str,
    split_names: dict[str, list[str]] | None,
    downscale: int,
    max_views: int | None,
    shard: tuple[int, int],
    drop_missing: bool,
) -> Views:
    """Views of one split (see `tensorf.data.load_views`).

    The placement is fitted to every frame's pose, present or not, so it is the same for
    all splits and whatever the missing-image option.
    """
    placed = placement.fit(np.stack([f.c2w for f in frames]))
    missing = [f for f in frames if not f.path.is_file()]
    if missing and not drop_missing:
        raise DatasetError(
            f"{source}: {len(missing)} of {len(frames)} frames name images that do not exist "
            f"(first: {missing[0].path}); restore them, or pass {MISSING_OPTION} to train on "
            f"the {len(frames) - len(missing)} that do"
        )
    warning = (f"warning: {source}: dropped {len(missing)} of {len(frames)} frames whose "
               f"images are missing (first: {missing[0].path})" if missing else None)  # fmt: skip
    if warning and warning not in _WARNED:  # once, however many splits and probes load it
        _WARNED.add(warning)
        print(warning, file=sys.stderr)
    present = [f for f in frames if f.path.is_file()]
    if not present:
        raise DatasetError(f"{source}: none of the {len(frames)} frames' images exist; check "
                           "that the images folder sits beside it")  # fmt: skip
    chosen = _split(present, source, split, split_names)
    index, count = shard
    chosen = [chosen[i] for i in spread_indices(len(chosen), max_views)][index::count]
    if not chosen:
        raise DatasetError(f"{source}: split '{split}' has too few frames to give each of "
                           f"{count} processes one")  # fmt: skip
    images, cameras = _read_images(chosen, downscale)
    per_view = None if len(set(cameras)) == 1 else tuple(cameras)
    return Views(
        images=images,
        c2w=placed.apply(np.stack([f.c2w for f in chosen])).astype(np.float32),
        intrinsics=cameras[0],
        names=tuple(f.name for f in chosen),
        kind="capture",
        per_view=per_view,
        placement=placed.to_dict(),
    )


def _split(
    frames: list[Frame], source: Path, split: str, split_names: dict[str, list[str]] | None
) -> list[Frame]:
    if split not in SPLITS:
        raise DatasetError(f"{source}: no split '{split}'; captures have {', '.join(SPLITS)}")
    if split == "all":
        return frames
    if split_names is None:
        held_out = [f for i, f in enumerate(frames) if i % TEST_EVERY == 0]
        kept = [f for i, f in enumerate(frames) if i % TEST_EVERY]
        chosen = held_out if split == "test" else kept
    else:
        wanted = {Path(name).as_posix().removeprefix("./") for name in split_names[split]}
        chosen = [f for f in frames if Path(f.name).as_posix().removeprefix("./") in wanted]
    if not chosen:
        raise DatasetError(f"{source}: split '{split}' has no frame with an image; use "
                           "another --eval-split or add frames to it")  # fmt: skip
    return chosen


def _read_images(frames: list[Frame], downscale: int) -> tuple[np.ndarray, list[Intrinsics]]:
    """(n, H, W, 3) float32 at the first frame's size over `downscale`, and each frame's
    camera at that size. Frames of other sizes are resized to it (area average) with their
    intrinsics scaled to match, so one static image shape serves every view."""
    first = frames[0].intrinsics
    size = (max(1, round(first.width / downscale)), max(1, round(first.height / downscale)))
    # The size is declared (transforms.json's w and h, COLMAP's camera): checked before
    # anything of that size is allocated. Photos are read one at a time at full size and
    # kept downscaled, so one full-size photo and all the downscaled ones must fit.
    check_image_memory(1, first.height, first.width, frames[0].path)
    check_image_memory(len(frames), size[1], size[0], frames[0].path)
    images = np.empty((len(frames), size[1], size[0], 3), np.float32)
    cameras = []
    for i, frame in enumerate(frames):
        pixels = read_image(frame.path, f"frame '{frame.name}'")
        camera = frame.intrinsics
        height, width = pixels.shape[:2]
        if (width, height) != (camera.width, camera.height):
            if abs(width / height - camera.width / camera.height) > 0.01:
                raise DatasetError(
                    f"{frame.path}: image is {width}x{height} but its camera is for "
                    f"{camera.width}x{camera.height}, another aspect ratio; fix the "
                    "intrinsics or the image"
                )
            camera = camera.resized(width, height)  # stored downscaled on disk
        rgb = _rgb(pixels, frame.path)
        if (width, height) != size:
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
            camera = camera.resized(*size)
        images[i] = to_unit_float(rgb, frame.path)
        cameras.append(camera)
    return images, cameras


def _rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA 8-bit ->
    (H, W, 3) uint8."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or channels not in (1, 2, 3, 4):
        raise DatasetError(f"{path}: expected an 8-bit grey, RGB or RGBA photo, got "
                           f"{pixels.dtype} of shape {pixels.shape}; convert it")  # fmt: skip
    if channels < 3:
        grey = pixels if pixels.ndim == 2 else pixels[..., 0]
        return np.repeat(grey[..., None], 3, axis=-1)
    # Alpha in a capture is usually a leftover of the export, not a mask: it is ignored.
    return pixels[..., :3]
