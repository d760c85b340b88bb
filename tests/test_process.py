"""tensorf-process: photos and a video of a ray-traced scene are posed by COLMAP, and the
poses match the cameras that rendered them (after the similarity transform that structure
from motion cannot know); the output loads in both our capture formats; bad input ends in
one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pycolmap
import pytest
from cli_helpers import assert_one_line_error, run_cli
from photo_scene import CAMERA_DISTANCE, FOCAL, SIZE, noise_texture, render_ring, write_photos
from PIL import Image
from scipy import ndimage

from tensorf import process
from tensorf.capture import sfm
from tensorf.capture.video_frames import sharp_frames
from tensorf.data import DatasetError, colmap, detect_format, load_views, transforms
from tensorf.geometry.cameras import similarity

N_VIEWS = 20
MAX_ROTATION_DEGREES = 0.5
MAX_CENTRE_ERROR = 0.01 * CAMERA_DISTANCE
MAX_FOCAL_ERROR = 0.02



def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))  # a proper rotation
    scale, shift = 2.5, np.array([0.3, -1.0, 4.0])
    found = similarity(points, scale * points @ rotation.T + shift)
    assert found[0] == pytest.approx(scale)
    np.testing.assert_allclose(found[1], rotation, atol=1e-12)
    np.testing.assert_allclose(found[2], shift, atol=1e-12)

def pose_errors(c2w: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per camera: rotation error (degrees) and centre error (scene units) of OpenGL
    camera-to-world `c2w` `(n, 4, 4)` against `truth` `(n, 4, 4)`, after aligning the
    centres by a similarity transform."""
    scale, rotation, shift = similarity(c2w[:, :3, 3], truth[:, :3, 3])
    centres = scale * c2w[:, :3, 3] @ rotation.T + shift
    turned = rotation @ c2w[:, :3, :3]
    cosine = (np.einsum("nij,nij->n", turned, truth[:, :3, :3]) - 1.0) / 2.0
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return angles, np.linalg.norm(centres - truth[:, :3, 3], axis=-1)


def assert_matches_truth(out: Path, truth: np.ndarray, index_of) -> None:
    views = load_views(out, "all")
    indices = [index_of(Path(name).name) for name in views.names]
    angles, centres = pose_errors(np.asarray(views.c2w, np.float64), truth[indices])
    assert angles.max() <= MAX_ROTATION_DEGREES, angles
    assert centres.max() <= MAX_CENTRE_ERROR, centres
    assert (views.width, views.height) == SIZE
    for i in range(views.n_views):
        camera = views.camera(i)
        assert abs(camera.fx / FOCAL - 1) <= MAX_FOCAL_ERROR
        assert abs(camera.fy / FOCAL - 1) <= MAX_FOCAL_ERROR


@pytest.fixture(scope="module")
def ring() -> tuple[np.ndarray, list[np.ndarray]]:
    return render_ring(N_VIEWS)


@pytest.fixture(scope="module")
def photos(ring, tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos") / "photos", ring[1])


@pytest.fixture(scope="module")
def processed(photos) -> tuple[Path, process.Report]:
    out = photos.parent / "scene"
    return out, process.process(process.ProcessArgs(source=photos, out=out))


@pytest.fixture(scope="module")
def video(ring, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), SIZE, fps=10, quality=10)
    writer.send(None)  # the generator starts the encoder
    for image in ring[1]:
        writer.send(np.ascontiguousarray(image))
    writer.close()
    return path


def test_photos_are_posed_like_the_cameras_that_took_them(processed, ring):
    out, report = processed
    assert report.matcher == "exhaustive"
    assert len(report.registered) == report.total == N_VIEWS and not report.unregistered
    assert 0 < report.reprojection_error < 1.0
    assert detect_format(out) == "transforms"
    assert_matches_truth(out, ring[0], lambda name: int(name[5:8]))  # view_NNN.png


def test_the_colmap_model_and_transforms_json_agree(processed):
    out, _ = processed
    a, b = transforms.load_views(out, "all"), colmap.load_views(out, "all")
    assert list(a.names) == [f"images/{n}" for n in b.names]
    np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-5)
    for i in range(a.n_views):
        ka, kb = a.camera(i), b.camera(i)
        np.testing.assert_allclose([ka.fx, ka.fy, ka.cx, ka.cy], [kb.fx, kb.fy, kb.cx, kb.cy])
        assert ka.distortion == kb.distortion


