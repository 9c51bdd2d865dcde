"""kill -9 at many points of publish, upload, fetch, sync and a job's output upload,
against real processes.

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

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
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
from typing import Any, ParamSpec, TypeVar

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from node.catalog.schemas import attestation_message
from node.compute.auth import sign_digest
from node.compute.parameters import png_with_parameters
from node.compute.requests import expected_parameters
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey

CIVITAS = Path(sys.executable).parent / "civitas"
START_S = 30.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
P = ParamSpec("P")
T = TypeVar("T")


class FaultFound(AssertionError):
    """An invariant broke after a kill."""


_STARTED: list[Node] = []  # every node started here, so a failed check leaves none running


def leaves_no_node(run: Callable[P, T]) -> Callable[P, T]:
    """``run`` kills (-9) the nodes it started and left running, when it fails too."""

    @functools.wraps(run)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        mark = len(_STARTED)
        try:
            return run(*args, **kwargs)
        finally:
            for node in _STARTED[mark:]:
                node.kill9()
            del _STARTED[mark:]

    return wrapped


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
        if self not in _STARTED:
            _STARTED.append(self)
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
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``token`` "" sends no Authorization header (a worker's signed request)."""
        status, raw = self.request_bytes(
            method,
            path,
            data if data is not None else (json.dumps(body).encode() if body is not None else None),
            token=token,
            content_type=content_type,
            timeout=timeout,
            headers=headers,
        )
        return status, json.loads(raw or b"null")

    def request_bytes(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 60,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        sent = {"Content-Type": content_type, **(headers or {})}
        if token != "":
            sent["Authorization"] = f"Bearer {token or self.token}"
        req = urllib.request.Request(  # noqa: S310 (http to 127.0.0.1)
            self.url + path, data=data, method=method, headers=sent
        )
        try:
            with _HTTP.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


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


@leaves_no_node
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


@leaves_no_node
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


@leaves_no_node
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
        errors = {d["sha256"][:12]: d.get("error") for d in listing["downloads"] if d.get("error")}
        if all(states.get(s) == "complete" for s in shas):
            break
        time.sleep(0.2)
    else:
        raise FaultFound(f"downloads did not all complete after the kills: {states} {errors}")
    store_sound(b.home)
    b.stop()
    a.stop()
    return points


@leaves_no_node
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


# --- a compute job's output upload -------------------------------------------------------


class Worker:
    """A compute worker as a node sees one: requests signed with its own key, registered
    by ``user`` (whose own jobs it then serves)."""

    def __init__(self, node: Node, user_token: str, seed: bytes = b"k" * 32) -> None:
        self.node = node
        self.key = SigningKey.from_seed(seed)
        status, info = node.request("GET", "/.well-known/civitas", token="")
        self.node_did = info["did"]
        status, answer = self.call(
            "POST",
            "/api/compute/workers",
            {"name": "gpu-kill", "max_pixels": MAX_PIXELS},
            user_token,
        )
        if status != 201:
            raise FaultFound(f"registering the worker answered {status}: {answer}")

    def call(self, method: str, path: str, body: Any, token: str = "") -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        signed = sign_request(self.key, method, path, raw, self.node_did)
        return self.node.request(method, path, data=raw, token=token, headers=signed)

    def upload(self, job_id: int, data: bytes) -> tuple[int, Any]:
        sha = hashlib.sha256(data).hexdigest()
        path = f"/api/compute/jobs/{job_id}/outputs/{sha.upper()}"
        signed = sign_digest(self.key, "PUT", path, sha, self.node_did)
        return self.node.request(
            "PUT", path, data=data, token="", headers=signed, content_type="image/png"
        )

    def upload_killed(self, job_id: int, data: bytes, at: float) -> int | None:
        """PUT ``data`` and kill -9 the node at ``at``: up to 1, when that fraction of the
        body is sent; past 1, the whole body sent, when the answer comes or ``at - 1``
        seconds later, whichever is first. The status answered before the kill, if any."""
        sha = hashlib.sha256(data).hexdigest()
        path = f"/api/compute/jobs/{job_id}/outputs/{sha.upper()}"
        signed = sign_digest(self.key, "PUT", path, sha, self.node_did)
        host, port = self.node.url.removeprefix("http://").split(":")
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
        answer = b""
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                (
                    f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {len(data)}\r\n{head}\r\n"
                ).encode()
            )
            sock.sendall(data[: int(len(data) * min(at, 1.0))])
            if at > 1.0:
                sock.sendall(data[len(data) :])
                sock.settimeout((at - 1.0) / 10)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    answer = sock.recv(64)
            self.node.kill9()
        if answer.startswith(b"HTTP/1.1 "):
            return int(answer[9:12])
        return None

    def result(self, job_id: int, outputs: list[bytes]) -> tuple[int, Any]:
        manifest = []
        for data in outputs:
            digest = hashlib.sha256(data).digest()
            sig = self.key.sign(attestation_message(digest))
            manifest.append(
                {
                    "sha256": digest.hex().upper(),
                    "size": len(data),
                    "sig": base64.urlsafe_b64encode(sig).decode().rstrip("="),
                }
            )
        return self.call("POST", f"/api/compute/jobs/{job_id}/result", {"outputs": manifest})


