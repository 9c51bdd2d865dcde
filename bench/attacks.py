"""Issue 13's attacks on accounts and HTTP, against a real node on 127.0.0.1.

Starts ``civitas serve`` on a fresh home (SQLite, no BitTorrent), then runs each attack
for a bounded number of requests while probing ``/healthz`` from another loopback
address every 20 ms and sampling the node's RSS. Prints one line per attack:

    attack  result  healthz p50/p99/max ms  rss max MiB

Then the attacks on uploads, each by members or an anonymous client: a training zip
bomb (three members, one job each, so that each meets the zip checks and not the
per-account upload limit), training jobs whose images are small files that decode to
40 megapixels each (two members, each at their share of uploads), anonymous job-output
uploads, checkpoint headers declaring a million tensors, and a flood of preview widths
of four 36-megapixel images; after each, the files left in the node's temp directories are
counted (``tmp files``; it must be 0). ``rss max`` is the node's process and its
children (the image-decode processes) together.

Run: ``.venv/bin/python bench/attacks.py`` (about two minutes), or ``--only "preview
widths,training decodes"`` for some of the attacks. Header and body timeouts are set to
5 s here (defaults 10 s and 30 s) so the slow-client attacks finish sooner.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
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
from typing import Any

import aiohttp
import numpy as np
from PIL import Image
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.compute.zips import Entry, raw_zip, zeros

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
    """The resident memory of ``pid`` and every process under it (the decode processes)."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_mib(int(child))
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
        pass
    return total


class Probe:
    """/healthz every 20 ms from 127.0.0.2, and the node's RSS every 100 ms, in a process
    of its own: the attacks' own work (building a 64 MiB header, sending it) must not
    delay the probe's event loop and be counted as the node's latency."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: multiprocessing.Queue[tuple[list[float], int, list[float]]] = context.Queue()
        self._process = context.Process(
            target=_probe_process, args=(url, pid, self._stop, self._results), daemon=True
        )
        self.latencies: list[float] = []
        self.failures = 0
        self.rss: list[float] = []

    async def start(self) -> None:
        self._process.start()
        await asyncio.sleep(0.5)  # its interpreter starts, then it probes

    async def finish(self) -> None:
        self._stop.set()
        self.latencies, self.failures, self.rss = await asyncio.to_thread(
            self._results.get, True, 30
        )
        await asyncio.to_thread(self._process.join, 10)

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"healthz p50 {statistics.median(lat):.1f} p99 {p99:.1f} max {lat[-1]:.1f} ms "
            f"({len(lat)} probes, {self.failures} failed)  rss max {max(self.rss or [0]):.0f} MiB"
        )


def _probe_process(url: str, pid: int, stop: Any, results: Any) -> None:
    results.put(asyncio.run(_probe(url, pid, stop)))


async def _probe(url: str, pid: int, stop: Any) -> tuple[list[float], int, list[float]]:
    latencies: list[float] = []
    rss: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=1)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tick = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(url + "/healthz") as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            failures += not ok
            if tick % 5 == 0:
                rss.append(rss_mib(pid))
            tick += 1
            await asyncio.sleep(0.02)
    return latencies, failures, rss


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


# --- attacks on uploads: they need a member, a checkpoint and an image ------------------

MIB = 1024 * 1024


MEMBERS = ("alice", "bob", "carol", "dave")


class Member:
    """alice's token, and what she published: a checkpoint's version id and its images'
    URLs; and the tokens of every member (alice first)."""

    token = ""
    tokens: tuple[str, ...] = ()
    version_id = 0
    image_urls: list[str] = []


def _multipart(fields: list[tuple[str, bytes, str, str | None]]) -> tuple[bytes, str]:
    """(name, data, content type, filename) parts as one multipart/form-data body."""
    boundary = "civitasbench"
    body = b""
    for name, data, kind, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _pictures() -> list[Image.Image]:
    """Four different 36-megapixel pictures (gradients: a few MiB each as JPEG)."""
    radial, linear = Image.radial_gradient("L"), Image.linear_gradient("L")
    small = [radial, linear, radial.rotate(90), linear.rotate(45)]
    return [image.resize((6000, 6000)).convert("RGB") for image in small]


async def publish_checkpoint(url: str, member: Member, tmp: Path) -> None:
    """alice publishes a small checkpoint with four 36-megapixel previews."""
    checkpoint = tmp / "base.safetensors"
    rng = np.random.default_rng(0)
    save_file(
        {"model.diffusion_model.w": rng.standard_normal((64, 64), dtype=np.float32)},
        str(checkpoint),
    )
    images: list[Part] = []
    for i, picture in enumerate(_pictures()):
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=85)
        images.append(("image", out.getvalue(), "image/jpeg", f"big{i}.jpg"))
    meta = {"name": "Base", "type": "Checkpoint", "base_model": "SD 1.5"}
    body, kind = _multipart(
        [
            ("metadata", json.dumps(meta).encode(), "application/json", None),
            *images,
            ("file", checkpoint.read_bytes(), "application/octet-stream", "base.safetensors"),
        ]
    )
    async with session_from("127.0.0.130", limit=1) as s:
        headers = {"Authorization": f"Bearer {member.token}", "Content-Type": kind}
        async with s.post(url + "/api/models", data=body, headers=headers) as resp:
            answer = await resp.json()
            assert resp.status == 201, answer
    version = answer["model"]["modelVersions"][0]
    member.version_id = version["id"]
    member.image_urls = [image["url"] for image in version["images"]]


async def _status(s: aiohttp.ClientSession, method: str, url: str, **request: Any) -> int:
    """The answer's status; 0 where the node closed the connection instead (a refused
    body, a connection over the per-address cap)."""
    try:
        async with s.request(method, url, **request) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return 0


def _tally(statuses: list[int]) -> str:
    return f"statuses {dict(sorted(Counter(statuses).items()))}"


Part = tuple[str, bytes, str, str | None]  # name, data, content type, filename


def _training_job(version_id: int, parts: list[Part]) -> tuple[bytes, str]:
    params = {"kind": "train", "model_version_id": version_id, "trigger_word": "x"}
    return _multipart([("params", json.dumps(params).encode(), "application/json", None), *parts])


async def zip_bomb(url: str, member: Member) -> str:
    """Three members' training jobs at once, each a 40 x 50 MiB zip of zeros (~2 MiB)."""
    one = zeros("0.png", 50 * MIB)
    bomb = raw_zip([Entry(f"{i}.png", one.payload, one.crc, one.size) for i in range(40)])
    body, kind = _training_job(member.version_id, [("zip", bomb, "application/zip", "set.zip")])
    async with session_from("127.0.0.131", limit=3) as s:
        jobs = (
            _status(
                s,
                "POST",
                url + "/api/jobs",
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
            )
            for token in member.tokens[:3]
        )
        statuses = await asyncio.gather(*jobs)
    return f"{len(bomb) // 1024} KiB zips: {_tally(statuses)}"


