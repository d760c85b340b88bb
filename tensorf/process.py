"""Pose a folder of photos or a video with COLMAP (through pycolmap, no other install) and
write a scene folder that `train.py` reads as it is.

python -m tensorf.process SOURCE OUT        (= tensorf-process SOURCE OUT)

OUT gets `images/` (full resolution), `images_2/`, `images_4/`, `images_8/` (downscaled
copies, as nerfstudio's `ns-process-data` writes them), `sparse/0/` (COLMAP binary model),
`transforms.json` (nerfstudio's convention, also read by instant-ngp) and `database.db`
(COLMAP's features and matches, for inspection or for the COLMAP GUI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro
from PIL import Image

from tensorf import cli, outputs
from tensorf.capture import sfm
from tensorf.capture.video_frames import sharp_frames
from tensorf.data import DatasetError
from tensorf.data.views import IMAGE_SUFFIXES
from tensorf.progress import tqdm

MIN_IMAGES = 3
MIN_REGISTERED = 0.5  # below this share of images posed, the result is refused
EXHAUSTIVE_UP_TO = 200  # photos: n^2 / 2 pairs stays minutes on a 2-core CPU up to here
DOWNSCALES = (2, 4, 8)
OUTPUTS = ("images", *(f"images_{f}" for f in DOWNSCALES), "sparse", "transforms.json",
           "database.db")  # fmt: skip
CameraModel = Literal["OPENCV", "SIMPLE_RADIAL", "RADIAL", "PINHOLE", "SIMPLE_PINHOLE",
                      "OPENCV_FISHEYE"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ProcessArgs:
    """Pose a folder of photos or a video with COLMAP (pycolmap, on the CPU) and write a scene
    folder for train.py: images/, images_2/4/8, sparse/0, transforms.json."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """A folder of photos (jpg, png, ...; other files are ignored) or a video file."""
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """The scene folder to write (created if needed)."""
    camera_model: CameraModel = "OPENCV"
    """COLMAP camera model: OPENCV (focal lengths, centre, 2 radial + 2 tangential
    distortion terms) suits phones; PINHOLE for undistorted images; OPENCV_FISHEYE for
    wide-angle lenses."""
    camera_per_image: bool = False
    """One camera per image (photos from several devices or zoom settings) instead of one
    camera shared by all (a video, or photos from one device at one zoom)."""
    matcher: Literal["auto", "exhaustive", "sequential"] = "auto"
    """Which image pairs are matched: every pair (exhaustive), or each image with the next
    ones in name order (sequential, for video frames). auto: sequential for a video and for
    more than 200 photos, exhaustive otherwise."""
    max_image_size: int = 1600
    """Features are found on images scaled to at most this many pixels on the long side
    (bounds memory and time; the poses are for the full-resolution images)."""
    max_features: int = 4096
    """SIFT features kept per image. Half COLMAP's 8192: matching every pair of 50 photos
    on a 2-core CPU then takes minutes rather than a quarter of an hour, and a photo with
    4096 features still registers."""
    frames: int = 100
    """A video: how many frames to keep, the sharpest of as many equal stretches of it."""
    fps: float | None = None
    """A video: keep this many frames per second instead of --frames."""
    seed: int = 0
    """Seed of every random choice (RANSAC, the mapper), for repeatable poses."""
    overwrite: bool = False
    """Replace what an earlier run wrote in OUT (otherwise such an OUT is refused)."""


@dataclasses.dataclass(frozen=True)
class Report:
    """What came of a run: which images were posed, how well, and how long each stage took."""

    total: int  # images given to COLMAP (after dropping duplicates)
    matcher: str  # the pairing used: "exhaustive" or "sequential"
    registered: tuple[str, ...]  # image names posed in the kept model
    unregistered: tuple[str, ...]  # image names left out of it
    model_sizes: tuple[int, ...]  # images posed in each model COLMAP built, largest first
    elsewhere: tuple[str, ...]  # images posed only in the models that were not kept
    reprojection_error: float  # mean over the kept model's points, pixels
    seconds: dict[str, float]  # stage -> wall-clock seconds

    def lines(self) -> list[str]:
        share = len(self.registered) / self.total
        lines = [f"registered {len(self.registered)} of {self.total} images ({share:.0%}, "
                 f"{self.matcher} matching), mean reprojection error "
                 f"{self.reprojection_error:.2f} px"]  # fmt: skip
        if self.elsewhere:
            lines.append(f"COLMAP split the scene into {len(self.model_sizes)} models (images: "
                         f"{', '.join(map(str, self.model_sizes))}); kept the largest, without "
                         f"{', '.join(self.elsewhere)}")  # fmt: skip
        if self.unregistered:
            lines.append(f"not registered: {', '.join(self.unregistered)}")
        times = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        lines.append(f"time: {times}")
        return lines


def _check_args(args: ProcessArgs) -> None:
    cli.check_numbers(("--max-image-size", args.max_image_size, 64, 100_000, int),
                      ("--max-features", args.max_features, 64, 1_000_000, int),
                      ("--frames", args.frames, MIN_IMAGES, 100_000, int),
                      ("--fps", args.fps, 1e-3, 1000.0, float))  # fmt: skip
    if not args.source.exists():
        raise DatasetError(f"{args.source}: not found; give a folder of photos or a video file")
    cli.check_creatable(args.out, "OUT")
    source, out = args.source.resolve(), args.out.resolve()
    if source == out or any(source.is_relative_to(out / name) for name in OUTPUTS):
        raise cli.ConfigError(f"SOURCE {args.source} lies where OUT's own files go and would "
                              "be overwritten; move it or choose another OUT")  # fmt: skip
    if args.source.is_file() and args.source.suffix.lower() in IMAGE_SUFFIXES:
        raise DatasetError(f"{args.source}: one photo; give the folder that holds the photos")
    earlier = [name for name in OUTPUTS if (args.out / name).exists()]
    if earlier and not args.overwrite:
        raise cli.ConfigError(f"OUT {args.out} already holds {', '.join(earlier)} from an "
                              "earlier run; pass --overwrite to replace them")  # fmt: skip


def _photos(folder: Path) -> list[Path]:
    """The folder's image files (by suffix) in name order; refuses a folder without any."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    photos = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        others = f" (it holds {len(files)} other files, e.g. {files[0].name})" if files else ""
        raise DatasetError(f"{folder}: no photos{others}; give a folder of "
                           f"{'/'.join(sorted(IMAGE_SUFFIXES))} files or a video")  # fmt: skip
    return photos


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable image ({' '.join(str(error).split())}); "
                           "remove it from the folder or replace it") from error  # fmt: skip


