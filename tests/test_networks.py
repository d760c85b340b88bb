"""The shading MLP's positional encoding against the official formula."""

import numpy as np

from tensorf.field.networks import positional_encoding


def test_positional_encoding_matches_the_official_layout():
    # Official: sin and cos of x * 2^k, each as (..., D, n_freqs) flattened, sines first.
    x = np.random.default_rng(0).uniform(-3, 3, (5, 7, 4)).astype(np.float32)
    for n_freqs in (0, 1, 2, 6):
        scaled = (x.astype(np.float64)[..., None] * 2.0 ** np.arange(n_freqs)).reshape(5, 7, -1)
        expected = np.concatenate([np.sin(scaled), np.cos(scaled)], -1)
        got = np.asarray(positional_encoding(x, n_freqs))
        assert got.shape == expected.shape
        # The double-angle steps add ~1e-7 per doubling, relative to the scaled angle.
        np.testing.assert_allclose(got, expected, atol=2e-5 * 2**n_freqs)
