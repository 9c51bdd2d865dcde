"""BitTorrent between real nodes: seeding on publish, magnets, tracker, web seed, fetching.

Two whole nodes (SQLite) in one test, each with its own libtorrent session on 127.0.0.1.
Records travel from A to B the way federation delivers them: B verifies A's signed bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import libtorrent as lt
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.service import User
from node.app import Node, build_node, create_app, set_public_url
from node.catalog.fetch import parse_magnet
from node.db import sqlite_url
from node.p2p.keys import SigningKey
from node.p2p.records import sign_record
from node.p2p.tables import blobs, records
from tests.catalog.conftest import PASSWORD, lora_file
from tests.conftest import make_home

DEADLINE_S = 30


@dataclass
class LiveNode:
    node: Node
    client: TestClient

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.node.home.admin_token()}"}


async def start_node(path: Path, **torrent: Any) -> AsyncIterator[LiveNode]:
    home, config = make_home(path, sqlite_url(path.parent / f"{path.name}.db"))
    config.torrent.enabled = True
    for key, value in torrent.items():
        setattr(config.torrent, key, value)
    node = build_node(config, home)
    await node.db.migrate()
    app = create_app(node, home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        set_public_url(app, str(client.make_url("")))
        yield LiveNode(node, client)


@pytest.fixture
async def node_a(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for live in start_node(tmp_path / "a"):
        yield live


@pytest.fixture
async def node_b(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for live in start_node(tmp_path / "b"):
        yield live


@pytest.fixture
async def published(node_a: LiveNode, tmp_path: Path) -> dict[str, Any]:
    alice: User = await node_a.node.accounts.add_user("alice", PASSWORD)
    path = lora_file(tmp_path / "fox.safetensors", 3, rank=64)  # a few hundred KiB
    result = await node_a.node.catalog.publish_path(alice.did, path, {"name": "Fox"})
    file = result["model"]["modelVersions"][0]["files"][0]
    return {
        "result": result,
        "file": file,
        "path": path,
        "version": result["model"]["modelVersions"][0],
    }


async def deliver_records(source: Node, target: Node) -> None:
    async with source.db.read() as conn:
        raws = (
            (await conn.execute(sa.select(records.c.raw).order_by(records.c.seq))).scalars().all()
        )
    await target.log.accept_batch(list(raws))


async def settled(live: LiveNode, infohash: str) -> dict[str, Any]:
    """A download's status once it is complete or failed."""

    async def done() -> Any:
        resp = await live.client.get(f"/api/downloads/{infohash}", headers=live.admin)
        status = await resp.json()
        return status if status["state"] in ("complete", "failed") else None

    return await wait_for(done, f"the download of {infohash}")  # type: ignore[no-any-return]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(check: Callable[[], Any], what: str) -> Any:
    for _ in range(DEADLINE_S * 10):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_published_files_are_seeded_with_a_working_magnet_and_torrent(
    node_a: LiveNode, published: dict[str, Any]
) -> None:
    civitas = published["file"]["civitas"]
    infohash, trackers, web_seeds, peers = parse_magnet(civitas["magnet"])
    assert infohash == civitas["infohash"]
    query = parse_qs(urlsplit(civitas["magnet"]).query)
    assert query["dn"] == ["fox.safetensors"]
    assert query["xl"] == [str(published["path"].stat().st_size)]
    assert trackers == [f"{node_a.url}/announce"]
    assert web_seeds == [f"{node_a.url}/webseed/{civitas['sha256']}"]
    assert peers == [("127.0.0.1", node_a.node.engine.listen_port)]  # type: ignore[union-attr]

    resp = await node_a.client.get(f"/federation/v1/torrents/{infohash}")
    assert resp.status == 200
    torrent: Any = lt.bdecode(await resp.read())
    assert hashlib.sha1(lt.bencode(torrent[b"info"])).hexdigest() == infohash  # noqa: S324
    assert torrent[b"announce"].decode() == trackers[0]
    assert [u.decode() for u in torrent[b"url-list"]] == web_seeds
    assert b"piece layers" not in torrent and b"meta version" not in torrent[b"info"]  # v1 only

    listing = await (await node_a.client.get("/api/downloads", headers=node_a.admin)).json()
    (seeding,) = listing["torrents"]
    assert seeding["infohash"] == infohash and seeding["state"] == "seeding"

    # The web seed serves the file with Range, as BEP 19 clients ask.
    resp = await node_a.client.get(f"/webseed/{civitas['sha256']}", headers={"Range": "bytes=0-9"})
    assert resp.status == 206 and await resp.read() == published["path"].read_bytes()[:10]


async def test_tracker_answers_only_for_its_torrents_and_ignores_ip(
    node_a: LiveNode, published: dict[str, Any]
) -> None:
    infohash = bytes.fromhex(published["file"]["civitas"]["infohash"])

    def query(info_hash: bytes, extra: str = "") -> str:
        from urllib.parse import quote_from_bytes

        return (
            f"/announce?info_hash={quote_from_bytes(info_hash)}&peer_id={'-XX0001-' + 'a' * 12}"
            f"&port=51413&uploaded=0&downloaded=0&left=100&compact=1{extra}"
        )

    first: Any = lt.bdecode(await (await node_a.client.get(query(infohash, "&ip=10.1.2.3"))).read())
    assert b"failure reason" not in first
    other = query(infohash).replace("a" * 12, "b" * 12)
    second: Any = lt.bdecode(await (await node_a.client.get(other)).read())
    peers = second[b"peers"]
    assert len(peers) % 6 == 0
    announced = {
        (bytes(peers[i : i + 4]), int.from_bytes(peers[i + 4 : i + 6], "big"))
        for i in range(0, len(peers), 6)
    }
    assert (bytes([127, 0, 0, 1]), 51413) in announced  # where the request came from
    assert all(ip != bytes([10, 1, 2, 3]) for ip, _ in announced)  # not what ip= claimed
    unknown: Any = lt.bdecode(await (await node_a.client.get(query(b"\x01" * 20))).read())
    assert b"failure reason" in unknown


