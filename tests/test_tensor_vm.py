"""The VM decomposition against the dense tensor it stands for, resampling and cropping."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tensorf.config import ModelConfig, TrainConfig, override
from tensorf.field import field, tensor_vm
from tensorf.field.tensor_vm import LINE_AXES, PLANE_AXES, VMGrid
from tensorf.train import events, train_state

# Jitted once per shape: op-by-op dispatch compiles every primitive separately, which is
# slower than one compilation on a small CPU.
vm_features = jax.jit(tensor_vm.vm_features)
density_feature = jax.jit(tensor_vm.density_feature)
appearance_feature = jax.jit(tensor_vm.appearance_feature)
resize_vm = jax.jit(tensor_vm.resize_vm, static_argnums=1)
density = jax.jit(field.density, static_argnums=1)


def random_grid(
    resolution: tuple[int, int, int], components: int | tuple[int, int, int], seed: int = 0
) -> VMGrid:
    """Normal random values; `components` per pair (one number: the same for all)."""
    rng = np.random.default_rng(seed)
    per_pair = (components,) * 3 if isinstance(components, int) else components
    planes = tuple(
        jnp.asarray(rng.normal(size=(resolution[a], resolution[b], n)), jnp.float32)
        for (a, b), n in zip(PLANE_AXES, per_pair, strict=True)
    )
    lines = tuple(
        jnp.asarray(rng.normal(size=(resolution[c], n)), jnp.float32)
        for c, n in zip(LINE_AXES, per_pair, strict=True)
    )
    return VMGrid(planes, lines)


def test_init_vm_shapes_and_scale():
    shapes = jax.eval_shape(
        lambda k: tensor_vm.init_vm(k, (20, 30, 40), (4, 2, 3), 0.1), jax.random.key(0)
    )
    assert [p.shape for p in shapes.planes] == [(20, 30, 4), (20, 40, 2), (30, 40, 3)]
    assert [x.shape for x in shapes.lines] == [(40, 4), (30, 2), (20, 3)]
    grid = tensor_vm.init_vm(jax.random.PRNGKey(0), (20, 20, 20), (4, 4, 4), 0.1)
    assert grid.resolution == (20, 20, 20)
    values = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grid)])
    assert np.std(values) == pytest.approx(0.1, rel=0.05)
    assert abs(np.mean(values)) < 0.01


def dense_pairs(grid: VMGrid) -> list[np.ndarray]:
    """Per axis pair p, the dense (X, Y, Z, C) tensor plane_p outer line_p."""
    out = []
    for plane, line, (a, b), c in zip(grid.planes, grid.lines, PLANE_AXES, LINE_AXES, strict=True):
        letters = "xyz"
        spec = f"{letters[a]}{letters[b]}k,{letters[c]}k->xyzk"
        out.append(np.einsum(spec, np.asarray(plane, np.float64), np.asarray(line, np.float64)))
    return out


def trilinear(volume: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Reference trilinear lookup of a (X, Y, Z, C) volume at [-1, 1]^3 points, aligned corners."""
    res = np.array(volume.shape[:3])
    u = (xyz + 1.0) / 2.0 * (res - 1)
    i0 = np.clip(np.floor(u).astype(int), 0, res - 2)
    f = u - i0
    out = np.zeros((xyz.shape[0], volume.shape[3]))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    (f[:, 0] if dx else 1 - f[:, 0])
                    * (f[:, 1] if dy else 1 - f[:, 1])
                    * (f[:, 2] if dz else 1 - f[:, 2])
                )
                out += w[:, None] * volume[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    return out


@pytest.mark.parametrize("components", [(3, 3, 3), (4, 1, 2)])
def test_vm_interpolation_is_trilinear_interpolation_of_the_dense_tensor(components):
    grid = random_grid((5, 6, 7), components)
    dense = dense_pairs(grid)
    xyz = np.random.default_rng(0).uniform(-1, 1, (500, 3))
    # Include the faces and corners of the cube, where indices are clamped.
    xyz[:8] = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    feats = np.asarray(vm_features(grid, jnp.asarray(xyz, jnp.float32)))
    assert feats.shape == (500, sum(components))
    # Pair p's components are columns offsets[p] .. offsets[p + 1] of the features.
    offsets = np.cumsum([0, *components])
    for p in range(3):
        np.testing.assert_allclose(feats[:, offsets[p] : offsets[p + 1]],
                                   trilinear(dense[p], xyz), atol=2e-5, rtol=1e-5)  # fmt: skip
    # The sum over pairs and components is the decomposed tensor.
    total = sum(trilinear(d, xyz).sum(1) for d in dense)
    np.testing.assert_allclose(feats.sum(1), total, atol=5e-5, rtol=1e-5)


def test_dense_volume_path_equals_plane_line_lookups_in_value_and_gradient():
    grid = random_grid((5, 6, 7), 3, seed=2)
    xyz = np.random.default_rng(1).uniform(-1, 1, (400, 3))
    xyz[:8] = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    xyz = jnp.asarray(xyz, jnp.float32)
    volume = np.asarray(tensor_vm.dense_volume(grid))
    np.testing.assert_allclose(volume, sum(dense_pairs(grid)).sum(-1), atol=1e-5)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=400), jnp.float32)

    def through_volume(g):
        return tensor_vm.interp_built_volume(tensor_vm.dense_volume(g), xyz)

    def through_lookups(g):
        return tensor_vm.vm_features(g, xyz).sum(1)

    np.testing.assert_allclose(
        jax.jit(through_volume)(grid), trilinear(volume[..., None], np.asarray(xyz))[:, 0],
        atol=5e-5,
    )  # fmt: skip
    # A stored volume's lookup (a gather per corner, custom gradient) gives the same.
    np.testing.assert_allclose(tensor_vm.interp_volume(jnp.asarray(volume), xyz),
                               jax.jit(through_volume)(grid), atol=1e-6)  # fmt: skip
    grads = [jax.jit(jax.grad(lambda g, f=f: (jnp.tanh(f(g)) * weights).sum()))(grid)
             for f in (through_volume, through_lookups)]  # fmt: skip
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
    # density_feature picks either path by size; both give the same feature.
    many, few = tensor_vm.density_feature(grid, xyz), tensor_vm.density_feature(grid, xyz[:1])
    np.testing.assert_allclose(few, many[:1], atol=2e-5)


