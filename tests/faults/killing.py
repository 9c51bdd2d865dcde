"""kill -9 at many points of publish, upload, fetch and sync, against real processes.

Each operation runs against ``civitas serve`` subprocesses with their own homes on free
ports. A kill point is one moment (a delay after the operation began, swept over a
range, so the kills land across the whole operation rather than at one lucky moment):
the node is killed with SIGKILL, its database is checked (``PRAGMA integrity_check``),
it is started again (it must start), and its store is checked (no temp file left, every
stored file is what its name says and has its row, none of a row's files missing). At
the end every write the node acknowledged (a 201, a completed download, a synced
record) must be there. Used by tests/faults/test_kill_points.py (a few points per
operation) and bench/faults.py (many).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

CIVITAS = Path(sys.executable).parent / "civitas"
START_S = 30.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FaultFound(AssertionError):
    """An invariant broke after a kill."""


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CIVITAS_")}
    out.update(
        CIVITAS_TORRENT_LISTEN_HOST="127.0.0.1",
        CIVITAS_TORRENT_LISTEN_PORT="0",
        CIVITAS_TORRENT_DHT="false",
        CIVITAS_TORRENT_ALLOW_LAN="true",
        CIVITAS_FEDERATION_AUTO_CONNECT_PRIVATE="true",
    )
    out.update(extra)
    return out


def cli(
    home: Path, *args: str, stdin: str | None = None, environ: dict[str, str] | None = None
) -> str:
    done = subprocess.run(
        [str(CIVITAS), "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ or env(),
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise FaultFound(f"civitas {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass
class Node:
    home: Path
    environ: dict[str, str] = field(default_factory=env)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    starts: int = 0

    @property
    def token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def start(self) -> None:
        log = open(self.home.parent / f"{self.home.name}.{self.starts}.err", "wb")
        self.starts += 1
        self.proc = subprocess.Popen(
            [str(CIVITAS), "--home", str(self.home), "serve", "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.environ,
        )
        log.close()
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FaultFound(f"the node did not start after a kill: {self.last_log()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((self.home / "node.json").read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    return
            time.sleep(0.02)
        raise FaultFound(f"the node wrote no node.json in {START_S} s: {self.last_log()}")

    def last_log(self) -> str:
        return (self.home.parent / f"{self.home.name}.{self.starts - 1}.err").read_text()[-3000:]

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def stop(self) -> float:
        """SIGTERM; how long the node took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.proc = None
        return time.monotonic() - started

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 60,
    ) -> tuple[int, Any]:
        raw = (
            data if data is not None else (json.dumps(body).encode() if body is not None else None)
        )
        req = urllib.request.Request(  # noqa: S310 (http to 127.0.0.1)
            self.url + path,
            data=raw,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": content_type,
            },
        )
        try:
            with _HTTP.open(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def init(home: Path, environ: dict[str, str] | None = None) -> Node:
    cli(home, "init", "--host", "127.0.0.1", "--port", "0", environ=environ)
    cli(
        home,
        "user",
        "add",
        "alice",
        "--password-stdin",
        stdin="correct horse battery\n",
        environ=environ,
    )
    return Node(home, environ or env())


def model_file(path: Path, megabytes: int, seed: int) -> Path:
    """A `megabytes` MB safetensors checkpoint whose bytes differ by seed."""
    data = np.zeros(megabytes * 1024 * 1024 // 2, dtype=np.float16)
    data[seed % len(data)] = seed + 1
    data[-1] = seed
    save_file({"model.diffusion_model.w": data}, str(path), metadata={"seed": str(seed)})
    return path


# --- invariants --------------------------------------------------------------------------


def integrity(home: Path) -> None:
    with contextlib.closing(sqlite3.connect(home / "civitas.db")) as conn:
        found = conn.execute("PRAGMA integrity_check").fetchall()
    if found != [("ok",)]:
        raise FaultFound(f"integrity_check after a kill: {found[:5]}")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 << 20):
            digest.update(block)
    return digest.hexdigest().upper()


def store_sound(home: Path) -> int:
    """Checked on a started node: no temp files, stored files whole and all claimed.
    Returns the number of stored files."""
    files = home / "files"
    left = list((files / "tmp").glob("*")) if (files / "tmp").exists() else []
    if left:
        raise FaultFound(f"temp files left after a start: {left}")
    with contextlib.closing(
        sqlite3.connect(f"file:{home / 'civitas.db'}?mode=ro", uri=True)
    ) as conn:
        rows = conn.execute("SELECT sha256, size, path, in_place FROM blobs").fetchall()
    claimed = set()
    for sha, size, path, in_place in rows:
        p = Path(path)
        if in_place:
            continue
        claimed.add(sha)
        if not p.is_file() or p.stat().st_size != size or _sha(p) != sha:
            raise FaultFound(f"stored file {p} is missing or not what its row says")
    for stored in files.glob("[0-9A-F][0-9A-F]/[0-9A-F][0-9A-F]/*"):
        if stored.name not in claimed:
            raise FaultFound(f"stored file without a row after a start: {stored}")
    return len(rows)


def shas_published(home: Path) -> set[str]:
    with contextlib.closing(
        sqlite3.connect(f"file:{home / 'civitas.db'}?mode=ro", uri=True)
    ) as conn:
        return {r[0] for r in conn.execute("SELECT sha256 FROM version_files")}


def record_count(home: Path) -> int:
    with contextlib.closing(
        sqlite3.connect(f"file:{home / 'civitas.db'}?mode=ro", uri=True)
    ) as conn:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])


