"""The tracker's ``/scrape`` (BEP 48), asked over real HTTP as ordinary clients ask it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
from aiohttp.test_utils import TestClient

from node.app import Node
from tests.catalog.conftest import PASSWORD, lora_file


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return lt.bdecode(await resp.read())


async def _announce(base: str, infohash: bytes, n: int, left: int, event: str = "") -> None:
    peer_id = b"-XX0001-" + n.to_bytes(12, "big")
    query = (
        f"info_hash={quote_from_bytes(infohash)}&peer_id={quote_from_bytes(peer_id)}"
        f"&port={6000 + n}&uploaded=0&downloaded=0&left={left}&compact=1"
        + (f"&event={event}" if event else "")
    )
    answer = await _get(f"{base}/announce?{query}")
    assert b"failure reason" not in answer, answer


async def test_scrape_counts_seeders_leechers_and_completed_downloads(
    node: Node, client: TestClient, tmp_path: Path
) -> None:
    # The BitTorrent engine is off here, so the node does not announce to itself.
    alice = await node.accounts.add_user("alice", PASSWORD)
    result = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors"), {"name": "Fox"}
    )
    file = result["model"]["modelVersions"][0]["files"][0]
    infohash = bytes.fromhex(file["civitas"]["infohash"])
    base = str(client.make_url("")).rstrip("/")
    await _announce(base, infohash, 1, left=0)  # a seeder
    await _announce(base, infohash, 2, left=100)  # a leecher
    await _announce(base, infohash, 3, left=100)
    await _announce(base, infohash, 3, left=0, event="completed")  # finished
    unknown = bytes(range(20))

    scrape = f"{base}/scrape?info_hash={quote_from_bytes(infohash)}"
    answer = await _get(f"{scrape}&info_hash={quote_from_bytes(unknown)}")
    files = answer[b"files"]
    assert set(files) == {infohash}  # a torrent this tracker does not track is left out
    assert files[infohash] == {b"complete": 2, b"incomplete": 1, b"downloaded": 1}

    everything = await _get(f"{base}/scrape")  # no info_hash: every active swarm
    assert everything[b"files"][infohash][b"complete"] == 2

    bad = await _get(f"{base}/scrape?info_hash=short")
    assert b"failure reason" in bad
