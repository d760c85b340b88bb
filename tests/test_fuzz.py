"""Fuzzing every entry point in-process: random values for its options, and random
corruptions of a run directory's files, either work or end in exit status 2 with one
`error:` line (or tyro's own usage message for values that do not parse), never a
traceback.

"Work" is cut short: once an entry point has validated everything and is about to do
the real work (train, render, extract), a stub raises `Accepted`, so each example costs a
fraction of a second.
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiers import examples

from tensorf import cli, evaluate, experiment, export_mesh, orbit
from tensorf.config import override
from tensorf.eval import evaluation
from tensorf.loop import training_loop
from tensorf.render import frames
from tensorf.viewer import __main__ as viewer_main
from tensorf.viewer import server

EXAMPLES = examples(60)


class Accepted(Exception):
    """Everything validated: the entry point would start its real work now."""


def accept(*args, **kwargs):
    raise Accepted


def run_in_process(main, argv: list[str]) -> tuple[int | str, str]:
    """Run a `main()` with argv; returns (exit code or 'accepted', stderr)."""
    err = io.StringIO()
    old_argv = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        return 0, err.getvalue()
    except Accepted:
        return "accepted", err.getvalue()
    except SystemExit as stop:
        return stop.code, err.getvalue()
    finally:
        sys.argv = old_argv


def assert_clean(outcome: int | str, stderr: str, argv: list[str]) -> None:
    assert "Traceback" not in stderr, (argv, stderr[-3000:])
    assert outcome in ("accepted", 0, 2), (argv, outcome, stderr[-3000:])
    if outcome == 2:
        ours = [line for line in stderr.splitlines() if line.startswith("error:")]
        # Our errors are exactly one line; tyro's parse errors are its usage message, which
        # points at --help.
        assert len(ours) == 1 or (not ours and "--help" in stderr), (argv, stderr[-3000:])


# Values a hostile user might type for a number.
NUMBERS = st.one_of(
    st.integers(-3, 3), st.integers(-(10**12), 10**12), st.sampled_from([2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "inf", "-inf"]),
    st.sampled_from(["abc", "", "1e400", "0x10"]),
)  # fmt: skip
TRAIN_OPTIONS = [
    "--batch-size", "--n-iters", "--grid-init", "--grid-final", "--lr-grid", "--lr-network",
    "--lr-decay-ratio", "--mask-threshold", "--mask-max-resolution", "--l1-initial",
    "--l1-rest", "--tv-density", "--tv-appearance", "--ortho-weight", "--seed",
    "--max-minutes", "--checkpoint-every", "--keep-checkpoints", "--log-every",
    "--max-bad-steps", "--eval-max-views", "--downscale", "--model.appearance-dim",
    "--model.mlp-width", "--model.feature-pe", "--model.view-pe", "--model.density-shift",
    "--model.distance-scale", "--model.init-scale", "--render.step-ratio",
    "--render.max-samples", "--render.appearance-samples", "--render.near", "--render.far",
    "--render.outer-samples", "--render.chunk", "--render.image-threshold",
    "--distributed.num-processes", "--distributed.process-id", "--eval-every",
    "--eval-every-views", "--viewer-port",
]  # fmt: skip
TUPLE_OPTIONS = ["--aabb", "--upsample-steps", "--mask-steps", "--model.density-components",
                 "--model.appearance-components", "--model.cp-components"]  # fmt: skip
CHOICES = {
    "--precision": ["f32", "bf16", "f16", "f64"], "--model.decomposition": ["vm", "cp", "tt"],
    "--render.background": ["white", "black", "random", "grey"],
    "--eval-split": ["test", "train", "val", "nope"], "--adam-on-upsample": ["reset", "x"],
    "--viewer-host": ["127.0.0.1", "", "0.0.0.0", "a b"],
}  # fmt: skip
FLAGS = ["--render.ndc", "--render.contract", "--resume", "--drop-missing-images", "--viewer"]


@st.composite
def train_argv(draw) -> list[str]:
    args = []
    for option in draw(st.lists(st.sampled_from(TRAIN_OPTIONS), max_size=4, unique=True)):
        args += [option, str(draw(NUMBERS))]
    for option in draw(st.lists(st.sampled_from(TUPLE_OPTIONS), max_size=2, unique=True)):
        args += [option, *map(str, draw(st.lists(NUMBERS, max_size=7)))]
    for option in draw(st.lists(st.sampled_from(sorted(CHOICES)), max_size=2, unique=True)):
        args += [option, draw(st.sampled_from(CHOICES[option]))]
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return args


@pytest.fixture
def fast_train(monkeypatch):
    monkeypatch.setattr(training_loop, "run", accept)


@given(args=train_argv(), preset=st.sampled_from(["quick", "demo", "unbounded-quick", "llff"]))
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_train_options(fast_train, sphere_scene, preset, args):
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train.py", preset, "--dataset-path", str(sphere_scene), "--run-dir",
                f"{tmp}/run", *args]  # fmt: skip
        assert_clean(*run_in_process(experiment.main, argv), argv)


ORBIT_OPTIONS = ["--frames", "--fps", "--elevation", "--radius", "--width", "--height",
                 "--chunk"]  # fmt: skip
EVALUATE_OPTIONS = ["--max-views", "--downscale", "--fps"]
EXPORT_OPTIONS = ["--resolution", "--level", "--chunk"]
VIEWER_OPTIONS = ["--port", "--resolution", "--reload-seconds"]


@st.composite
def tool_argv(draw, options: list[str]) -> list[str]:
    args = []
    for option in draw(st.lists(st.sampled_from(options), max_size=3, unique=True)):
        args += [option, str(draw(NUMBERS))]
    return args


TOOLS = {
    "render": (orbit.main, "render_360.py", ORBIT_OPTIONS, (frames, "render_image"), ".mp4"),
    "evaluate": (evaluate.main, "evaluate", EVALUATE_OPTIONS, (evaluation, "render_image"), None),
    "export": (export_mesh.main, "export_mesh", EXPORT_OPTIONS, (export_mesh, "_batched"),
               ".ply"),
    "viewer": (viewer_main.main, "viewer", VIEWER_OPTIONS, (server, "FieldViewer"), None),
}  # fmt: skip


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_options(tiny_run, monkeypatch, tool):
    main, name, options, (module, heavy), suffix = TOOLS[tool]
    monkeypatch.setattr(module, heavy, accept)
    cfg, _ = tiny_run

    @given(args=tool_argv(options))
    @settings(max_examples=EXAMPLES, deadline=None)
    def check(args):
        with tempfile.TemporaryDirectory() as tmp:
            out = ["--out", f"{tmp}/out{suffix}"] if suffix else []
            argv = [name, "--run-dir", str(cfg.run.run_dir), *out, *args]
            assert_clean(*run_in_process(main, argv), argv)

    check()


def corrupt(path: Path, rng: random.Random) -> None:
    """Truncate, overwrite a few bytes, or empty a file."""
    data = bytearray(path.read_bytes())
    how = rng.choice(["truncate", "flip", "empty"])
    if how == "truncate" and data:
        data = data[: rng.randrange(len(data))]
    elif how == "flip" and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tool", ["render", "evaluate", "export", "viewer", "resume"])
def test_corrupt_run_directories(tiny_run, monkeypatch, tmp_path, tool):
    cfg, _ = tiny_run
    if tool == "resume":
        monkeypatch.setattr(training_loop, "run", accept)
    else:
        monkeypatch.setattr(TOOLS[tool][3][0], TOOLS[tool][3][1], accept)
    files = sorted(p.relative_to(cfg.run.run_dir) for p in cfg.run.run_dir.rglob("*")
                   if p.is_file() and "tensorboard" not in p.parts)  # fmt: skip

    @given(seed=st.integers(0, 2**32 - 1), n_files=st.integers(1, 3))
    @settings(max_examples=EXAMPLES // 2, deadline=None)
    def check(seed, n_files):
        rng = random.Random(seed)
        run = Path(tempfile.mkdtemp(dir=tmp_path))
        shutil.rmtree(run)
        shutil.copytree(cfg.run.run_dir, run)
        for name in rng.sample(files, min(n_files, len(files))):
            corrupt(run / name, rng)
        if tool == "resume":  # the run's own options, as its --resume needs
            resumed = override(cfg, run_dir=run, resume=True)
            main, argv = lambda: cli.run_main(lambda: experiment.train(resumed)), ["resume"]
        else:
            main, name, _, _, suffix = TOOLS[tool]
            out = ["--out", str(run / f"out{suffix}")] if suffix else []
            argv = [name, "--run-dir", str(run), *out]
        assert_clean(*run_in_process(main, argv), argv)
        shutil.rmtree(run)

    check()
