"""The shading MLP ("MLPRender_Fea" in the official code)."""

import jax
import jax.numpy as jnp
from flax import linen as nn

# PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which the official
# code relies on; flax's default (lecun normal, zero bias) trains noticeably slower here.
_torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = fan_in**-0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


def positional_encoding(x: jax.Array, n_freqs: int) -> jax.Array:
    """(..., D) -> (..., 2 * D * n_freqs): sin and cos at frequencies 2^0 .. 2^(n-1).

    Only the first frequency calls sin and cos: each next one follows by the double-angle
    formulas, which is twice as fast on a CPU (a rounding error of ~1e-7 per doubling)."""
    if n_freqs == 0:
        return jnp.zeros((*x.shape[:-1], 0), x.dtype)
    sin, cos = [jnp.sin(x)], [jnp.cos(x)]
    for _ in range(n_freqs - 1):
        sin, cos = sin + [2 * sin[-1] * cos[-1]], cos + [(cos[-1] - sin[-1]) * (cos[-1] + sin[-1])]
    # (..., 2, D, n_freqs) flattened: all frequencies of a dimension side by side, sines
    # first. One stack, not a concatenation of two: XLA then writes it in one loop, and
    # the encoding with the shading MLP's first layer takes a quarter less time on a CPU.
    return jnp.stack([jnp.stack(sin, -1), jnp.stack(cos, -1)], -3).reshape(*x.shape[:-1], -1)


class ShadingMLP(nn.Module):
    """Appearance features and view direction (and, optionally, a per-image appearance
    code) -> RGB in [0, 1]."""

    feature_pe: int = 2
    view_pe: int = 2
    width: int = 128

    @nn.compact
    def __call__(
        self, features: jax.Array, viewdirs: jax.Array, codes: jax.Array | None = None
    ) -> jax.Array:
        """features (n, F), viewdirs (n, 3), codes (n, C) or None -> rgb (n, 3).

        The codes (NeRF-W's appearance embeddings) go in last and unencoded, as NeRF-W
        and nerfacto feed them; without them the input is the official MLPRender_Fea's."""
        inputs = [
            features,
            viewdirs,
            positional_encoding(features, self.feature_pe),
            positional_encoding(viewdirs, self.view_pe),
        ]
        x = jnp.concatenate(inputs if codes is None else [*inputs, codes], axis=-1)
        for _ in range(2):
            x = nn.relu(
                nn.Dense(
                    self.width,
                    kernel_init=_torch_kernel_init,
                    bias_init=_torch_bias_init(x.shape[-1]),
                )(x)
            )
        # The official code zeroes the last bias so the initial colour is grey.
        x = nn.Dense(3, kernel_init=_torch_kernel_init, bias_init=nn.initializers.zeros)(x)
        return jax.nn.sigmoid(x)