@contextlib.contextmanager
def in_thread(work: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run ``work`` in a thread (its result or error in the yielded dict), joined after."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except Exception as exc:  # the node was killed under it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        thread.join(timeout=70)


def kill_after(node: Node, delay_s: float, work: Callable[[], Any]) -> dict[str, Any]:
    """Start ``work`` against ``node``, kill -9 the node ``delay_s`` later, check the
    database, start it again and check its store."""
    with in_thread(work) as out:
        time.sleep(delay_s)
        node.kill9()
    integrity(node.home)
    node.start()
    store_sound(node.home)
    return out


def delays(count: int, longest_s: float) -> list[float]:
    """``count`` kill moments spread evenly over (0, longest_s]."""
    return [longest_s * (i + 1) / count for i in range(count)]


# --- operations ----------------------------------------------------------------------------


def kill_publish(base: Path, points: int, megabytes: int = 24) -> int:
    """Publish by path (a copy into the store), killed at ``points`` moments."""
    node = init(base / "pub")
    node.start()
    sources = base / "sources"
    sources.mkdir()
    acknowledged: set[str] = set()
    longest = 0.05 + megabytes * 0.02
    for i, delay in enumerate(delays(points, longest)):
        path = model_file(sources / f"m{i}.safetensors", megabytes, i)
        body = {"path": str(path), "user": "alice", "name": f"M{i}", "base_model": "SD 1.5"}
        out = kill_after(
            node, delay, lambda b=body: node.request("POST", "/api/models/publish-path", b)
        )
        status, answer = out.get("result", (None, None))
        if status == 201:
            acknowledged.add(answer["sha256"])
    missing = acknowledged - shas_published(node.home)
    node.stop()
    if missing:
        raise FaultFound(f"acknowledged publishes lost: {missing}")
    return points


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = "civitaskill"
    meta = json.dumps({"name": path.stem, "base_model": "SD 1.5", "type": "Checkpoint"})
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
            f"Content-Type: application/json\r\n\r\n{meta}\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def kill_upload(base: Path, points: int, megabytes: int = 24) -> int:
    """Upload over HTTP (streamed into the store), killed at ``points`` moments."""
    node = init(base / "up")
    token = cli(node.home, "token", "create", "alice").strip()
    node.start()
    sources = base / "uploads"
    sources.mkdir()
    acknowledged: set[str] = set()
    longest = 0.05 + megabytes * 0.03
    for i, delay in enumerate(delays(points, longest)):
        body, ctype = _multipart(model_file(sources / f"u{i}.safetensors", megabytes, 1000 + i))
        out = kill_after(
            node,
            delay,
            lambda b=body, c=ctype: node.request(
                "POST", "/api/models", token=token, data=b, content_type=c
            ),
        )
        status, answer = out.get("result", (None, None))
        if status == 201:
            acknowledged.add(answer["sha256"])
    missing = acknowledged - shas_published(node.home)
    node.stop()
    if missing:
        raise FaultFound(f"acknowledged uploads lost: {missing}")
    return points


def _peered(base: Path, seeder_env: dict[str, str]) -> tuple[Node, Node]:
    a = init(base / "a", seeder_env)
    b = init(base / "b")
    a.start()
    b.start()
    status, _ = b.request("POST", "/api/admin/peers", {"url": a.url})
    if status >= 300:
        raise FaultFound(f"peer add answered {status}")
    return a, b


def kill_fetch(base: Path, points: int, files: int = 3, megabytes: int = 8) -> int:
    """Fetch files over BitTorrent from a rate-limited seeder, the fetching node killed at
    ``points`` moments; the downloads resume and every file arrives whole."""
    a, b = _peered(base, env(CIVITAS_TORRENT_UPLOAD_RATE_LIMIT=str(6 * 1024 * 1024)))
    shas = []
    for i in range(files):
        path = model_file(base / f"f{i}.safetensors", megabytes, 2000 + i)
        status, answer = a.request(
            "POST",
            "/api/models/publish-path",
            {"path": str(path), "user": "alice", "name": f"F{i}", "base_model": "SD 1.5"},
        )
        if status != 201:
            raise FaultFound(f"publish on the seeder answered {status}: {answer}")
        shas.append(answer["sha256"])
    b.request("POST", "/api/admin/sync")
    for sha in shas:
        status, answer = b.request("POST", "/api/downloads", {"target": sha, "from": [a.url]})
        if status >= 300:
            raise FaultFound(f"fetch answered {status}: {answer}")
    total_s = files * megabytes / 6
    for delay in delays(points, total_s / 2):
        kill_after(b, delay, lambda: None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, listing = b.request("GET", "/api/downloads")
        states = {d["sha256"]: d["state"] for d in listing["downloads"]}
        if all(states.get(s) == "complete" for s in shas):
            break
        time.sleep(0.2)
    else:
        raise FaultFound(f"downloads did not all complete after the kills: {states}")
    store_sound(b.home)
    b.stop()
    a.stop()
    return points


def kill_sync(base: Path, points: int, models: int = 30) -> int:
    """Pull a peer's records, the pulling node killed at ``points`` moments; afterwards it
    has every record (nothing skipped by a cursor that moved past an uncommitted page)."""
    a, b = _peered(base, env())
    for i in range(models):
        path = model_file(base / f"s{i}.safetensors", 1, 3000 + i)
        a.request(
            "POST",
            "/api/models/publish-path",
            {"path": str(path), "user": "alice", "name": f"S{i}", "base_model": "SD 1.5"},
        )
    wanted = record_count(a.home)
    for delay in delays(points, 0.6):
        kill_after(b, delay, lambda: b.request("POST", "/api/admin/sync", timeout=30))
    b.request("POST", "/api/admin/sync", timeout=60)
    got = record_count(b.home)
    b.stop()
    a.stop()
    if got < wanted:
        raise FaultFound(f"after the kills and a sync B has {got} of A's {wanted} records")
    return points


def shutdown_under_load(base: Path, megabytes: int = 64) -> float:
    """SIGTERM while an upload streams in and a download is read slowly: seconds to exit."""
    node = init(base / "load")
    token = cli(node.home, "token", "create", "alice").strip()
    node.start()
    body, ctype = _multipart(model_file(base / "load.safetensors", megabytes, 4000))
    with in_thread(
        lambda: node.request("POST", "/api/models", token=token, data=body, content_type=ctype)
    ):
        time.sleep(0.3)
        took = node.stop()
    shutil.rmtree(base / "load", ignore_errors=True)
    return took
