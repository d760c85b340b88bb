"""python -m tensorf.viewer --run-dir R (tensorf-viewer): look at a run's latest checkpoint in
the browser, reloaded as a running trainer saves newer ones. The command line is here
itself, not in a module this one would only call."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import tyro

from tensorf import cli
from tensorf.train import checkpoint
from tensorf.viewer import server


@dataclasses.dataclass(frozen=True)
class ViewerArgs:
    """Look at a run's field in the browser: its latest checkpoint, reloaded as a running
    trainer saves newer ones."""

    run_dir: Path
    """Run directory written by train.py / train_lego.py."""
    host: str = "127.0.0.1"
    """Address to listen on. The default serves this machine only; from another machine,
    forward the port over ssh (`ssh -L 8080:localhost:8080 host`) rather than listen on
    0.0.0.0, which lets anyone who can reach this machine see the scene."""
    port: int = 8080
    """Port to listen on (the next free one of the following 99 if it is taken; 0: any free
    port)."""
    resolution: int = 512
    """Longest side, in pixels, of the sharp frame drawn once the camera stands still
    (also a slider on the page)."""
    reload_seconds: float = 5.0
    """How often to look for a newer checkpoint of a run that is still training."""


def serve(args: ViewerArgs, until=None) -> None:
    """Serve the run until Ctrl-C (or until `until()` is true)."""
    problems = cli.host_problems("--host", args.host)
    if problems:
        raise cli.ConfigError("; ".join(problems))
    cli.check_numbers(("--port", args.port, 0, 65535, int),
                      ("--resolution", args.resolution, 64, 2048, int),
                      ("--reload-seconds", args.reload_seconds, 0.1, 86400.0, float))  # fmt: skip
    cfg, state = checkpoint.load_run(args.run_dir)
    viewer = server.FieldViewer(cfg, checkpoint.load_cameras(args.run_dir), args.host, args.port,
                         args.resolution, run_dir=args.run_dir)  # fmt: skip
    viewer.show(state, int(state.step))
    print(f"viewer: open {viewer.url} (step {int(state.step)} of {args.run_dir}); Ctrl-C stops")
    mngr, step = checkpoint.manager(args.run_dir, create=False), int(state.step)
    try:
        while not (until and until()):
            time.sleep(args.reload_seconds)
            mngr.reload()
            if (mngr.latest_step() or 0) > step:
                state = checkpoint.restore_latest(mngr, cfg)[0]
                step = int(state.step)
                viewer.show(state, step)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()


def main() -> None:
    """The command line (`python -m tensorf.viewer`, `tensorf-viewer`)."""
    cli.run_main(lambda: serve(tyro.cli(ViewerArgs)))


if __name__ == "__main__":
    main()
