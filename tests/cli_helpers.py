"""Running the entry points as a user would, and checking their one-line errors."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What `python SCRIPT` or `python -m MODULE` runs: the `main` of these modules.
ENTRY_POINTS = {
    "train.py": "tensorf.experiment", "train_lego.py": "tensorf.experiment",
    "render_360.py": "tensorf.orbit", "tensorf.evaluate": "tensorf.evaluate",
    "tensorf.export_mesh": "tensorf.export_mesh", "tensorf.viewer": "tensorf.viewer.__main__",
}  # fmt: skip


def run_cli(
    *args: str, timeout: float = 600, own_process: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """`python *args` from the repository root.

    The package's entry points run in this process, with sys.argv, the working directory
    and stdout / stderr as a process would have them: each call spares a JAX start-up (a
    few seconds). Other scripts, calls that set environment variables, and `own_process`
    (for what only a process's exit shows) run in a process of their own."""
    name = args[1] if args[:1] == ("-m",) else args[0]
    if name in ENTRY_POINTS and not env and not own_process:
        main = importlib.import_module(ENTRY_POINTS[name]).main
        return run_in_process(main, list(args[1:] if args[0] == "-m" else args))
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def run_in_process(main, argv: list[str]) -> subprocess.CompletedProcess:
    """`main()` with sys.argv = argv, from the repository root; its exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd, code = sys.argv, Path.cwd(), 0
    sys.argv = argv
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        if isinstance(stop.code, str):  # sys.exit("message"), as Python reports it
            err.write(stop.code + "\n")
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, one `error:` line that contains every fragment."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
