"""Camera poses from photos with COLMAP's structure from motion, as the pycolmap wheel ships
it: SIFT features, matching, incremental mapping, all on the CPU and offline (no
vocabulary tree: loop detection and vocab-tree matching would need one downloaded).

Features and matches go to COLMAP a chunk at a time, so that a progress bar can follow;
the mapper reports each registration through its callbacks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pycolmap

from tensorf.progress import tqdm

T = TypeVar("T")
Matcher = Literal["exhaustive", "sequential"]
SEQUENTIAL_OVERLAP = 10  # COLMAP's default: each frame is matched with the next 10
EXTRACT_CHUNK = 8  # images per extraction call: enough for every core, a bar step each
MATCH_CHUNK = 100  # pairs per matching call
# nerfstudio's applied_transform: COLMAP's world (x, y, z) -> (x, z, -y), so that COLMAP's
# usual "down is +y" becomes "up is +z" for its viewer. Recorded in transforms.json, which
# our loader (and nerfstudio's) undoes.
APPLIED_TRANSFORM = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def _quiet_colmap() -> None:
    """COLMAP logs every image and pair (INFO) and every small model it gives up on
    (WARNING); the bars and the report say what matters, in less."""
    pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 2)


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def extract_features(
    database: Path,
    image_dir: Path,
    names: list[str],
    camera_model: str,
    camera_per_image: bool,
    max_image_size: int,
    max_features: int,
) -> None:
    """SIFT features of `names` (in `image_dir`) into `database`, at most `max_image_size`
    pixels on the long side (COLMAP resizes before extracting), which bounds memory."""
    _quiet_colmap()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_image_size
    options.num_threads = -1  # every core
    options.sift.max_num_features = max_features
    mode = pycolmap.CameraMode.PER_IMAGE if camera_per_image else pycolmap.CameraMode.SINGLE
    # Images (and their ids) go in first, one by one in name order: the extractor's threads
    # would otherwise number them in the order they finish, and ids order the mapper's ties.
    pycolmap.Database.open(database).close()  # import_images needs the file to exist
    pycolmap.import_images(database, image_dir, mode, names, reader)
    with tqdm(total=len(names), desc="features", unit="image") as bar:
        for chunk in _chunks(names, EXTRACT_CHUNK):
            pycolmap.extract_features(database, image_dir, chunk, camera_mode=mode,
                                      reader_options=reader, extraction_options=options,
                                      device=pycolmap.Device.cpu)  # fmt: skip
            bar.update(len(chunk))


def image_pairs(names: list[str], matcher: Matcher) -> list[tuple[str, str]]:
    """The pairs to match, in order: every pair (`exhaustive`), or each image with the next
    SEQUENTIAL_OVERLAP and with those 2^k ahead, k < SEQUENTIAL_OVERLAP (`sequential`, as
    COLMAP's sequential matcher with quadratic overlap pairs video frames)."""
    n = len(names)
    if matcher == "exhaustive":
        steps = range(1, n)
    else:
        quadratic = {2**k for k in range(SEQUENTIAL_OVERLAP)}
        steps = sorted(set(range(1, SEQUENTIAL_OVERLAP + 1)) | quadratic)
    return [(names[i], names[i + step]) for i in range(n) for step in steps if i + step < n]


def match_features(database: Path, pairs: list[tuple[str, str]], seed: int, scratch: Path) -> None:
    """Match the features of each pair of images, then verify its geometry with RANSAC.

    The pairs are handed to COLMAP a chunk at a time, from a list we make, rather than
    through its exhaustive and sequential matchers: the bar moves with each chunk, and the
    database is written by COLMAP alone (reading it meanwhile through Python's own copy of
    SQLite, whose locks COLMAP's copy does not see, corrupted it)."""
    _quiet_colmap()
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = -1
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = seed
    pairing = pycolmap.ImportedPairingOptions()
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        pairing.match_list_path = str(Path(folder) / "pairs.txt")
        with tqdm(total=len(pairs), desc="matching", unit="pair") as bar:
            for chunk in _chunks(pairs, MATCH_CHUNK):
                Path(pairing.match_list_path).write_text("".join(f"{a} {b}\n" for a, b in chunk))
                pycolmap.match_image_pairs(database, options, pairing, verification,
                                           device=pycolmap.Device.cpu)  # fmt: skip
                bar.update(len(chunk))


def map_images(
    database: Path,
    image_dir: Path,
    n_images: int,
    seed: int,
    scratch: Path,
    min_model_size: int,
) -> list[pycolmap.Reconstruction]:
    """Incremental mapping: every model COLMAP builds (it starts a new one when it cannot
    extend the current one), largest (most registered images) first."""
    options = pycolmap.IncrementalPipelineOptions()
    # One thread: with more, COLMAP's mapper is not repeatable (seeded, it still gave another
    # model in 1 run of 5 on the test scene), while features and matching, which take most
    # of the time, use every core and repeat exactly.
    options.num_threads = 1
    options.random_seed = seed
    # COLMAP drops models of fewer than 10 images; a small capture or a fragment of one is
    # still worth reporting (the caller refuses too small a share).
    options.min_model_size = min_model_size
    options.mapper.random_seed = seed
    options.triangulation.random_seed = seed
    _quiet_colmap()
    pycolmap.set_random_seed(seed)
    # Registrations over all models: a model abandoned for a new one counts too.
    with tqdm(total=n_images, desc="mapping", unit="image") as bar:

        def registered(k: int) -> Callable[[], None]:
            return lambda: bar.update(min(k, bar.total - bar.n))

        with tempfile.TemporaryDirectory(dir=scratch) as models:
            found = pycolmap.incremental_mapping(database, image_dir, models, options,
                                                 initial_image_pair_callback=registered(2),
                                                 next_image_callback=registered(1))  # fmt: skip
        bar.update(bar.total - bar.n)
    return sorted(found.values(), key=lambda model: -model.num_reg_images())


def camera_keys(camera: pycolmap.Camera) -> dict:
    """A COLMAP camera as nerfstudio's transforms.json keys (`camera_model`, `fl_x`, ...)."""
    name, params = camera.model.name, [float(p) for p in camera.params]
    if name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        f, cx, cy, *k = params
        fx = fy = f
        coefficients, name = ("k1", "k2"), "OPENCV" if k else "PINHOLE"
    else:  # PINHOLE, OPENCV, OPENCV_FISHEYE: the other models offered
        fx, fy, cx, cy, *k = params
        fisheye = name == "OPENCV_FISHEYE"
        coefficients = ("k1", "k2", "k3", "k4") if fisheye else ("k1", "k2", "p1", "p2")
    keys = {"camera_model": name, "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
            "w": int(camera.width), "h": int(camera.height)}  # fmt: skip
    return keys | dict(zip(coefficients, k, strict=False))


def transforms_json(model: pycolmap.Reconstruction, image_dir: str = "images") -> dict:
    """The model as nerfstudio's `ns-process-data` writes it: OpenGL camera-to-world
    matrices in COLMAP's world turned by APPLIED_TRANSFORM, one shared camera's keys at the
    top level (or each frame's own when there are several), frames in name order."""
    shared = len(model.cameras) == 1
    meta: dict = camera_keys(next(iter(model.cameras.values()))) if shared else {}
    applied = np.vstack([APPLIED_TRANSFORM, [0, 0, 0, 1]])
    frames = []
    for image in sorted(model.images.values(), key=lambda image: image.name):
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        c2w = applied @ np.linalg.inv(w2c) @ _OPENCV_TO_OPENGL
        frame = {"file_path": f"{image_dir}/{image.name}", "transform_matrix": c2w.tolist(),
                 "colmap_im_id": int(image.image_id)}  # fmt: skip
        if not shared:
            frame.update(camera_keys(model.cameras[image.camera_id]))
        frames.append(frame)
    meta["frames"] = frames
    meta["applied_transform"] = APPLIED_TRANSFORM.tolist()
    return meta
