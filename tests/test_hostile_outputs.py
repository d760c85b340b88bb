"""Reliability, round 3 (issue 32), outputs: every file is written under a temporary name,
read back, then renamed; a failure at any point leaves no partial file, keeps what was
there before, and ends in one line."""

from __future__ import annotations

import errno
import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from tensorf import cli, outputs
from tensorf.evaluate import EvaluateArgs, evaluate_run
from tensorf.export_mesh import ExportArgs, export_mesh
from tensorf.outputs import OutputError
from tensorf.render import visualize

FULL = OSError(errno.ENOSPC, "No space left on device")


def one_line_exit(fn, capsys) -> str:
    """What `run_main` prints for fn: exit status 2, no traceback, exactly one `error:`
    line (progress bars may have drawn before it)."""
    capsys.readouterr()  # what earlier calls printed
    with pytest.raises(SystemExit) as stop:
        cli.run_main(fn)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def video_failures() -> Iterator[tuple[str, Callable[[Path], None]]]:
    """(what, after(partial path)): ways an encoder ends a video, run once its own close
    has finished (or instead of finishing it), that must not be reported as written."""

    def truncated(partial: Path) -> None:  # the container's index never written
        partial.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])

    def full_at_close(partial: Path) -> None:
        raise FULL

    def emptied(partial: Path) -> None:
        partial.write_bytes(b"")

    for fn in (truncated, full_at_close, emptied):
        yield fn.__name__, fn


def sabotage(writer, after: Callable[[Path], None], partial: Path) -> None:
    """Run `after` once when the encoder closes: imageio's GIF writer closes its plugin (and
    retries from its destructor when that fails), ffmpeg's closes itself."""
    owner = getattr(writer, "instance", writer)
    real = owner.close
    failed: list[Exception] = []  # a disk that was full stays full when close is retried

    def close() -> None:
        real()
        if failed:
            raise failed[0]
        try:
            after(partial)
        except Exception as error:
            failed.append(error)
            raise

    owner.close = close


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_video_that_does_not_decode_is_never_left(tmp_path, monkeypatch, suffix):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for what, after in video_failures():
        path = tmp_path / f"{what}{suffix}"
        path.write_bytes(b"the previous video")
        with pytest.raises(OutputError, match=path.name) as error:
            with visualize.VideoWriter(path, 10) as video:
                sabotage(video._writer, after, outputs.partial_path(path))
                for i in range(4):
                    video.write(np.full((17, 23, 3), 60 * i, np.uint8))
        assert "nothing was written" in str(error.value), what
        assert path.read_bytes() == b"the previous video", what
        assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == [], what
        del video
        gc.collect()  # a writer that retried its close here would print a traceback
        assert unraisable == [], what
    # The same writer, unsabotaged: the frames read back, and nothing else is left.
    path = tmp_path / f"good{suffix}"
    with visualize.VideoWriter(path, 10) as video:
        for i in range(4):
            video.write(np.full((17, 23, 3), 60 * i, np.uint8))
    assert video._verify(path) is None
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []


def image_failures(monkeypatch) -> Iterator[str]:
    """Ways `imwrite` fails; each is patched in before it is yielded."""
    real = iio.imwrite

    def half_then_full(path, image, **kwargs):
        real(path, image, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:20])
        raise FULL

    def silently_truncated(path, image, **kwargs):
        real(path, image, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:40])

    def nothing(path, image, **kwargs):
        Path(path).write_bytes(b"")

    for fn in (half_then_full, silently_truncated, nothing):
        monkeypatch.setattr(iio, "imwrite", fn)
        yield fn.__name__


def test_an_image_that_does_not_read_back_is_never_left(tmp_path, monkeypatch):
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    for what in image_failures(monkeypatch):
        path = tmp_path / f"{what}.png"
        with pytest.raises(OutputError, match=path.name):
            outputs.write_image(path, image)
        assert list(tmp_path.iterdir()) == [], what
    monkeypatch.undo()
    outputs.write_image(tmp_path / "ok.png", image)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.png"]


