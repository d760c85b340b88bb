"""Our cameras (OpenGL axes: +y up, looking down -z) as viser's (OpenCV axes: +y down, +z
ahead) and back."""

from __future__ import annotations

import numpy as np
import viser.transforms as vtf

FLIP = np.diag([1.0, -1.0, -1.0])


def c2w_from_viser(wxyz: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world of a viser camera (OpenCV axes)."""
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, np.float64)).as_matrix() @ FLIP
    c2w[:3, 3] = position
    return c2w


def viser_wxyz(c2w: np.ndarray) -> np.ndarray:
    """The viser (OpenCV axes) orientation of an OpenGL camera-to-world (4, 4)."""
    return vtf.SO3.from_matrix(np.asarray(c2w)[:3, :3] @ FLIP).wxyz
