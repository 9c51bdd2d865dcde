"""Issue 13's attacks on accounts and HTTP, against a real node on 127.0.0.1.

Starts ``civitas serve`` on a fresh home (SQLite, no BitTorrent), then runs each attack
for a bounded number of requests while probing ``/healthz`` from another loopback
address every 20 ms and sampling the node's RSS. Prints one line per attack:

    attack  result  healthz p50/p99/max ms  rss max MiB

Run: ``.venv/bin/python bench/attacks.py`` (about a minute). Header and body timeouts are
set to 5 s here (defaults 10 s and 30 s) so the slow-client attacks finish sooner.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

CIVITAS = Path(sys.executable).parent / "civitas"
PASSWORD = "correct horse battery"
ENV = {
    **os.environ,
    "CIVITAS_TORRENT_ENABLED": "false",
    "CIVITAS_TORRENT_DHT": "false",
    "CIVITAS_SERVER_HEADER_TIMEOUT_S": "5",
    "CIVITAS_SERVER_BODY_TIMEOUT_S": "5",
    "CIVITAS_LOG_LEVEL": "warning",
}


def civitas(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(CIVITAS), "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    return done.stdout


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Probe:
    """/healthz every 20 ms from 127.0.0.2, and the node's RSS every 100 ms."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.latencies: list[float] = []
        self.failures = 0
        self.rss: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=1)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tick = 0
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                self.latencies.append((time.perf_counter() - started) * 1000)
                self.failures += not ok
                if tick % 5 == 0:
                    self.rss.append(rss_mib(self.pid))
                tick += 1
                await asyncio.sleep(0.02)

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"healthz p50 {statistics.median(lat):.1f} p99 {p99:.1f} max {lat[-1]:.1f} ms "
            f"({len(lat)} probes, {self.failures} failed)  rss max {max(self.rss or [0]):.0f} MiB"
        )


def session_from(address: str, limit: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=limit, force_close=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # the node is at an IP address
    )


async def login(session: aiohttp.ClientSession, url: str, name: str, password: str) -> int:
    try:
        async with session.post(
            url + "/api/auth/login", json={"username": name, "password": password}
        ) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


# --- the attacks: each returns a one-line result -----------------------------------------


async def login_flood(url: str) -> str:
    """100 concurrent wrong logins (5 each from 20 addresses), three rounds."""
    statuses: Counter[int] = Counter()
    sessions = [session_from(f"127.0.0.{10 + i}") for i in range(20)]
    try:
        for _ in range(3):
            results = await asyncio.gather(
                *(
                    login(s, url, f"user{i}-{j}", "wrong password")
                    for i, s in enumerate(sessions)
                    for j in range(5)
                )
            )
            statuses.update(results)
    finally:
        for s in sessions:
            await s.close()
    return f"statuses {dict(sorted(statuses.items()))}"


async def brute_force(url: str) -> str:
    """80 wrong passwords for alice in a row, then the right one."""
    async with session_from("127.0.0.40") as s:
        wrong = Counter([await login(s, url, "alice", f"guess-{i:04}") for i in range(80)])
        right = await login(s, url, "alice", PASSWORD)
    return f"80 wrong: {dict(sorted(wrong.items()))}; then the right one: {right}"


async def _held_after(connections: list[asyncio.StreamReader], *waits_s: float) -> str:
    """How many are still open at each of ``waits_s`` seconds (then they are closed)."""
    counts, started = [], time.monotonic()
    for wait in waits_s:
        await asyncio.sleep(max(0.0, started + wait - time.monotonic()))
        held = sum(not r.at_eof() and not r.exception() for r in connections)
        counts.append(f"{held} held after {wait:g} s")
    for writer in _KEPT:
        writer.close()
    _KEPT.clear()
    return ", ".join(counts)


_KEPT: list[asyncio.StreamWriter] = []  # a StreamWriter closes its socket when collected


async def _open(address: str, port: int, first: bytes) -> asyncio.StreamReader | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    except OSError:
        return None
    writer.write(first)
    _KEPT.append(writer)
    asyncio.get_running_loop().create_task(_drain(reader))
    return reader