def _write_pyramid(out: Path, name: str, rgb: np.ndarray, copy_from: Path | None) -> None:
    """images/NAME (a copy of the file itself when there is one) and its downscaled copies,
    at round(size / factor) as our capture loader resizes."""
    if copy_from is None:
        Image.fromarray(rgb).save(out / "images" / name)
    else:
        shutil.copy2(copy_from, out / "images" / name)
    image = Image.fromarray(rgb)
    for factor in DOWNSCALES:
        size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        image.resize(size, Image.Resampling.BOX).save(out / f"images_{factor}" / name)


def _gather(args: ProcessArgs, is_video: bool) -> list[str]:
    """Write OUT/images and its downscaled copies; the image names, duplicates left out."""
    for name in OUTPUTS:
        target = args.out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for folder in ("images", *(f"images_{f}" for f in DOWNSCALES)):
        (args.out / folder).mkdir(parents=True)
    if is_video:
        frames = sharp_frames(args.source, args.frames, args.fps)
        sources = ((f"frame_{i + 1:05d}.png", frame, None) for i, frame in enumerate(frames))
        total = None  # the video's own bar counts
    else:
        photos = _photos(args.source)
        sources, total = ((p.name, None, p) for p in photos), len(photos)
    seen: dict[str, str] = {}
    names, duplicates, sizes, given = [], [], {}, 0
    for name, rgb, path in tqdm(sources, total=total, desc="images", unit="image"):
        given += 1
        rgb = _read_rgb(path) if rgb is None else rgb
        digest = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape)
        if digest in seen:  # no new view: COLMAP would only find a zero baseline
            duplicates.append(f"{name} (= {seen[digest]})")
            continue
        seen[digest] = name
        sizes.setdefault(rgb.shape[1::-1], []).append(name)
        _write_pyramid(args.out, name, rgb, path)
        names.append(name)
    if duplicates:
        print(f"dropped {len(duplicates)} images identical to others: "
              f"{', '.join(duplicates[:5])}{', ...' if len(duplicates) > 5 else ''}",
              file=sys.stderr)  # fmt: skip
    if len(names) < MIN_IMAGES:
        what = f"{given} images, {len(names)} distinct" if duplicates else f"{len(names)}"
        raise DatasetError(f"{args.source}: {what}; posing needs at least {MIN_IMAGES} distinct "
                           "views, overlapping but from different places")  # fmt: skip
    if len(sizes) > 1 and not args.camera_per_image:
        listed = "; ".join(f"{w}x{h}: {len(n)} (e.g. {n[0]})" for (w, h), n in sizes.items())
        raise cli.ConfigError(f"{args.source}: images of different sizes ({listed}) cannot "
                              "share one camera; pass --camera-per-image")  # fmt: skip
    return names


