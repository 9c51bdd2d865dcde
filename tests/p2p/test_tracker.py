"""The HTTP tracker cannot be crowded: 2,000 fake announces from one address once filled a
swarm so that a real peer was no longer listed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.p2p import tracker
from node.p2p.tracker import MAX_PER_ADDRESS, MAX_SWARM, Swarms, make_announce_handler

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
    session: aiohttp.ClientSession, url: str, peer_id: bytes, port: int, left: int
) -> list[tuple[str, int]]:
    query = (
        f"?info_hash={quote_from_bytes(INFOHASH)}&peer_id={quote_from_bytes(peer_id)}"
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
        swarms.announce(INFOHASH, _peer_id(n), f"10.0.{n // 8 // 256}.{n // 8 % 256}", 1, 5, "")
    assert len(swarms.swarms[INFOHASH]) == MAX_SWARM
    _, _, leechers = swarms.announce(INFOHASH, _peer_id(5000), "10.9.9.9", 2, 5, "")
    assert leechers == MAX_SWARM  # a leecher more is not listed in a full swarm
    peers, seeders, leechers = swarms.announce(INFOHASH, _peer_id(5001), "10.9.9.10", 3, 0, "")
    assert (seeders, leechers) == (1, MAX_SWARM - 1)  # a seeder takes the stalest leecher's place
    assert _peer_id(0) not in swarms.swarms[INFOHASH]
    clock[0] += tracker.STALE_S + 1
    peers, seeders, leechers = swarms.announce(INFOHASH, _peer_id(6000), "10.9.9.11", 4, 5, "")
    assert (peers, seeders, leechers) == ([], 0, 1)  # everyone else went quiet: forgotten