def noise_png(lease: dict[str, Any], seed: int) -> bytes:
    """The image a generation ``lease`` asks for, as a worker would return it: the lease's
    size, its exact ``parameters`` text, and noise (so it does not compress: ~3 bytes a
    pixel)."""
    p = lease["params"]
    pixels = np.random.default_rng(seed).integers(0, 256, (p["height"], p["width"], 3), np.uint8)
    return png_with_parameters(Image.fromarray(pixels, "RGB"), expected_parameters(lease)[0])


def job_dir_sound(home: Path, job_id: int, acknowledged: bytes | None) -> None:
    """Each output kept for the job is whole (it hashes to its name); an acknowledged one
    is there."""
    folder = home / "compute" / "outputs" / str(job_id)
    kept = {p.name: p for p in folder.iterdir()} if folder.is_dir() else {}
    for name, path in kept.items():
        if _sha(path) != name:
            raise FaultFound(f"job {job_id} keeps a torn output after a kill: {path}")
    if acknowledged is not None:
        sha = hashlib.sha256(acknowledged).hexdigest().upper()
        if sha not in kept:
            raise FaultFound(f"job {job_id}'s acknowledged output {sha[:12]}… is gone")


MAX_PIXELS = 4 * 1024 * 1024  # the node's compute.max_pixels default: any job it takes