def grey16_png(side: int = 6320) -> bytes:
    """A 16-bit greyscale PNG of 40 MP (the pixel cap) that compresses to ~80 KB."""
    pixels = np.zeros((side, side), dtype=np.uint16)
    pixels[::7] = 40000
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", optimize=True)
    return out.getvalue()


async def training_decodes(url: str, member: Member) -> str:
    """Four training jobs at once (two members, each at their two uploads), each of
    8 images of 40 MP in ~80 KB: every image is decoded in full before the job is kept."""
    picture = grey16_png()
    images: list[Part] = [("image", picture, "image/png", f"{i}.png") for i in range(8)]
    body, kind = _training_job(member.version_id, images)
    async with session_from("127.0.0.150", limit=4) as s:
        jobs = (
            _status(
                s,
                "POST",
                url + "/api/jobs",
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
            )
            for token in member.tokens[2:4] * 2
        )
        statuses = await asyncio.gather(*jobs)
    return f"4 x 8 images of 40 MP in {len(picture) // 1024} KiB: {_tally(statuses)}"


async def anonymous_outputs(url: str, member: Member) -> str:
    """20 anonymous 20 MiB job-output uploads at once: all refused, nothing written."""
    chunk = bytes(MIB)

    async def body() -> Any:
        for _ in range(20):
            yield chunk

    async with session_from("127.0.0.132", limit=20) as s:
        path = url + "/api/compute/jobs/{}/outputs/" + "0" * 64
        statuses = await asyncio.gather(
            *(_status(s, "PUT", path.format(i), data=body()) for i in range(20))
        )
    return _tally(statuses)


