"""The config in groups: every flag as it was spelled before, presets unchanged, old flat
config.json files still loading (and resuming), and what may change on --resume."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
import tyro

from tensorf.cli import ConfigError
from tensorf.config import (
    OPTION_GROUPS,
    TrainConfig,
    default_compile_cache,
    override,
    resumable_options,
)
from tensorf.config_json import flat_dict, to_dict
from tensorf.data.location import data_dir
from tensorf.loop import rundir
from tensorf.presets import DEMO_SCENE, PRESETS
from tensorf.train import checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def parse(*args: str) -> tuple[TrainConfig | None, str]:
    """The training command line's config for `args` (None if refused), and what it said."""
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        try:
            return tyro.extras.overridable_config_cli(PRESETS, args=list(args)), said.getvalue()
        except SystemExit:
            return None, said.getvalue()


# Every option of `train.py --help` before the options were grouped (tests/fixtures).
FLAGS = [f for f in json.loads((FIXTURES / "train_flags.json").read_text()) if f.startswith("--")]


@pytest.mark.parametrize("flag", [f for f in FLAGS if f != "--help"])
def test_every_flag_from_before_the_groups_is_still_an_option(flag):
    # Given without its value(s), an option is refused for the missing value, and a
    # switch parses; an unknown flag would be refused as unrecognised.
    cfg, said = parse("quick", flag)
    assert "Unrecognized" not in said, said
    assert cfg is not None or "Missing value" in said, said


def test_flags_land_in_their_groups():
    cfg, said = parse(
        "quick", "--dataset-path", "scenes/x", "--n-iters", "5", "--batch-size", "8",
        "--seed", "3", "--eval-every", "7", "--viewer-port", "9", "--model.mlp-width", "4",
        "--render.ndc", "--distributed.process-id", "0", "--no-fill-budget", "--viewer",
    )  # fmt: skip
    assert cfg is not None, said
    assert (cfg.data.dataset_path, cfg.schedule.n_iters, cfg.optimiser.batch_size) == (
        Path("scenes/x"), 5, 8)  # fmt: skip
    assert (cfg.run.seed, cfg.run.fill_budget, cfg.eval.eval_every) == (3, False, 7)
    assert (cfg.live.viewer, cfg.live.viewer_port, cfg.model.mlp_width) == (True, 9, 4)
    quick = PRESETS["quick"][1]
    assert cfg == override(
        quick, dataset_path=Path("scenes/x"), n_iters=5, batch_size=8, seed=3, eval_every=7,
        viewer_port=9, fill_budget=False, viewer=True,
        model=dataclasses.replace(quick.model, mlp_width=4),
        render=dataclasses.replace(quick.render, ndc=True),
    )  # fmt: skip


def test_options_added_since_land_in_their_groups():
    cfg, said = parse("unbounded-quick", "--target-long-side", "0", "--distortion-weight",
                      "0.01")  # fmt: skip
    assert cfg is not None, said
    assert (cfg.data.target_long_side, cfg.optimiser.distortion_weight) == (0, 0.01)
    assert all(c.optimiser.distortion_weight == 0.0 for _, c in PRESETS.values())
    _, help_text = parse("unbounded-quick", "--help")
    assert "--target-long-side" in help_text and "--distortion-weight" in help_text


def _placeholders(text: str) -> str:
    """Paths that depend on this machine, as the fixture spells them."""
    for path, mark in ((DEMO_SCENE, "{demo}"), (data_dir(), "{data}"),
                       (default_compile_cache(), "{cache}")):  # fmt: skip
        text = text.replace(str(path), mark)
    return text


def known(now: dict, expected: dict) -> dict:
    """`now` with only the keys of `expected`, in nested groups too (--model.*, --render.*):
    the options added since a fixture was captured are not in it."""
    return {k: known(now[k], v) if isinstance(v, dict) else now[k] for k, v in expected.items()}


def test_presets_hold_the_values_they_held_before_the_groups():
    """tests/fixtures/presets.json: each preset's options by their flat names, captured
    before the config was grouped (options added since are not in it). A preset that
    changes on purpose updates it."""
    expected = json.loads((FIXTURES / "presets.json").read_text())
    now = json.loads(_placeholders(json.dumps({n: flat_dict(c) for n, (_, c) in PRESETS.items()})))
    assert sorted(now) == sorted(expected)
    for name in expected:
        assert known(now[name], expected[name]) == expected[name], name


