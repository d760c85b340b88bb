"""Unit quaternions (w, x, y, z) for interpolating camera rotations: from and to rotation
matrices, products, logarithms and exponentials, and spherical interpolation."""

from __future__ import annotations

import math

import numpy as np


def from_matrix(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (w, x, y, z), by the largest of its 4 terms."""
    m = np.asarray(r, np.float64)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * math.sqrt(1.0 + t)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = [0.0] * 4
        q[0], q[1 + i] = (m[k, j] - m[j, k]) / s, 0.25 * s
        q[1 + j], q[1 + k] = (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


def to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def aligned(quats: list[np.ndarray]) -> np.ndarray:
    """Signs chosen so that each quaternion is on the same side as the one before (q and
    -q are one rotation; slerp between opposite signs goes the long way round)."""
    out = [quats[0]]
    for q in quats[1:]:
        out.append(-q if q @ out[-1] < 0 else q)
    return np.stack(out)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])  # fmt: skip


def conj(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def log(q: np.ndarray) -> np.ndarray:
    """Unit quaternion -> (3,) half the rotation vector, on the shorter way round."""
    q = -q if q[0] < 0 else q
    norm = np.linalg.norm(q[1:])
    return np.zeros(3) if norm < 1e-12 else q[1:] / norm * math.atan2(norm, q[0])


def exp(v: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.array([1.0, *v])
    return np.array([math.cos(angle), *(math.sin(angle) / angle * v)])


def slerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    return mul(a, exp(u * log(mul(conj(a), b))))
