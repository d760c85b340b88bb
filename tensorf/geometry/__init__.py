"""Geometry of cameras and rays: intrinsics, poses and paths, lens distortion, NDC, and
the contraction of unbounded scenes."""