async def header_bomb(url: str, member: Member) -> str:
    """Three uploads at once of a checkpoint whose 70 MB header declares 1M tensors."""
    entries = b",".join(
        b'"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (i, i, i + 1)
        for i in range(1_000_000)
    )
    header = b"{" + entries + b"}"
    data = len(header).to_bytes(8, "little") + header + bytes(1_000_000)
    meta = {"name": "Bomb", "type": "Checkpoint", "base_model": "SD 1.5"}
    body, kind = _multipart(
        [
            ("metadata", json.dumps(meta).encode(), "application/json", None),
            ("file", data, "application/octet-stream", "bomb.safetensors"),
        ]
    )
    headers = {"Authorization": f"Bearer {member.token}", "Content-Type": kind}
    async with session_from("127.0.0.133", limit=3) as s:
        uploads = (
            _status(s, "POST", url + "/api/models", data=body, headers=headers) for _ in "abc"
        )
        statuses = await asyncio.gather(*uploads)
    return f"{len(header) // MIB} MiB headers: {_tally(statuses)}"


async def preview_widths(url: str, member: Member) -> str:
    """160 anonymous requests at once for 40 distinct widths (16 … 4000) of each of the
    four 36 MP previews, 20 from each of 8 addresses (10 connections each)."""
    targets = [url.rsplit("/", 2) for url in member.image_urls]
    sessions = [session_from(f"127.0.0.{134 + i}", limit=10) for i in range(8)]
    try:
        statuses = await asyncio.gather(
            *(
                _status(sessions[i % 8], "GET", f"{head}/width={16 + (i // 4) * 102}/{name}")
                for i, (head, _, name) in enumerate(targets * 40)
            )
        )
    finally:
        for s in sessions:
            await s.close()
    return _tally(statuses)


UPLOAD_ATTACKS: list[tuple[str, Callable[[str, Member], Awaitable[str]]]] = [
    ("zip bomb", zip_bomb),
    ("training decodes", training_decodes),
    ("anon outputs", anonymous_outputs),
    ("header bomb", header_bomb),
    ("preview widths", preview_widths),
]


def _bind(
    attack: Callable[[str, Member], Awaitable[str]], member: Member
) -> Callable[[str], Awaitable[str]]:
    return lambda url: attack(url, member)


def temp_files(home: Path) -> int:
    """Files left in the node's temp directories."""
    return sum(
        1 for tmp in home.rglob("tmp") if tmp.is_dir() for f in tmp.rglob("*") if f.is_file()
    )


ATTACKS: list[tuple[str, Callable[[str], Awaitable[str]]]] = [
    ("login flood", login_flood),
    ("brute force", brute_force),
    ("slowloris", slowloris),
    ("slow body", slow_body),
    ("connection cap", connection_cap),
    ("malformed input", malformed),
    ("open redirect", open_redirect),
]


async def main(only: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        civitas(home, "init", "--name", "bench", "--host", "127.0.0.1", "--port", "0")
        for name in MEMBERS:
            civitas(home, "user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
        member = Member()
        member.tokens = tuple(civitas(home, "token", "create", n).strip() for n in MEMBERS)
        member.token = member.tokens[0]
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
            await publish_checkpoint(url, member, Path(tmp))
            runs = [(name, attack) for name, attack in ATTACKS]
            runs += [(name, _bind(attack, member)) for name, attack in UPLOAD_ATTACKS]
            runs = [(name, attack) for name, attack in runs if not only or name in only]
            for name, attack in runs:
                probe = Probe(url, node.pid)
                await probe.start()
                result = await attack(url)
                await probe.finish()
                print(f"{name:17} {result}\n{'':17} {probe.summary()}", flush=True)
                await asyncio.sleep(6)  # let timeouts close what the attack left open
                print(f"{'':17} tmp files {temp_files(home)}", flush=True)
            print(json.dumps({"rss_end_mib": round(rss_mib(node.pid))}))
        finally:
            node.terminate()
            node.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [name for name, _ in ATTACKS] + [name for name, _ in UPLOAD_ATTACKS]
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(names))
    chosen = {name.strip() for name in parser.parse_args().only.split(",") if name.strip()}
    if unknown := chosen - set(names):
        parser.error(f"no such attack: {', '.join(sorted(unknown))}")
    asyncio.run(main(chosen))
