"""Camera poses from photos with COLMAP's structure from motion, as the pycolmap wheel ships
it: SIFT features, matching, incremental mapping, all on the CPU and offline (no
vocabulary tree: loop detection and vocab-tree matching would need one downloaded).

Each stage is one blocking pycolmap call. It runs in a worker thread (pycolmap releases
the GIL) while this thread draws its progress bar from what the stage has written so far:
feature rows and verified pairs in the database, registrations from the mapper's callbacks.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pycolmap

from tensorf.progress import tqdm

T = TypeVar("T")
Matcher = Literal["exhaustive", "sequential"]
SEQUENTIAL_OVERLAP = 10  # COLMAP's default: each frame is matched with the next 10
_POLL_SECONDS = 0.2
# nerfstudio's applied_transform: COLMAP's world (x, y, z) -> (x, z, -y), so that COLMAP's
# usual "down is +y" becomes "up is +z" for its viewer. Recorded in transforms.json, which
# our loader (and nerfstudio's) undoes.
APPLIED_TRANSFORM = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def _count(database: Path, table: str) -> int:
    """Rows of `table` that the running stage has committed (0 while it holds the lock)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.05) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        return 0


def _run(
    stage: Callable[[pycolmap.CancellationToken], T],
    bar: tqdm,
    progress: Callable[[], int],
) -> T:
    """`stage(token)` in a worker thread, with `bar` following `progress()` until it ends.
    Ctrl-C cancels the stage through its token and waits for it to stop."""
    # COLMAP logs every image and pair (INFO) and every small model it gives up on (WARNING);
    # the bars and the report say what matters, in less.
    pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 2)
    token = pycolmap.CancellationToken()
    with bar, ThreadPoolExecutor(1) as pool:
        future = pool.submit(stage, token)
        try:
            while not future.done():
                time.sleep(_POLL_SECONDS)
                # Forward only: a count read while the stage held the lock comes back 0.
                bar.update(max(0, min(progress(), bar.total) - bar.n))
        except KeyboardInterrupt:
            token.cancel()
            raise
        result = future.result()
        bar.update(bar.total - bar.n)
        return result


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

    def stage(token: pycolmap.CancellationToken) -> None:
        pycolmap.extract_features(database, image_dir, names, camera_mode=mode,
                                  reader_options=reader, extraction_options=options,
                                  device=pycolmap.Device.cpu, cancellation_token=token)  # fmt: skip

    bar = tqdm(total=len(names), desc="features", unit="image")
    _run(stage, bar, lambda: _count(database, "descriptors"))


def sequential_pairs(n: int, overlap: int = SEQUENTIAL_OVERLAP) -> int:
    """How many pairs COLMAP's sequential matcher (quadratic overlap) forms among n frames:
    each frame with the next `overlap` and with those 2^k ahead, k < `overlap`."""
    steps = set(range(1, overlap + 1)) | {2**k for k in range(overlap)}
    return sum(max(0, n - step) for step in steps)


def match_features(database: Path, n_images: int, matcher: Matcher, seed: int) -> None:
    """Match every pair of images (`exhaustive`) or each with its next ones in name order
    (`sequential`, for video frames), then verify each pair's geometry with RANSAC."""
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = -1
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = seed
    if matcher == "exhaustive":
        total = n_images * (n_images - 1) // 2
        pairing = pycolmap.ExhaustivePairingOptions()
        # Blocks of 10 x 10 images, not COLMAP's 50 x 50: a block's pairs reach the database
        # (and the bar) together, and 50 photos would be one block.
        pairing.block_size = 10

        def stage(token: pycolmap.CancellationToken) -> None:
            pycolmap.match_exhaustive(database, options, pairing, verification,
                                      device=pycolmap.Device.cpu,
                                      cancellation_token=token)  # fmt: skip
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = SEQUENTIAL_OVERLAP
        pairing.quadratic_overlap = True
        pairing.loop_detection = False  # needs a vocabulary tree, i.e. a download
        total = sequential_pairs(n_images)

        def stage(token: pycolmap.CancellationToken) -> None:
            pycolmap.match_sequential(database, options, pairing, verification,
                                      device=pycolmap.Device.cpu,
                                      cancellation_token=token)  # fmt: skip

    bar = tqdm(total=total, desc="matching", unit="pair")
    _run(stage, bar, lambda: _count(database, "two_view_geometries"))


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
    registered = [0]
    lock = threading.Lock()

    def count(k: int) -> Callable[[], None]:
        def callback() -> None:
            with lock:
                registered[0] += k

        return callback

    with tempfile.TemporaryDirectory(dir=scratch) as models:

        def stage(token: pycolmap.CancellationToken) -> dict[int, pycolmap.Reconstruction]:
            pycolmap.set_random_seed(seed)  # COLMAP's generator is per thread: this one's
            return pycolmap.incremental_mapping(database, image_dir, models, options,
                                               initial_image_pair_callback=count(2),
                                               next_image_callback=count(1),
                                               cancellation_token=token)  # fmt: skip

        # Registrations over all models: a model abandoned for a new one counts too.
        bar = tqdm(total=n_images, desc="mapping", unit="image")
        found = _run(stage, bar, lambda: registered[0])
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