async def _drain(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def slowloris(url: str) -> str:
    """300 half-sent requests (15 from each of 20 addresses): how many are held, and how long."""
    port = int(url.rsplit(":", 1)[1])
    opened = await asyncio.gather(
        *(
            _open(f"127.0.0.{50 + i % 20}", port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
            for i in range(300)
        )
    )
    readers = [r for r in opened if r is not None]
    return f"{len(readers)} opened, {await _held_after(readers, 1, 8)}"


async def slow_body(url: str) -> str:
    """100 login requests whose body stalls after one byte: how many are held, and how long."""
    port = int(url.rsplit(":", 1)[1])
    head = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    opened = await asyncio.gather(
        *(_open(f"127.0.0.{80 + i % 10}", port, head) for i in range(100))
    )
    readers = [r for r in opened if r is not None]
    return f"{len(readers)} opened, {await _held_after(readers, 1, 8)}"


async def connection_cap(url: str) -> str:
    """300 idle connections from one address: how many the node keeps."""
    port = int(url.rsplit(":", 1)[1])
    opened = await asyncio.gather(*(_open("127.0.0.99", port, b"") for _ in range(300)))
    readers = [r for r in opened if r is not None]
    return f"{len(readers)} connected, {await _held_after(readers, 1)}"


async def malformed(url: str) -> str:
    """200 each: nested JSON, a lone surrogate name, a NUL in a multipart filename."""
    bodies: list[tuple[str, bytes, str]] = [
        ("/api/auth/login", b"[" * 100_000, "application/json"),
        (
            "/api/auth/login",
            b'{"username": "a\\ud800", "password": "xxxxxxxxxx"}',
            "application/json",
        ),
        (
            "/api/models",
            b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a\x00b"\r\n\r\n'
            b"x\r\n--XX--\r\n",
            "multipart/form-data; boundary=XX",
        ),
    ]
    statuses: Counter[int] = Counter()
    async with session_from("127.0.0.120", limit=10) as s:

        async def one(path: str, body: bytes, kind: str) -> int:
            async with s.post(url + path, data=body, headers={"Content-Type": kind}) as resp:
                await resp.read()
                return resp.status

        for path, body, kind in bodies:
            statuses.update(await asyncio.gather(*(one(path, body, kind) for _ in range(200))))
    return f"statuses {dict(sorted(statuses.items()))}"


async def open_redirect(url: str) -> str:
    """POST /login with next= payloads; how many Locations leave the site."""
    payloads = ["/\t/evil.com", "/%09/evil.com", "//evil.com", "/\\evil.com", " //evil.com"]
    payloads += ["\\\\evil.com", "https://evil.com", "/\r\n/evil.com", "javascript:alert(1)"]
    offsite = 0
    async with session_from("127.0.0.121", limit=1) as s:
        await (await s.get(url + "/login")).read()
        token = s.cookie_jar.filter_cookies(aiohttp.client.URL(url))["civitas_form"].value
        for target in payloads:
            form = {"username": "alice", "password": PASSWORD, "csrf_token": token, "next": target}
            async with s.post(url + "/login", data=form, allow_redirects=False) as resp:
                where = re.sub(r"[\t\r\n]", "", resp.headers.get("Location", "")).strip()
                offsite += where.replace("\\", "/").startswith("//") or ":" in where
    return f"{offsite} of {len(payloads)} payloads redirected off the site"


ATTACKS: list[tuple[str, Callable[[str], Awaitable[str]]]] = [
    ("login flood", login_flood),
    ("brute force", brute_force),
    ("slowloris", slowloris),
    ("slow body", slow_body),
    ("connection cap", connection_cap),
    ("malformed input", malformed),
    ("open redirect", open_redirect),
]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        civitas(home, "init", "--name", "bench", "--host", "127.0.0.1", "--port", "0")
        civitas(home, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        node = subprocess.Popen(  # noqa: ASYNC220 (started once, before any attack)
            [str(CIVITAS), "--home", str(home), "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=ENV,
        )
        try:
            assert node.stdout is not None
            line = node.stdout.readline()
            url = line.rsplit(" ", 1)[1].strip()
            print(f"node {url} pid {node.pid}, idle rss {rss_mib(node.pid):.0f} MiB", flush=True)
            for name, attack in ATTACKS:
                probe, stop = Probe(url, node.pid), asyncio.Event()
                probing = asyncio.create_task(probe.run(stop))
                await asyncio.sleep(0.2)
                result = await attack(url)
                stop.set()
                await probing
                print(f"{name:16} {result}\n{'':16} {probe.summary()}", flush=True)
                await asyncio.sleep(6)  # let timeouts close what the attack left open
            print(json.dumps({"rss_end_mib": round(rss_mib(node.pid))}))
        finally:
            node.terminate()
            node.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
