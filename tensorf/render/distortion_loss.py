"""mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15), in its O(n) form.

A ray's compositing weights w_i on the intervals with midpoints m_i and widths d_i (in a
normalised ray distance) score

    L = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i,

which is least when the weight sits in one short interval: it pulls each ray's weight
together onto one surface and empties the floaters and the haze in front of and behind it.
With the midpoints sorted along the ray, the double sum is twice
sum_i w_i (m_i sum_{j<i} w_j - sum_{j<i} w_j m_j), two exclusive cumulative sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def distortion_loss(weights: jax.Array, mids: jax.Array, widths: jax.Array) -> jax.Array:
    """The distortion loss of each ray.

    Args:
        weights: (rays, samples) compositing weights.
        mids: (rays, samples) the samples' distances along their rays, non-decreasing
            along each ray wherever the weight is not zero.
        widths: (rays, samples) the lengths of the intervals the samples stand for.

    Returns:
        (rays,) the loss per ray.
    """
    weighted = weights * mids
    weight_before = jnp.cumsum(weights, axis=-1) - weights  # sum_{j<i} w_j
    weighted_before = jnp.cumsum(weighted, axis=-1) - weighted  # sum_{j<i} w_j m_j
    pairs = 2.0 * jnp.sum(weights * (mids * weight_before - weighted_before), axis=-1)
    return pairs + jnp.sum(weights**2 * widths, axis=-1) / 3.0
