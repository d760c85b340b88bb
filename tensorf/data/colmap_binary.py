"""The record counts of a binary COLMAP model, checked against the files' lengths before
pycolmap reads them.

pycolmap reserves memory for the counts a file states: a truncated or corrupt count made
it allocate ~15 GB for over a minute before failing, and on a smaller machine the kernel
kills the process (or another) without a message. Walking the records, each length
checked against what is left of the file, costs a second for a million points and
allocates nothing. The layout is COLMAP's (src/colmap/scene/reconstruction_io.cc).
"""

from __future__ import annotations

import struct
from pathlib import Path

from tensorf.data.views import DatasetError

# COLMAP's camera model ids -> number of parameters (src/colmap/sensor/models.h).
PARAMS_PER_MODEL = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4, 9: 5, 10: 12, 11: 16}
FILES = ("cameras.bin", "images.bin", "points3D.bin")


class _Reader:
    """Offsets into one file's bytes, each read checked against its length."""

    def __init__(self, path: Path) -> None:
        self.path, self.data, self.offset = path, path.read_bytes(), 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise self.corrupt(f"ends inside a record (byte {len(self.data)})")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def fits(self, count: int, record_size: int, what: str) -> None:
        if count * record_size > len(self.data) - self.offset:
            raise self.corrupt(f"states {count} {what}, more than its "
                               f"{len(self.data)} bytes can hold")  # fmt: skip

    def skip(self, count: int, record_size: int, what: str) -> None:
        self.fits(count, record_size, what)
        self.offset += count * record_size

    def count(self, what: str, smallest_record: int) -> int:
        """A record count, which must fit the rest of the file at `smallest_record` bytes
        a record."""
        (n,) = self.take("<Q")
        self.fits(n, smallest_record, what)
        return n

    def name(self) -> None:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise self.corrupt("ends inside an image name")
        self.offset = end + 1

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise self.corrupt(f"has {len(self.data) - self.offset} bytes after its last record")

    def corrupt(self, problem: str) -> DatasetError:
        return DatasetError(f"{self.path}: {problem}; the model is truncated or corrupt, "
                            "re-export it with COLMAP (File > Export model)")  # fmt: skip


def check_binary_model(model_dir: Path) -> None:
    """Refuse a binary model whose records do not fit its files (a no-op for text models)."""
    if not all((model_dir / name).is_file() for name in FILES):
        return
    cameras = _Reader(model_dir / "cameras.bin")
    for _ in range(cameras.count("cameras", 24)):
        _, model, _, _ = cameras.take("<iiQQ")
        if model not in PARAMS_PER_MODEL:
            raise cameras.corrupt(f"names camera model {model}, which COLMAP does not have")
        cameras.skip(PARAMS_PER_MODEL[model], 8, "camera parameters")
    cameras.finish()
    images = _Reader(model_dir / "images.bin")
    for _ in range(images.count("images", 64 + 1 + 8)):
        images.take("<I7dI")
        images.name()
        (points,) = images.take("<Q")
        images.skip(points, 24, "2D points")
    images.finish()
    points = _Reader(model_dir / "points3D.bin")
    for _ in range(points.count("3D points", 51)):
        points.take("<Q3d3Bd")
        (track,) = points.take("<Q")
        points.skip(track, 8, "track elements")
    points.finish()
