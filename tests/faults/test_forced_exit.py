"""A stop ends the process within server.shutdown_timeout_s even when something in it
never ends (issue 14): a handler that blocks the event loop, one that waits on a thread
that never returns, one that swallows every cancellation. A second SIGTERM ends it at
once. Real ``civitas serve`` processes, with one hostile route added by
tests/faults/stuck_serve.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_cli import (
    Server,
    cli_env,
    home,  # noqa: F401  (fixture)
    initialised,  # noqa: F401  (fixture)
)

LIMIT_S = 3
LAUNCHER = Path(__file__).with_name("stuck_serve.py")
ROOT = Path(__file__).parents[2]


def _serve_stuck(path: Path, log: Path, mode: str) -> Server:
    env = cli_env(CIVITAS_SERVER_SHUTDOWN_TIMEOUT_S=str(LIMIT_S), PYTHONPATH=str(ROOT))
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(LAUNCHER),
                mode,
                "--home",
                str(path),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    server = Server(path, proc, log)
    server.wait_ready()
    return server


def _get_stuck(server: Server) -> None:
    """Start ``GET /stuck`` in a thread that never gets its answer; return once the
    handler runs."""

    def call() -> None:
        request = urllib.request.Request(f"{server.url}/stuck")  # noqa: S310 (127.0.0.1)
        try:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30)
        except OSError:
            pass  # the connection is dropped when the process ends

    threading.Thread(target=call, daemon=True).start()
    assert server.proc.stdout is not None
    for line in server.proc.stdout:
        if b"stuck" in line:
            return
    pytest.fail(f"the stuck handler never ran:\n{server.stderr()}")


@pytest.mark.parametrize("mode", ["loop", "thread", "ignores-cancel"])
def test_a_stuck_handler_cannot_hold_a_stop_past_its_limit(
    mode: str,
    home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = _serve_stuck(home, tmp_path / "serve.err", mode)
    try:
        _get_stuck(server)
        time.sleep(0.2)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=LIMIT_S + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM with a {mode} handler stuck: still running after 10 s")
        took = time.monotonic() - started
    finally:
        server.kill()
    assert took <= LIMIT_S + 2, f"stopping took {took:.1f} s"
    # A thread is not waited for: the stop ends on time without it. The others overrun.
    said = "stopped" if mode == "thread" else "did not stop within server.shutdown_timeout_s"
    assert said in server.stderr(), server.stderr()
    assert not server.runtime_file.exists(), "node.json still names the stopped process"


def test_a_second_sigterm_ends_a_slow_stop_at_once(
    home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = _serve_stuck(home, tmp_path / "serve.err", "thread")
    try:
        _get_stuck(server)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=LIMIT_S + 10)
        took = time.monotonic() - started
    finally:
        server.kill()
    assert took < 1.0, f"the second SIGTERM took {took:.1f} s"
    assert "second signal" in server.stderr(), server.stderr()