class JobBench:
    """A node with a published checkpoint, alice's token and her registered worker. No
    BitTorrent engine: compute does not use it, and destroying a libtorrent session can
    deadlock a stop (a libtorrent notify callback waiting for the GIL
    while the thread destroying the session holds it)."""

    def __init__(self, base: Path, lease_s: int) -> None:
        environ = env(CIVITAS_COMPUTE_LEASE_S=str(lease_s), CIVITAS_TORRENT_ENABLED="false")
        self.node = init(base / "job", environ)
        self.alice = cli(self.node.home, "token", "create", "alice", environ=environ).strip()
        self.node.start()
        checkpoint = base / "base.safetensors"
        save_file({"model.diffusion_model.w": np.ones((8, 8), dtype=np.float32)}, str(checkpoint))
        status, answer = self.node.request(
            "POST",
            "/api/models/publish-path",
            {
                "path": str(checkpoint),
                "user": "alice",
                "name": "Base",
                "type": "Checkpoint",
                "base_model": "SD 1.5",
            },
        )
        if status != 201:
            raise FaultFound(f"publishing the checkpoint answered {status}: {answer}")
        self.version_id = answer["model"]["modelVersions"][0]["id"]
        self.worker = Worker(self.node, self.alice)

    def leased(self, side: int, seed: int) -> dict[str, Any]:
        """A new generation job of alice's, popped by her worker: its lease."""
        job = {
            "kind": "generate",
            "model_version_id": self.version_id,
            "prompt": "a fox",
            "steps": 2,
            "width": side,
            "height": side,
            "seed": seed,
        }
        status, answer = self.node.request("POST", "/api/jobs", job, token=self.alice)
        if status != 201:
            raise FaultFound(f"submitting a job answered {status}: {answer}")
        status, popped = self.worker.call("POST", "/api/compute/pop", {"max_pixels": MAX_PIXELS})
        if status != 200 or (popped.get("job") or {}).get("id") != answer["id"]:
            raise FaultFound(f"the worker's pop answered {status}: {popped}")
        return dict(popped["job"])

    def leased_again(self, job_id: int) -> dict[str, Any]:
        """The worker pops ``job_id`` (queued again): its new lease."""
        status, popped = self.worker.call("POST", "/api/compute/pop", {"max_pixels": MAX_PIXELS})
        if status != 200 or (popped.get("job") or {}).get("id") != job_id:
            raise FaultFound(f"the worker's pop answered {status}: {popped}")
        return dict(popped["job"])

    def job(self, job_id: int) -> dict[str, Any]:
        status, answer = self.node.request("GET", f"/api/jobs/{job_id}", token=self.alice)
        if status != 200:
            raise FaultFound(f"GET /api/jobs/{job_id} answered {status}: {answer}")
        return dict(answer)

    def output(self, job_id: int, data: bytes) -> tuple[int, bytes]:
        sha = hashlib.sha256(data).hexdigest().upper()
        return self.node.request_bytes("GET", f"/api/jobs/{job_id}/outputs/{sha}", token=self.alice)


@leaves_no_node
def kill_job_upload(base: Path, points: int, side: int = 1024) -> int:
    """A worker uploads a job's output (``side`` x ``side`` noise PNG, ~3 side² bytes) and
    the node is killed at ``points`` moments, from the body's first bytes to just after
    the answer. After each kill, besides the node's checks: the job is still the worker's
    (its lease survives a restart), every output kept for it is whole and an acknowledged
    one is there, nothing of it is served, and the worker's upload sent again completes
    the job, whose output is then served byte for byte."""
    bench = JobBench(base, lease_s=600)
    node = bench.node
    for i in range(points):
        at = 1.3 * (i + 1) / points  # 10 of 13 moments mid-body, the rest after it
        lease = bench.leased(side, seed=5000 + i)
        data = noise_png(lease, seed=i)
        status = bench.worker.upload_killed(lease["id"], data, at)
        integrity(node.home)
        node.start()
        store_sound(node.home)
        job_dir_sound(node.home, lease["id"], data if status == 201 else None)
        state = bench.job(lease["id"])
        if state["state"] not in ("leased", "running") or state["error"]:
            raise FaultFound(f"after a kill mid-upload the job is {state}")
        served, body = bench.output(lease["id"], data)
        if served != 404:
            raise FaultFound(f"an unfinished job's output answered {served}: {body[:200]!r}")
        status, answer = bench.worker.upload(lease["id"], data)
        if status != 201:
            raise FaultFound(f"the worker's upload after the restart answered {status}: {answer}")
        status, answer = bench.worker.result(lease["id"], [data])
        if status != 200 or answer.get("state") != "done":
            raise FaultFound(f"the result after the restart answered {status}: {answer}")
        served, body = bench.output(lease["id"], data)
        if served != 200 or body != data:
            raise FaultFound(f"the finished job's output is not served whole ({served})")
    node.stop()
    return points


# --- SIGTERM during a sync -----------------------------------------------------------------