def test_a_flat_config_json_from_before_the_groups_loads(tmp_path):
    """tests/fixtures/flat_config.json is what the trainer wrote before the groups (an
    llff-quick run with options changed in every group)."""
    shutil.copy(FIXTURES / "flat_config.json", tmp_path / checkpoint.CONFIG_FILE)
    cfg = checkpoint.load_config(tmp_path)
    assert (cfg.data.dataset_path, cfg.data.downscale, cfg.data.drop_missing_images) == (
        Path("scenes/fern"), 8, True)  # fmt: skip
    assert (cfg.schedule.n_iters, cfg.schedule.mask_steps) == (5000, (1000, 2500))
    assert (cfg.optimiser.lr_grid, cfg.optimiser.adam_on_upsample) == (0.01, "resample")
    assert (cfg.run.run_dir, cfg.run.seed, cfg.run.precision) == (Path("runs/old"), 3, "f32")
    assert (cfg.run.max_minutes, cfg.run.steps_per_call) == (15.0, 8)
    assert cfg.run.compile_cache == Path("cache/jax")
    assert (cfg.eval.eval_lpips, cfg.eval.eval_max_views) == ("off", 2)
    assert (cfg.live.viewer, cfg.live.viewer_port) == (False, 9000)
    assert cfg.model.density_components == (16, 4, 4) and cfg.render.ndc
    saved = json.loads((FIXTURES / "flat_config.json").read_text())
    assert known(flat_dict(cfg), saved) == saved
    # Saved again, it is grouped, and reads back the same.
    checkpoint.save_config(tmp_path, cfg)
    saved = json.loads((tmp_path / checkpoint.CONFIG_FILE).read_text())
    assert saved["schedule"]["n_iters"] == 5000 and "n_iters" not in saved
    assert checkpoint.load_config(tmp_path) == cfg


def test_a_flat_config_json_missing_newer_options_takes_their_defaults(tmp_path):
    values = json.loads((FIXTURES / "flat_config.json").read_text())
    for name in ("ortho_weight", "steps_per_call", "eval_lpips", "viewer_port"):
        values.pop(name)
    (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(values))
    cfg = checkpoint.load_config(tmp_path)
    assert (cfg.optimiser.ortho_weight, cfg.run.steps_per_call) == (0.0, 0)
    assert (cfg.eval.eval_lpips, cfg.live.viewer_port) == ("alex", 8080)
    assert cfg.run.seed == 3


# What could differ between a run and its --resume before the groups (the hand-kept RESUMABLE).
RESUMABLE_BEFORE = {
    "resume", "max_minutes", "run_dir", "dataset_path", "eval_max_views", "log_every",
    "max_bad_steps", "distributed", "lr_grid", "lr_network", "eval_every", "eval_every_views",
    "eval_lpips", "viewer", "viewer_host", "viewer_port", "compile_cache", "steps_per_call",
    "compile_ahead",  # added with compile ahead: it changes when, not what, is compiled
    "lr_poses",  # added with --refine-poses: a learning rate, as lr_grid and lr_network
}  # fmt: skip


def test_resumable_options_are_those_of_before():
    assert resumable_options() == RESUMABLE_BEFORE
    assert set(flat_dict(TrainConfig())) == set(OPTION_GROUPS) | {"model", "render",
                                                                  "distributed"}  # fmt: skip


@pytest.mark.parametrize("saved_as", ["grouped", "flat"])
def test_resume_refuses_only_what_may_not_change(tmp_path, saved_as):
    run = tmp_path / "run"
    cfg = override(PRESETS["llff-quick"][1], run_dir=run, resume=True)
    checkpoint.save_config(run, override(cfg, resume=False))
    if saved_as == "flat":  # as a run from before the groups saved it
        values = flat_dict(checkpoint.load_config(run))
        (run / checkpoint.CONFIG_FILE).write_text(json.dumps(values))
        assert "n_iters" in json.loads((run / checkpoint.CONFIG_FILE).read_text())
    rundir.check_run_dir(cfg)
    free = override(cfg, lr_grid=0.5, max_minutes=3.0, eval_every=11, viewer=True,
                    steps_per_call=4, dataset_path=tmp_path / "moved",
                    compile_cache=None)  # fmt: skip
    rundir.check_run_dir(free)
    fixed = override(cfg, n_iters=7, seed=9, eval_split="train", checkpoint_every=3)
    with pytest.raises(ConfigError, match="differ from the saved run: checkpoint_every, "
                                          "eval_split, n_iters, seed;"):  # fmt: skip
        rundir.check_run_dir(fixed)
    model = override(cfg, model=dataclasses.replace(cfg.model, mlp_width=8))
    with pytest.raises(ConfigError, match="differ from the saved run: model;"):
        rundir.check_run_dir(model)


def test_override_routes_flat_names_to_their_groups():
    base = PRESETS["quick"][1]
    cfg = override(base, n_iters=9, seed=4, viewer_host="0.0.0.0", run=base.run)
    assert (cfg.schedule.n_iters, cfg.run.seed, cfg.live.viewer_host) == (9, 4, "0.0.0.0")
    # An option applies on top of its group given whole, whatever the order.
    assert override(base, run=base.run, seed=4) == override(base, seed=4, run=base.run)
    assert cfg.schedule.grid_final == base.schedule.grid_final and cfg.model == base.model
    assert to_dict(override(cfg, n_iters=base.schedule.n_iters, seed=0,
                            viewer_host="127.0.0.1")) == to_dict(base)  # fmt: skip
    with pytest.raises(TypeError):
        override(base, no_such_option=1)