def test_vm_at_grid_points_equals_dense_tensor():
    grid = random_grid((5, 6, 7), 3, seed=1)
    dense = sum(dense_pairs(grid))  # (5, 6, 7, 3)
    idx = np.stack(np.meshgrid(*[np.arange(r) for r in (5, 6, 7)], indexing="ij"), -1)
    idx = idx.reshape(-1, 3)
    xyz = idx / (np.array([5, 6, 7]) - 1) * 2.0 - 1.0
    feats = np.asarray(vm_features(grid, jnp.asarray(xyz, jnp.float32)))
    per_component = feats.reshape(-1, 3, 3).sum(1)  # summed over the three pairs
    np.testing.assert_allclose(per_component, dense[idx[:, 0], idx[:, 1], idx[:, 2]], atol=2e-5)


def test_feature_shapes_and_values():
    grid = random_grid((4, 5, 6), 3)
    rng = np.random.default_rng(3)
    basis = jnp.asarray(rng.normal(size=(9, 7)), jnp.float32)
    xyz = jnp.asarray(rng.uniform(-1, 1, (11, 3)), jnp.float32)
    feats = vm_features(grid, xyz)
    density = density_feature(grid, xyz)
    appearance = appearance_feature(grid, basis, xyz)
    assert density.shape == (11,)
    assert appearance.shape == (11, 7)
    np.testing.assert_allclose(density, np.asarray(feats).sum(1), rtol=1e-5, atol=1e-5)
    expected = np.asarray(feats) @ np.asarray(basis)
    np.testing.assert_allclose(appearance, expected, rtol=1e-5, atol=1e-5)
    assert grid.resolution == (4, 5, 6)


def test_resize_keeps_values_at_shared_grid_points():
    grid = random_grid((5, 4, 3), 2)
    fine = resize_vm(grid, (9, 7, 5))
    assert fine.resolution == (9, 7, 5)
    for old, new in zip(grid.planes, fine.planes, strict=True):
        np.testing.assert_allclose(new[::2, ::2], old, atol=1e-6)
    for old, new in zip(grid.lines, fine.lines, strict=True):
        np.testing.assert_allclose(new[::2], old, atol=1e-6)
    # Halving every cell of a piecewise (bi)linear function represents it exactly.
    xyz = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (300, 3)), jnp.float32)
    np.testing.assert_allclose(vm_features(fine, xyz), vm_features(grid, xyz), atol=1e-5)
    # A new point half-way between two old points is their mean.
    line = np.asarray(grid.lines[0])
    np.testing.assert_allclose(fine.lines[0][1::2], (line[:-1] + line[1:]) / 2, atol=1e-6)