def test_the_output_folder_is_laid_out_as_ns_process_data_does(processed, photos):
    out, _ = processed
    names = sorted(p.name for p in photos.iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert (out / "images" / names[0]).read_bytes() == (photos / names[0]).read_bytes()
    for factor in (2, 4, 8):
        with Image.open(out / f"images_{factor}" / names[0]) as image:
            assert image.size == (SIZE[0] // factor, SIZE[1] // factor)
    assert {p.name for p in (out / "sparse" / "0").iterdir()} >= {"cameras.bin", "images.bin",
                                                                  "points3D.bin"}  # fmt: skip
    assert (out / "database.db").is_file()
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == SIZE
    assert meta["applied_transform"] == sfm.APPLIED_TRANSFORM.tolist()
    assert [f["file_path"] for f in meta["frames"]] == [f"images/{n}" for n in names]


def test_processing_is_repeatable(processed, photos, tmp_path):
    again = process.process(process.ProcessArgs(source=photos, out=tmp_path / "again"))
    out, report = processed
    assert again.registered == report.registered
    first, second = (json.loads((o / "transforms.json").read_text())
                     for o in (out, tmp_path / "again"))  # fmt: skip
    assert first == second


def test_a_video_is_cut_into_frames_and_posed(video, ring, tmp_path):
    out = tmp_path / "scene"
    report = process.process(process.ProcessArgs(source=video, out=out, frames=N_VIEWS))
    assert report.matcher == "sequential"
    assert len(report.registered) == report.total == N_VIEWS
    assert_matches_truth(out, ring[0], lambda name: int(name[6:11]) - 1)  # frame_NNNNN.png


def test_the_sharpest_frame_of_each_stretch_is_kept(tmp_path):
    """12 frames in 4 stretches of 3; in each, one frame is sharp and its neighbours are
    blurred. The kept frames are the sharp ones, in order."""
    texture = np.round(noise_texture(3, 64, 128) * 255).astype(np.uint8)
    originals = [np.ascontiguousarray(texture[:, 4 * k : 4 * k + 64]) for k in range(12)]
    sharp = [3 * w + w % 3 for w in range(4)]
    path = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=12, quality=10)
    writer.send(None)
    for k, frame in enumerate(originals):
        blurred = ndimage.gaussian_filter(frame.astype(float), (2.0, 2.0, 0))
        writer.send(frame if k in sharp else np.round(blurred).astype(np.uint8))
    writer.close()
    kept = list(sharp_frames(path, 4, None))
    nearest = [int(np.argmin([np.abs(f.astype(float) - o).mean() for o in originals]))
               for f in kept]  # fmt: skip
    assert nearest == sharp
    # --fps: 12 frames over 1 s at 2 per second are two stretches of 6.
    assert len(list(sharp_frames(path, None, 2.0))) == 2


@pytest.mark.parametrize("model, params", [
    ("SIMPLE_PINHOLE", [250.0, 160.0, 120.0]),
    ("SIMPLE_RADIAL", [250.0, 160.0, 120.0, -0.05]),
    ("RADIAL", [250.0, 160.0, 120.0, -0.05, 0.01]),
    ("PINHOLE", [250.0, 251.0, 160.0, 120.0]),
    ("OPENCV", [250.0, 251.0, 160.0, 120.0, -0.05, 0.01, 0.001, -0.002]),
    ("OPENCV_FISHEYE", [250.0, 251.0, 160.0, 120.0, 0.05, -0.01, 0.002, -0.0003]),
])  # fmt: skip
def test_every_camera_model_offered_reads_back_the_same(model, params):
    """transforms.json keys of each camera model give the lens the COLMAP loader reads."""
    camera = pycolmap.Camera(model=model, width=192, height=144, params=params)
    keys = sfm.camera_keys(camera)
    assert keys["camera_model"] in transforms.CAMERA_MODELS
    ours = transforms._intrinsics(keys, "test")
    theirs = colmap._intrinsics(camera, Path("test"))
    assert ours == theirs


# --- bad input ----------------------------------------------------------------------------


def run_process(monkeypatch, capsys, *args: object) -> subprocess.CompletedProcess:
    """`tensorf-process *args` in this process (seconds faster than a new interpreter)."""
    monkeypatch.setattr(sys, "argv", ["tensorf-process", *map(str, args)])
    code = 0
    try:
        process.main()
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def _empty(root: Path, photo: np.ndarray) -> Path:
    (root / "in").mkdir()
    return root / "in"


def _two(root: Path, photo: np.ndarray) -> Path:
    return write_photos(root / "in", [photo, photo[::-1]])


def _not_images(root: Path, photo: np.ndarray) -> Path:
    (root / "in").mkdir()
    for name in ("notes.txt", "poses.csv", "readme"):
        (root / "in" / name).write_text("not a photo")
    return root / "in"


def _corrupt(root: Path, photo: np.ndarray) -> Path:
    folder = write_photos(root / "in", [photo, photo[::-1], photo[:, ::-1]])
    (folder / "view_001.png").write_bytes(b"\x89PNG but not really")
    return folder


def _bad_video(root: Path, photo: np.ndarray) -> Path:
    (root / "clip.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    return root / "clip.mp4"


def _identical(root: Path, photo: np.ndarray) -> Path:
    return write_photos(root / "in", [photo] * 5)


BAD_SOURCES = {
    "empty_folder": (_empty, ("no photos",)),
    "two_images": (_two, ("2;", "at least 3")),
    "not_images": (_not_images, ("no photos", "3 other files")),
    "corrupt_image": (_corrupt, ("view_001.png", "not a readable image")),
    "unreadable_video": (_bad_video, ("clip.mp4", "not a readable video")),
    "identical_images": (_identical, ("5 images, 1 distinct", "at least 3")),
    "missing": (lambda root, photo: root / "nowhere", ("nowhere", "not found")),
    "one_photo": (lambda root, photo: _two(root, photo) / "view_000.png", ("one photo",)),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_sources_end_in_one_line(case, ring, tmp_path, monkeypatch, capsys):
    make, fragments = BAD_SOURCES[case]
    source = make(tmp_path, ring[1][0])
    result = run_process(monkeypatch, capsys, source, tmp_path / "out")
    assert_one_line_error(result, *fragments)


def test_an_unwritable_or_used_output_folder_is_refused(photos, tmp_path, monkeypatch, capsys):
    # Tests run as root here, for whom permissions do not forbid writing: OUT under a file
    # is a place no one can create.
    (tmp_path / "file").write_text("")
    result = run_process(monkeypatch, capsys, photos, tmp_path / "file" / "out")
    assert_one_line_error(result, "OUT", "cannot create or write")
    (tmp_path / "used" / "images").mkdir(parents=True)
    result = run_process(monkeypatch, capsys, photos, tmp_path / "used")
    assert_one_line_error(result, "already holds images", "--overwrite")
    result = run_process(monkeypatch, capsys, photos, tmp_path / "out", "--max-image-size", "0")
    assert_one_line_error(result, "--max-image-size")
    # Photos where OUT's images/ goes would be replaced by their own copies.
    result = run_process(monkeypatch, capsys, tmp_path / "used" / "images", tmp_path / "used",
                         "--overwrite")  # fmt: skip
    assert_one_line_error(result, "SOURCE", "would be overwritten")
    assert (tmp_path / "used" / "images").is_dir()


def test_too_few_posed_images_is_an_error_that_keeps_the_database(ring, tmp_path):
    """Three views of the scene and four of unrelated noise: at most 3 of 7 can be posed."""
    noise = [np.round(noise_texture(10 + k, SIZE[1], SIZE[0]) * 255).astype(np.uint8)
             for k in range(4)]  # fmt: skip
    source = write_photos(tmp_path / "in", [*ring[1][:3], *noise])
    with pytest.raises(DatasetError, match="of 7 images could be posed") as info:
        process.process(process.ProcessArgs(source=source, out=tmp_path / "out"))
    assert "--matcher exhaustive" in str(info.value)
    assert (tmp_path / "out" / "database.db").is_file()
    assert not (tmp_path / "out" / "transforms.json").exists()


def test_the_command_line_and_train_py_name_the_next_step(photos, tmp_path):
    """As a user runs them: `python -m tensorf.process`, and train.py pointed at photos."""
    (tmp_path / "empty").mkdir()
    result = run_cli("-m", "tensorf.process", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert_one_line_error(result, "no photos")
    result = run_cli("train.py", "unbounded-quick", "--dataset-path", str(photos),
                     "--run-dir", str(tmp_path / "run"))  # fmt: skip
    assert_one_line_error(result, "photos without camera poses", f"tensorf-process {photos}")


def test_report_names_what_was_left_out():
    report = process.Report(total=4, matcher="exhaustive", registered=("a.jpg", "b.jpg", "c.jpg"),
                            unregistered=("d.jpg",), model_sizes=(3, 2), elsewhere=("d.jpg",),
                            reprojection_error=0.5, seconds={"features": 1.0})  # fmt: skip
    text = "\n".join(report.lines())
    assert "registered 3 of 4 images (75%" in text and "not registered: d.jpg" in text
    assert "2 models" in text and "without d.jpg" in text
    assert "models" not in "\n".join(dataclasses.replace(report, elsewhere=()).lines())


def test_images_that_cannot_be_posed_are_named_and_left_out(ring, tmp_path):
    """Six views of the scene and two of unrelated noise: the six are posed, the report
    names the two, and only the six are in transforms.json and the COLMAP model."""
    noise = [np.round(noise_texture(10 + k, SIZE[1], SIZE[0]) * 255).astype(np.uint8)
             for k in range(2)]  # fmt: skip
    source = write_photos(tmp_path / "in", [*ring[1][:6], *noise])
    report = process.process(process.ProcessArgs(source=source, out=tmp_path / "out"))
    assert report.unregistered == ("view_006.png", "view_007.png")
    assert "not registered: view_006.png, view_007.png" in report.lines()
    assert transforms.load_views(tmp_path / "out", "all").n_views == 6
    assert colmap.load_views(tmp_path / "out", "all").n_views == 6
