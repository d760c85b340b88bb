"""The trainer's clock, and its compilations: counted and timed from JAX's monitoring
events, and cached in a persistent folder."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import jax

# The trainer's clock (a test swaps it for a fake one).
clock = time.perf_counter
# The train step's compilations in this process and their seconds (tracing, lowering, XLA,
# or loading from the persistent cache), and the programs of any kind the persistent cache
# held, from JAX's monitoring events; of the seconds, those of the compile-ahead thread
# (`tensorf.loop.ahead`), and the seconds the loop waited for it; and the seconds of every
# other program's compilations (evaluation renders, LPIPS: the budget plan leaves them out
# of what evaluations during training will go on costing).
COMPILES = {"count": 0, "seconds": 0.0, "cache_hits": 0, "ahead": 0.0, "waited": 0.0,
            "other": 0.0}  # fmt: skip
AHEAD_THREAD = "tensorf-ahead"
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")  # fmt: skip


def _count_compiles(event: str, seconds: float, **kwargs) -> None:
    if event not in _COMPILE_EVENTS:
        return
    ahead = threading.current_thread().name == AHEAD_THREAD
    if "train_step" in str(kwargs.get("fun_name", "")):
        COMPILES["seconds"] += seconds
        COMPILES["count"] += event == _COMPILE_EVENTS[-1]
        COMPILES["ahead"] += seconds if ahead else 0.0
    elif not ahead:
        COMPILES["other"] += seconds


def _count_cache_hits(event: str, **kwargs) -> None:
    COMPILES["cache_hits"] += event == "/jax/compilation_cache/cache_hits"


jax.monitoring.register_event_duration_secs_listener(_count_compiles)
jax.monitoring.register_event_listener(_count_cache_hits)


def compiling() -> float:
    """Seconds the loop has stalled on train-step compilations so far: compiling in its
    own thread, or waiting for the compile-ahead thread (tests fake it with `clock`)."""
    return COMPILES["seconds"] - COMPILES["ahead"] + COMPILES["waited"]


def compile_seconds_since(before: dict) -> float:
    """Seconds the loop stalled on train-step compilations since `before` (a copy of
    COMPILES)."""
    return compiling() - (before["seconds"] - before["ahead"] + before["waited"])


def compiles_since(before: dict) -> dict:
    """The train step's compilations, their seconds and the cache's hits since `before` (a
    copy of COMPILES), as metrics.json reports them: also the seconds the loop stalled on
    them, those hidden on the compile-ahead thread, and of the stalled, those it waited
    for that thread (predicting a stage, or compiling it)."""
    ahead, waited = (COMPILES[k] - before[k] for k in ("ahead", "waited"))
    return {"train_step_compiles": COMPILES["count"] - before["count"],
            "train_step_compile_seconds": COMPILES["seconds"] - before["seconds"],
            "compile_cache_hits": COMPILES["cache_hits"] - before["cache_hits"],
            "compile_seconds_stalled": compile_seconds_since(before),
            # The compile-ahead thread's seconds the loop did not wait for.
            "compile_seconds_hidden": max(ahead - waited, 0.0),
            "compile_seconds_waited": waited}  # fmt: skip


def use_compile_cache(folder: Path | None) -> None:
    """Compiled programs go to (and come from) `folder`, unless JAX_COMPILATION_CACHE_DIR
    chose another. JAX caches only the programs that took over a second to compile (its
    default): the train step, the renderer, the alpha mask; on a CPU too."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # The cache only saves time: a folder it cannot have (a read-only home) is no
            # reason to refuse to train, and JAX would warn at every compilation.
            print(f"warning: --compile-cache {folder}: {error.strerror or error}; compiling "
                  "without the persistent cache", file=sys.stderr)  # fmt: skip
            folder = None
    jax.config.update("jax_compilation_cache_dir", None if folder is None else str(folder))