def load_profiles(home: Path, count: int, authors: int = 200) -> None:
    """Put ``count`` signed ``profile`` records of ``authors`` keys into a stopped node's
    log, in batches, the way a pull appends them (the node's own RecordLog): a large
    record set in seconds, which publishing through the API could not make."""
    from node.app import build_node
    from node.config import load_config
    from node.home import Home
    from node.p2p.records import now_ms, sign_record

    keys = [SigningKey.from_seed(hashlib.sha256(b"author %d" % i).digest()) for i in range(authors)]
    start = now_ms() - count - 60_000

    async def load() -> None:
        config = load_config(home, environ=env())
        node = build_node(config, Home(home))
        try:
            for first in range(0, count, 1000):
                await node.log.accept_verified(
                    sign_record(
                        keys[i % authors],
                        "profile",
                        {"name": f"author {i % authors} #{i // authors}", "bio": f"profile {i}"},
                        created=start + i,
                    )
                    for i in range(first, min(count, first + 1000))
                )
        finally:
            await node.db.close()

    asyncio.run(load())


def record_ids(home: Path) -> list[bytes]:
    with contextlib.closing(
        sqlite3.connect(f"file:{home / 'civitas.db'}?mode=ro", uri=True)
    ) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM records")]


def _sync_env(**extra: str) -> dict[str, str]:
    """No BitTorrent (records only), and no timed sync round: each pull is started here."""
    return env(CIVITAS_TORRENT_ENABLED="false", CIVITAS_FEDERATION_SYNC_INTERVAL_S="3600", **extra)


@leaves_no_node
def sigterm_during_sync(base: Path, records: int, limit_s: int, page: int = 200) -> float:
    """B pulls ``records`` records from A and gets SIGTERM once a page is in (most still to
    come); it must exit by itself, answer the sync in flight 503 (never 500), keep what it
    committed, start again, and finish the pull with its next sync: every one of A's
    records, none twice, integrity ok. Returns the seconds SIGTERM took."""
    a = init(base / "a", _sync_env())
    load_profiles(a.home, records)
    a.start()
    b = init(base / "b", _sync_env(CIVITAS_SERVER_SHUTDOWN_TIMEOUT_S=str(limit_s)))
    b.start()
    wanted = set(record_ids(a.home))
    before = len(record_ids(b.home))
    status, answer = b.request("POST", "/api/admin/peers", {"url": a.url})
    if status >= 300:
        raise FaultFound(f"peer add answered {status}: {answer}")
    proc = b.proc
    assert proc is not None
    with in_thread(lambda: b.request("POST", "/api/admin/sync", timeout=60)) as out:
        deadline = time.monotonic() + 30
        while (got := len(record_ids(b.home)) - before) < page:  # the pull is under way
            if time.monotonic() > deadline:
                raise FaultFound(f"B pulled {got} records in 30 s")
            time.sleep(0.02)
        if got >= len(wanted) - page:
            raise FaultFound(f"the pull ended before SIGTERM ({got} of {len(wanted)} records)")
        took = b.stop()
    at_stop = set(record_ids(b.home))
    log = b.last_log()
    if proc.returncode != 0 or "Traceback" in log:
        raise FaultFound(f"SIGTERM during a sync: exit {proc.returncode}, {log}")
    if out.get("result", (503, None))[0] != 503:
        raise FaultFound(f"the sync in flight at SIGTERM was answered {out}")
    if wanted <= at_stop:
        raise FaultFound("the sync had finished by the time the node stopped; load more")
    integrity(b.home)
    b.start()
    if not set(record_ids(b.home)) >= at_stop:
        raise FaultFound("records committed before SIGTERM were lost")
    status, answer = b.request("POST", "/api/admin/sync", timeout=60)
    ids = record_ids(b.home)
    missing = wanted - set(ids)
    if status != 200 or missing:
        raise FaultFound(f"{len(missing)} of A's {len(wanted)} records missing after: {answer}")
    if len(ids) != len(set(ids)):
        raise FaultFound("a record is stored twice")
    b.stop()
    a.stop()
    integrity(b.home)
    return took


@leaves_no_node
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
