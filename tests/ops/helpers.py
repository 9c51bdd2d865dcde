"""A ``civitas serve`` process for the operator tests, and a proxy-free HTTP GET."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_DEADLINE_S = 20.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_env(**extra: str) -> dict[str, str]:
    """No CIVITAS_* or PYTHON* from outside; BitTorrent on loopback without the DHT."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CIVITAS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        CIVITAS_TORRENT_LISTEN_HOST="127.0.0.1",
        CIVITAS_TORRENT_LISTEN_PORT="0",
        CIVITAS_TORRENT_DHT="false",
        CIVITAS_TORRENT_ALLOW_LAN="true",
    )
    env.update(extra)
    return env


def http(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a request to 127.0.0.1."""
    assert url.startswith("http://127.0.0.1:"), url
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with _HTTP.open(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, civitas: Path, home: Path, *, env: dict[str, str], cwd: Path
    ) -> Iterator[NodeProcess]:
        """``civitas serve`` on 127.0.0.1, any free port, until the block ends."""
        log = home.parent / f"serve-{home.name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [str(civitas), "--home", str(home), "serve", "--host=127.0.0.1", "--port=0"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=cwd,
            )
        served = cls(proc, log)
        try:
            served.url = served._wait(home / "node.json")
            yield served
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _wait(self, runtime: Path) -> str:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"civitas serve exited: {self.log.read_text()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(runtime.read_text(encoding="utf-8"))
                if info.get("pid") == self.proc.pid and info.get("url"):
                    return str(info["url"])
            time.sleep(0.05)
        raise AssertionError(f"civitas serve did not start: {self.log.read_text()}")