async def test_a_node_fetches_by_magnet_verifies_stores_and_seeds(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    civitas = published["file"]["civitas"]
    bare = f"magnet:?xt=urn:btih:{civitas['infohash']}"  # names no node to ask for records
    resp = await node_b.client.post("/api/downloads", json={"target": bare}, headers=node_b.admin)
    assert resp.status == 404  # B has no record naming the file yet: nothing to verify against
    await deliver_records(node_a.node, node_b.node)

    resp = await node_b.client.post(
        "/api/downloads", json={"target": civitas["magnet"]}, headers=node_b.admin
    )
    assert resp.status == 202, await resp.text()

    status = await settled(node_b, civitas["infohash"])
    assert status["state"] == "complete", status
    stored = await node_b.node.store.local_path(civitas["sha256"])
    assert stored is not None and stored.read_bytes() == published["path"].read_bytes()

    version_id = published["version"]["id"]
    resp = await node_b.client.get(f"/api/download/models/{version_id}")
    assert resp.status == 200 and await resp.read() == published["path"].read_bytes()
    listing = await (await node_b.client.get("/api/downloads", headers=node_b.admin)).json()
    assert [t["state"] for t in listing["torrents"]] == ["seeding"]


async def test_fetch_by_version_id_from_a_named_node(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    await deliver_records(node_a.node, node_b.node)
    version_id = published["version"]["id"]
    resp = await node_b.client.post(
        "/api/downloads",
        json={"target": str(version_id), "from": [node_a.url]},
        headers=node_b.admin,
    )
    assert resp.status == 202, await resp.text()
    infohash = published["file"]["civitas"]["infohash"]

    assert (await settled(node_b, infohash))["state"] == "complete"


async def test_a_file_that_does_not_match_its_record_is_quarantined(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    """A forged record names A's torrent but another SHA256: B must refuse the file."""
    civitas = published["file"]["civitas"]
    mallory = SigningKey.from_seed(b"m" * 32)
    model = sign_record(mallory, "model", {"name": "Forged", "type": "LORA"})
    wrong = hashlib.sha256(b"something else").digest()
    version = sign_record(
        mallory,
        "model_version",
        {
            "model": model.id,
            "name": "v1",
            "base_model": "SD 1.5",
            "files": [
                {
                    "name": "fox.safetensors",
                    "size": civitas["size"],
                    "sha256": wrong,
                    "blake3": wrong,
                    "crc32": wrong[:4],
                    "format": "SafeTensor",
                    "infohash": bytes.fromhex(civitas["infohash"]),
                    "piece_length": civitas["pieceLength"],
                }
            ],
        },
    )
    await node_b.node.log.accept_verified([model, version])
    resp = await node_b.client.post(
        "/api/downloads", json={"target": civitas["magnet"]}, headers=node_b.admin
    )
    assert resp.status == 202, await resp.text()

    status = await settled(node_b, civitas["infohash"])
    assert status["state"] == "failed" and "SHA256 mismatch" in status["error"]
    async with node_b.node.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(blobs)) == 0
    quarantined = list((node_b.node.store.root / "quarantine").iterdir())
    assert len(quarantined) == 1
    listing = await (await node_b.client.get("/api/downloads", headers=node_b.admin)).json()
    assert listing["torrents"] == []  # never seeded


async def test_an_ordinary_bittorrent_client_downloads_from_the_magnet(
    node_a: LiveNode, published: dict[str, Any], tmp_path: Path
) -> None:
    aria2c = shutil.which("aria2c")
    if aria2c is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is missing under CI (.ci/run installs Debian's aria2)")
        pytest.skip("aria2c is not installed (apt-get install aria2)")
    out = tmp_path / "aria2"
    proc = await asyncio.create_subprocess_exec(
        aria2c,
        "--dir",
        str(out),
        "--seed-time=0",
        "--enable-dht=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--bt-stop-timeout=60",
        f"--listen-port={free_port()}",
        "--interface=127.0.0.1",
        published["file"]["civitas"]["magnet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode(errors="replace")
    assert (out / "fox.safetensors").read_bytes() == published["path"].read_bytes()


async def test_the_fetch_quota_is_enforced(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    await deliver_records(node_a.node, node_b.node)
    node_b.node.config.torrent.fetch_quota_bytes = 1000  # smaller than the file
    resp = await node_b.client.post(
        "/api/downloads",
        json={"target": published["file"]["civitas"]["magnet"]},
        headers=node_b.admin,
    )
    assert resp.status == 507
    assert "fetch_quota_bytes" in (await resp.json())["message"]


async def test_download_of_a_file_the_node_lacks_goes_to_a_peer_or_gives_the_magnet(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    await deliver_records(node_a.node, node_b.node)
    version_id = published["version"]["id"]
    resp = await node_b.client.get(f"/api/download/models/{version_id}")
    assert resp.status == 404
    body = await resp.json()
    infohash = published["file"]["civitas"]["infohash"]
    assert body["magnet"].startswith(f"magnet:?xt=urn:btih:{infohash}&")
    assert "&ws=" not in body["magnet"]  # B has no web seed for a file it lacks

    await node_b.node.federation.add_peer(node_a.url)
    resp = await node_b.client.get(f"/api/download/models/{version_id}", allow_redirects=False)
    assert resp.status == 302
    assert (
        resp.headers["Location"] == f"{node_a.url}/webseed/{published['file']['civitas']['sha256']}"
    )
