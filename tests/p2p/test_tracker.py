"""The HTTP tracker cannot be crowded: 2,000 fake announces from one address once filled a
swarm so that a real peer was no longer listed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.p2p import tracker
from node.p2p.tracker import (
    MAX_PER_ADDRESS,
    MAX_PER_PREFIX,
    MAX_SWARM,
    Swarms,
    make_announce_handler,
)
from tests.catalog.conftest import PASSWORD, lora_file
from tests.p2p.test_torrents import start_node

INFOHASH = bytes(range(20))


@pytest.fixture
async def announce_url() -> AsyncIterator[str]:
    async def known(infohash: str) -> bool:
        return infohash == INFOHASH.hex()

    app = web.Application()
    app.router.add_get("/announce", make_announce_handler(Swarms(), known))
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/announce"))


def _peer_id(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


async def announce(
    session: aiohttp.ClientSession,
    url: str,
    peer_id: bytes,
    port: int,
    left: int,
    infohash: bytes = INFOHASH,
) -> list[tuple[str, int]]:
    query = (
        f"?info_hash={quote_from_bytes(infohash)}&peer_id={quote_from_bytes(peer_id)}"
        f"&port={port}&uploaded=0&downloaded=0&left={left}&compact=1"
    )
    async with session.get(url + query) as resp:
        answer: Any = lt.bdecode(await resp.read())
    assert b"failure reason" not in answer, answer
    peers = bytes(answer[b"peers"])
    return [
        (".".join(str(b) for b in peers[i : i + 4]), int.from_bytes(peers[i + 4 : i + 6], "big"))
        for i in range(0, len(peers), 6)
    ]


def from_address(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


async def test_one_address_announcing_2000_times_does_not_hide_a_real_peer(
    announce_url: str,
) -> None:
    async with from_address("127.0.0.1") as flood:
        for start in range(0, 2000, 100):
            await asyncio.gather(
                *(
                    announce(flood, announce_url, _peer_id(n), 10_000 + n % 50_000, 100)
                    for n in range(start, start + 100)
                )
            )
    async with from_address("127.0.0.2") as real:
        await announce(real, announce_url, _peer_id(99_999), 6881, 0)  # a seeder
    async with from_address("127.0.0.3") as newcomer:
        listed = await announce(newcomer, announce_url, _peer_id(77_777), 6882, 100)
    assert listed[0] == ("127.0.0.2", 6881)  # the seeder, first
    assert sum(1 for ip, _ in listed if ip == "127.0.0.1") == MAX_PER_ADDRESS


def test_a_full_swarm_makes_room_for_a_seeder_and_forgets_stale_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(tracker.time, "monotonic", lambda: clock[0])
    swarms = Swarms()
    for n in range(MAX_SWARM):  # many addresses, each within its bound
        clock[0] += 0.001
        swarms.announce(INFOHASH, _peer_id(n), f"10.{n // 8 // 256}.{n // 8 % 256}.1", 1, 5, "")
    assert len(swarms.swarms[INFOHASH]) == MAX_SWARM
    _, _, leechers = swarms.announce(INFOHASH, _peer_id(5000), "10.9.9.9", 2, 5, "")
    assert leechers == MAX_SWARM  # a leecher more is not listed in a full swarm
    peers, seeders, leechers = swarms.announce(INFOHASH, _peer_id(5001), "10.9.9.10", 3, 0, "")
    assert (seeders, leechers) == (1, MAX_SWARM - 1)  # a seeder takes the stalest leecher's place
    assert _peer_id(0) not in swarms.swarms[INFOHASH]
    clock[0] += tracker.STALE_S + 1
    peers, seeders, leechers = swarms.announce(INFOHASH, _peer_id(6000), "10.9.9.11", 4, 5, "")
    assert (peers, seeders, leechers) == ([], 0, 1)  # everyone else went quiet: forgotten


TRUSTED = ("127.0.0.1", 40001)  # say, this node's own BitTorrent session


@pytest.fixture
async def trusting_url() -> AsyncIterator[str]:
    async def known(infohash: str) -> bool:
        return infohash == INFOHASH.hex()

    swarms = Swarms(trusted=lambda: [f"{TRUSTED[0]}:{TRUSTED[1]}"])
    app = web.Application()
    app.router.add_get("/announce", make_announce_handler(swarms, known))
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/announce"))


async def test_seeders_claimed_from_several_addresses_hide_no_real_peer(
    trusting_url: str,
) -> None:
    """7 addresses of one /24 x 8 peer ids, each claiming to be a seeder (left=0), once
    filled the answer and hid the real seeder."""
    async with from_address(TRUSTED[0]) as ours:
        await announce(ours, trusting_url, _peer_id(1), TRUSTED[1], 0)
    async with from_address("127.0.1.1") as elsewhere:  # an honest seeder, another network
        await announce(elsewhere, trusting_url, _peer_id(2), 40003, 0)
    for host in range(2, 9):
        async with from_address(f"127.0.0.{host}") as crowd:
            for k in range(8):
                await announce(crowd, trusting_url, _peer_id(1000 * host + k), 50_000 + k, 0)
    async with from_address("127.0.2.50") as leecher:
        listed = await announce(leecher, trusting_url, _peer_id(3), 40002, 100)
    assert listed[0] == TRUSTED  # the peer this node trusts, first
    assert ("127.0.1.1", 40003) in listed[:3]  # networks take turns: it is the second's best
    crowd = [p for p in listed if p[0].startswith("127.0.0.") and p != TRUSTED]
    assert len(crowd) == MAX_PER_PREFIX  # one /24 holds at most that many


async def test_the_node_trusts_its_own_session_and_its_federation_peers(
    tmp_path: Path,
) -> None:
    """Wired in app.py: the tracker of a real node lists its federation peers' BitTorrent
    addresses (learnt from their /.well-known) first, even when a crowd fills the swarm."""
    async for live in start_node(tmp_path / "n", enabled=False):
        published = await live.node.catalog.publish_path(
            (await live.node.accounts.add_user("tess", PASSWORD)).did,
            lora_file(tmp_path / "m.safetensors", 3),
            {"name": "Tracked"},
        )
        file = published["model"]["modelVersions"][0]["files"][0]
        infohash = bytes.fromhex(file["civitas"]["infohash"])
        live.node.federation.torrent_hints["did:key:z6Mkpeer"] = "127.0.0.20:41000"
        url = f"{live.url}/announce"
        async with from_address("127.0.0.20") as peer:
            await announce(peer, url, _peer_id(1), 41000, 0, infohash)
        for host in range(21, 28):
            async with from_address(f"127.0.0.{host}") as crowd:
                for k in range(8):
                    await announce(crowd, url, _peer_id(100 * host + k), 50_000 + k, 0, infohash)
        async with from_address("127.0.3.1") as leecher:
            listed = await announce(leecher, url, _peer_id(2), 40002, 100, infohash)
        assert listed[0] == ("127.0.0.20", 41000)
