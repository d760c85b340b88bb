"""Image metrics: PSNR, SSIM (dm-pix's, with a faster Gaussian window), the model's size,
and the one-line summary of an evaluation's metrics. LPIPS is `eval.lpips`."""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a - b) ** 2)))


def _gaussian_valid(z: jax.Array) -> jax.Array:
    """(..., H, W, C) -> (..., H - 10, W - 10, C): the 11-tap Gaussian (sigma 1.5) of SSIM
    along both image axes, 'valid' only, as sums of shifted slices: dm_pix's default (a
    convolution per row at the highest precision) takes twice as long on a CPU."""
    taps = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.5**2)
    taps /= taps.sum()
    for axis in (-3, -2):
        n = z.shape[axis] - 10
        z = sum(w * jax.lax.slice_in_dim(z, k, k + n, axis=axis) for k, w in enumerate(taps))
    return z


_ssim = jax.jit(functools.partial(dm_pix.ssim, filter_fn=_gaussian_valid))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with the standard 11x11 Gaussian window (sigma 1.5), as the official code."""
    return float(_ssim(jnp.asarray(a), jnp.asarray(b)))


def model_megabytes(params) -> float:
    """Size of the field's parameters (grids, basis matrix, MLP) as stored, in MB (10^6
    bytes, as the paper's model sizes)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)) / 1e6


def summary(metrics: dict) -> str:
    """PSNR, SSIM and (when measured) LPIPS, as the summary lines print them."""
    line = f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
    if "lpips" in metrics:
        line += f", LPIPS ({metrics['lpips_net']}) {metrics['lpips']:.4f}"
    return line