def process(args: ProcessArgs) -> Report:
    """Run every stage; the report of the kept model. Raises DatasetError (one line) when
    fewer than half the images are posed, keeping the database for inspection."""
    _check_args(args)
    is_video = args.source.is_file()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    names = _gather(args, is_video)
    seconds["images"] = time.perf_counter() - start
    database, image_dir = args.out / "database.db", args.out / "images"
    stage_start = time.perf_counter()
    sfm.extract_features(database, image_dir, names, args.camera_model, args.camera_per_image,
                         args.max_image_size, args.max_features)  # fmt: skip
    seconds["features"] = time.perf_counter() - stage_start
    matcher = args.matcher
    if matcher == "auto":
        matcher = "sequential" if is_video or len(names) > EXHAUSTIVE_UP_TO else "exhaustive"
    stage_start = time.perf_counter()
    sfm.match_features(database, sfm.image_pairs(names, matcher), args.seed, args.out)
    seconds["matching"] = time.perf_counter() - stage_start
    stage_start = time.perf_counter()
    models = sfm.map_images(database, image_dir, len(names), args.seed, args.out, MIN_IMAGES)
    seconds["mapping"] = time.perf_counter() - stage_start
    posed = sorted(image.name for image in models[0].images.values()) if models else []
    if len(posed) < MIN_REGISTERED * len(names):
        split = f" (in {len(models)} separate models)" if len(models) > 1 else ""
        raise DatasetError(
            f"only {len(posed)} of {len(names)} images could be posed{split}; try photos with "
            "more overlap (each part of the scene in 3+ photos, taken from nearby places), "
            f"--matcher exhaustive, or fewer blurry frames; {database} is kept for inspection"
        )
    model = models[0]
    (args.out / "sparse" / "0").mkdir(parents=True)
    model.write(args.out / "sparse" / "0")
    outputs.write_json(args.out / "transforms.json", sfm.transforms_json(model))
    seconds["total"] = time.perf_counter() - start
    return Report(
        total=len(names),
        matcher=matcher,
        registered=tuple(posed),
        unregistered=tuple(sorted(set(names) - set(posed))),
        model_sizes=tuple(m.num_reg_images() for m in models),
        # Models may share images (COLMAP lets a new model overlap the old ones).
        elsewhere=tuple(
            sorted({image.name for m in models[1:] for image in m.images.values()} - set(posed))
        ),  # fmt: skip
        reprojection_error=float(model.compute_mean_reprojection_error()),
        seconds=seconds,
    )


def _process_and_report(args: ProcessArgs) -> Report:
    report = process(args)
    for line in report.lines():
        print(line)
    print(f"wrote {args.out}; train with: python train.py unbounded-quick --dataset-path "
          f"{args.out}")  # fmt: skip
    return report


def main() -> None:
    """Entry point of `tensorf-process` and `python -m tensorf.process`."""
    cli.run_main(lambda: _process_and_report(tyro.cli(ProcessArgs)))


if __name__ == "__main__":
    main()