def test_a_full_disk_during_evaluation_leaves_no_grid_or_video(sphere_run, tmp_path,
                                                               monkeypatch, capsys):  # fmt: skip
    cfg, _ = sphere_run
    args = EvaluateArgs(run_dir=cfg.run.run_dir, max_views=2, save_renders=False, video=True,
                        grid=True, split="test")  # fmt: skip
    run_files = set(cfg.run.run_dir.iterdir())
    for what in image_failures(monkeypatch):
        message = one_line_exit(lambda: evaluate_run(args), capsys)
        assert "renders_test_grid.png" in message, what
        new = set(cfg.run.run_dir.iterdir()) - run_files
        # The video was finished before the grid failed; the grid was not.
        assert {p.name for p in new} <= {"renders_test.mp4"}, what
    (cfg.run.run_dir / "renders_test.mp4").unlink(missing_ok=True)


def test_a_full_disk_during_mesh_export_leaves_no_partial_mesh(sphere_run, tmp_path,
                                                               monkeypatch, capsys):  # fmt: skip
    cfg, _ = sphere_run
    out = tmp_path / "mesh.ply"
    args = ExportArgs(run_dir=cfg.run.run_dir, out=out, resolution=24)
    real = trimesh.Trimesh.export

    def half_then_full(self, path, *a, **k):
        real(self, path, *a, **k)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise FULL

    def truncated(self, path, *a, **k):
        real(self, path, *a, **k)
        Path(path).write_bytes(Path(path).read_bytes()[:-100])

    for fn in (half_then_full, truncated):
        monkeypatch.setattr(trimesh.Trimesh, "export", fn)
        message = one_line_exit(lambda: export_mesh(args), capsys)
        assert str(out) in message, fn.__name__
        assert list(tmp_path.iterdir()) == [], fn.__name__
    monkeypatch.undo()
    mesh = export_mesh(args)
    assert len(trimesh.load(out, force="mesh").vertices) == len(mesh.vertices)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.ply"]


def test_os_errors_say_what_to_do_by_their_kind(capsys):
    for code, advice in ((errno.ENOSPC, "free some space"), (errno.ELOOP, "symbolic link"),
                         (errno.EACCES, "choose a writable path"),
                         (errno.EISDIR, "choose a writable path")):  # fmt: skip

        def fail(code=code):
            raise OSError(code, "failed", "/some/path")

        message = one_line_exit(fail, capsys)
        assert advice in message and "/some/path" in message
        assert code == errno.ENOSPC or "free some space" not in message


def special_targets(folder: Path, suffix: str) -> Iterator[tuple[str, Path, str]]:
    """(what, an output path, what the error says): paths the rename must not replace."""
    (folder / f"a_folder{suffix}").mkdir()
    yield "a folder", folder / f"a_folder{suffix}", "is a folder"
    os.mkfifo(folder / f"a_pipe{suffix}")
    yield "a pipe", folder / f"a_pipe{suffix}", "not a regular file"
    (folder / f"loop{suffix}").symlink_to(f"loop{suffix}")
    yield "a symbolic link loop", folder / f"loop{suffix}", "points back at itself"


def test_outputs_never_replace_what_is_not_a_file(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    writers = {".png": lambda path: outputs.write_image(path, image),
               ".gif": lambda path: visualize.VideoWriter(path, 10)}  # fmt: skip
    for suffix, write in writers.items():
        for what, path, says in special_targets(tmp_path, suffix):
            with pytest.raises(OutputError, match=says):
                write(path)
            assert path.is_symlink() or path.exists(), what  # still there, as it was
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []
    # A link to a file is written through: the link stays a link.
    (tmp_path / "real.png").write_bytes(b"")
    (tmp_path / "link.png").symlink_to("real.png")
    outputs.write_image(tmp_path / "link.png", image)
    assert (tmp_path / "link.png").is_symlink()
    assert iio.imread(tmp_path / "real.png").shape == (4, 4, 3)
