"""Total variation of the VM planes: a hand-computed value and its gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tensorf.field import field, tensor_vm
from tensorf.field.tensor_vm import LINE_AXES, PLANE_AXES, VMGrid

EPS = 1e-6


@pytest.fixture
def x64():
    # As tests/test_gradients.py: float64 only inside the test, so finite differences
    # are meaningful.
    with jax.enable_x64(True):
        yield


def tiny_grid(lines_seed: int = 0) -> VMGrid:
    """Resolution (2, 3, 2): planes XY (2, 3, 2), XZ (2, 2, 1), YZ (3, 2, 1)."""
    xy = np.zeros((2, 3, 2))
    xy[..., 0] = [[0, 1, 3], [2, 2, 2]]  # channel 1 stays zero
    xz = np.array([[1, 0], [0, 1]], float)[..., None]
    yz = np.array([[0, 0], [1, 1], [3, 3]], float)[..., None]
    rng = np.random.default_rng(lines_seed)
    lines = tuple(jnp.asarray(rng.normal(size=(n, c)), jnp.float32)
                  for n, c in ((2, 2), (3, 1), (2, 1)))  # fmt: skip
    planes = tuple(jnp.asarray(p, jnp.float32) for p in (xy, xz, yz))
    return VMGrid(planes, lines)


def test_total_variation_by_hand():
    grid = tiny_grid()
    assert grid.resolution == (2, 3, 2)
    # XY, channel 0 [[0, 1, 3], [2, 2, 2]], channel 1 all zero (means run over channels too):
    #   along axis 0: diffs 2, 1, -1 (and 0, 0, 0)      -> squares 4+1+1 = 6 over 6 -> 1
    #   along axis 1: diffs 1, 2, 0, 0 (and four zeros)  -> squares 1+4 = 5 over 8 -> 0.625
    #   2 * (1 + 0.625) = 3.25
    # XZ [[1, 0], [0, 1]]: axis 0 diffs -1, 1 -> mean 1; axis 1 diffs -1, 1 -> mean 1
    #   2 * (1 + 1) = 4
    # YZ [[0, 0], [1, 1], [3, 3]]: axis 0 diffs 1, 1, 2, 2 -> (1+1+4+4) / 4 = 2.5;
    #   axis 1 diffs all 0 -> 0;  2 * 2.5 = 5
    # Total 3.25 + 4 + 5 = 12.25
    assert float(tensor_vm.total_variation(grid)) == pytest.approx(12.25, rel=1e-6)
    # The lines are not regularised.
    assert float(tensor_vm.total_variation(tiny_grid(lines_seed=5))) == pytest.approx(12.25)
    # field.grid_tv weighs it by 1e-2, as the official TV_loss_density / TV_loss_app.
    params = {"density": grid, "appearance": tiny_grid(lines_seed=1)}
    assert float(field.grid_tv(params, "density")) == pytest.approx(0.1225, rel=1e-6)
    assert float(field.grid_tv(params, "appearance")) == pytest.approx(0.1225, rel=1e-6)


def test_total_variation_of_constant_planes_is_zero():
    grid = tensor_vm.init_vm(jax.random.PRNGKey(0), (4, 5, 6), (2, 3, 1), 0.1)
    flat = VMGrid(tuple(jnp.full_like(p, 0.7) for p in grid.planes), grid.lines)
    assert float(tensor_vm.total_variation(flat)) == 0.0
    assert float(tensor_vm.total_variation(grid)) > 0.0


def test_total_variation_gradient_matches_finite_differences(x64):
    rng = np.random.default_rng(0)
    resolution, components = (4, 5, 3), (2, 3, 1)
    planes = tuple(jnp.asarray(rng.normal(size=(resolution[a], resolution[b], n)))
                   for (a, b), n in zip(PLANE_AXES, components, strict=True))  # fmt: skip
    lines = tuple(jnp.asarray(rng.normal(size=(resolution[c], n)))
                  for c, n in zip(LINE_AXES, components, strict=True))  # fmt: skip
    grid = VMGrid(planes, lines)
    tv = jax.jit(tensor_vm.total_variation)
    assert tv(grid).dtype == jnp.float64
    grads = jax.grad(tv)(grid)
    for i, plane in enumerate(planes):
        g = np.asarray(grads.planes[i])
        assert g.dtype == np.float64 and g.shape == plane.shape
        fd = np.zeros(plane.shape)
        for index in np.ndindex(plane.shape):
            shifted = []
            for sign in (1.0, -1.0):
                moved = list(planes)
                moved[i] = plane.at[index].add(sign * EPS)
                shifted.append(float(tv(VMGrid(tuple(moved), lines))))
            fd[index] = (shifted[0] - shifted[1]) / (2 * EPS)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
        assert np.abs(g).max() > 0.1
    for g in grads.lines:
        assert not np.asarray(g).any()