def test_resize_to_same_resolution_is_identity():
    grid = random_grid((5, 6, 7), 3)
    same = resize_vm(grid, (5, 6, 7))
    for a, b in zip(jax.tree.leaves(grid), jax.tree.leaves(same), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("old,new", [(5, 9), (9, 5), (7, 7), (3, 20), (16, 23), (2, 1)])
def test_interpolation_matrix_rows_sum_to_one(old, new):
    m = tensor_vm.interpolation_matrix(old, new)
    assert m.shape == (new, old)
    assert (m >= 0).all()
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    # Aligned corners: the end points map onto each other (when new > 1).
    if new > 1:
        assert m[0, 0] == pytest.approx(1.0) and m[-1, -1] == pytest.approx(1.0)
    # Linear functions are reproduced exactly.
    x_old = np.linspace(-1, 1, old)
    x_new = np.linspace(-1, 1, new) if new > 1 else np.array([-1.0])
    np.testing.assert_allclose(m @ (3 * x_old + 2), 3 * x_new + 2, atol=1e-5)


def test_crop_and_shrink_keep_the_field_inside_the_new_box():
    cfg = override(TrainConfig(),
        grid_init=16,
        model=ModelConfig(density_components=2, appearance_components=3, density_shift=0.0),
    )
    state = train_state.init_state(cfg)
    old_aabb = np.asarray(state.aabb)
    res = np.array(state.resolution)
    assert tuple(res) == (16, 16, 16)
    units = (old_aabb[1] - old_aabb[0]) / (res - 1)
    bounds = np.array([[-0.55, -0.3, -1.0], [0.7, 0.45, 0.2]], np.float32)

    new = events.shrink_to(state, bounds)
    new_aabb = np.asarray(new.aabb)
    # The new box lies on old grid points, covers the bounds to within half a voxel...
    for corner in new_aabb:
        k = (corner - old_aabb[0]) / units
        np.testing.assert_allclose(k, np.round(k), atol=1e-4)
    assert (new_aabb[0] <= bounds[0] + units / 2 + 1e-6).all()
    assert (new_aabb[1] >= bounds[1] - units / 2 - 1e-6).all()
    # ... and has one grid point per old grid point inside it.
    expected_res = np.round((new_aabb[1] - new_aabb[0]) / units).astype(int) + 1
    assert new.resolution == tuple(expected_res)
    assert new.resolution[0] < 16
    # Adam's moments follow the crop.
    for p, m in zip(jax.tree.leaves(new.params), jax.tree.leaves(new.opt_state.mu), strict=True):
        assert p.shape == m.shape

    rng = np.random.default_rng(0)
    world = rng.uniform(new_aabb[0], new_aabb[1], (400, 3)).astype(np.float32)
    world = jnp.asarray(world)
    before = density(state.params, cfg.model, field.normalize(world, state.aabb))
    after = density(new.params, cfg.model, field.normalize(world, new.aabb))
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-6)
    feat_before = appearance_feature(
        state.params["appearance"], state.params["basis"], field.normalize(world, state.aabb)
    )
    feat_after = appearance_feature(
        new.params["appearance"], new.params["basis"], field.normalize(world, new.aabb)
    )
    np.testing.assert_allclose(feat_after, feat_before, rtol=1e-4, atol=1e-5)


def test_crop_vm_keeps_index_ranges():
    grid = random_grid((6, 7, 8), 2)
    cropped = tensor_vm.crop_vm(grid, (1, 2, 3), (5, 6, 7))
    assert cropped.resolution == (4, 4, 4)
    np.testing.assert_array_equal(cropped.planes[0], grid.planes[0][1:5, 2:6])
    np.testing.assert_array_equal(cropped.planes[1], grid.planes[1][1:5, 3:7])
    np.testing.assert_array_equal(cropped.planes[2], grid.planes[2][2:6, 3:7])
    np.testing.assert_array_equal(cropped.lines[0], grid.lines[0][3:7])  # z
    np.testing.assert_array_equal(cropped.lines[1], grid.lines[1][2:6])  # y
    np.testing.assert_array_equal(cropped.lines[2], grid.lines[2][1:5])  # x


@pytest.mark.parametrize("n", [16, 32, 64, 100, 128, 152, 200, 300])
@pytest.mark.parametrize("half", [1.0, 1.5])
def test_resolution_for_voxels_cube(n, half):
    aabb = np.array([[-half] * 3, [half] * 3], np.float32)
    assert tensor_vm.resolution_for_voxels(n**3, aabb) == (n, n, n)


def test_resolution_for_voxels_box():
    aabb = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    assert tensor_vm.resolution_for_voxels(32 * 16 * 16, aabb) == (32, 16, 16)


def test_grid_dataclass_is_a_pytree():
    grid = random_grid((3, 4, 5), 2)
    doubled = jax.tree.map(lambda x: 2 * x, grid)
    assert isinstance(doubled, VMGrid)
    np.testing.assert_allclose(doubled.planes[1], 2 * grid.planes[1])
    assert dataclasses.is_dataclass(doubled)
