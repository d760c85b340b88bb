"""Reliability, round 3 (issue 32), the viewer: an address it cannot listen on is one line
within seconds, never a hang, and a trainer never holds its run's lock while it waits."""

from __future__ import annotations

import fcntl
import shutil
import socket
import time
from collections.abc import Iterator

import pytest
from test_hostile_outputs import one_line_exit

from tensorf import experiment
from tensorf.config import override
from tensorf.loop import rundir
from tensorf.viewer import server
from tensorf.viewer.__main__ import ViewerArgs, serve


def unbindable() -> Iterator[tuple[str, int, str]]:
    """(host, port, what the error says): addresses a server cannot listen on."""
    yield "203.0.113.7", 8080, "cannot listen there"  # TEST-NET-3: no machine's address
    yield "no-such-host.invalid", 8080, "cannot be resolved"  # .invalid never resolves
    yield "127.0.0.1", 65535, "are all taken"  # the top port, taken below


@pytest.fixture
def top_port_taken() -> Iterator[None]:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 65535))
        taken.listen()
        yield


def test_an_address_the_viewer_cannot_listen_on_is_one_line(sphere_run, top_port_taken,
                                                             capsys):  # fmt: skip
    cfg, _ = sphere_run
    for host, port, says in unbindable():
        start = time.monotonic()
        args = ViewerArgs(cfg.run.run_dir, host, port)
        message = one_line_exit(lambda args=args: serve(args), capsys)
        assert says in message and f"--{'port' if port == 65535 else 'host'}" in message
        assert time.monotonic() - start < 2 * server.BIND_SECONDS, (host, port)


def test_a_server_that_never_starts_is_one_line(sphere_run, monkeypatch, capsys):
    cfg, _ = sphere_run
    monkeypatch.setattr(server, "BIND_SECONDS", 0.5)
    monkeypatch.setattr(server.viser, "ViserServer", lambda **_: time.sleep(5))
    message = one_line_exit(lambda: serve(ViewerArgs(cfg.run.run_dir, port=0)), capsys)
    assert "did not finish within 0.5 s" in message


def test_the_trainer_does_not_hold_the_lock_while_binding(sphere_run, tmp_path, monkeypatch,
                                                          capsys):  # fmt: skip
    cfg, _ = sphere_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run.run_dir, run)
    real = server.free_port
    free_while_binding = []

    def free_port(*args):
        with open(run / rundir.LOCK_FILE, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free_while_binding.append(True)
            except BlockingIOError:
                free_while_binding.append(False)
        return real(*args)

    monkeypatch.setattr(server, "free_port", free_port)
    resumed = override(cfg, run_dir=run, resume=True, viewer=True,
                       viewer_host="203.0.113.7")  # fmt: skip
    message = one_line_exit(lambda: experiment.train(resumed), capsys)
    assert "--viewer-host 203.0.113.7: cannot listen there" in message
    assert free_while_binding == [True]
