"""The node's HTTP tracker (BEP 3, compact peers BEP 23, scrape BEP 48), for the
torrents it knows.

Magnets carry this tracker, so they work without the DHT. Peers are kept in memory,
bounded per address, per network (/24, /64) and per swarm, and forgotten when they stop
announcing. The announce ``ip=`` parameter is ignored: a peer is where its request came
from. Peers this node trusts (its own BitTorrent session, its federation peers' sessions:
``Swarms.trusted``, wired in app.py) are never crowded out and are listed first.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import libtorrent as lt
from aiohttp import web

from node.http import client_address

INTERVAL = 60
STALE_S = 3 * INTERVAL  # a peer that has not announced for this long is forgotten
MAX_PEERS_RETURNED = 50
MAX_SWARM = 2000
MAX_PER_ADDRESS = 8  # peers one address may hold in a swarm (a NAT, a few clients)
MAX_PER_PREFIX = 16  # and one /24 (IPv4) or /64 (IPv6): a few hosts of one network
MAX_SCRAPE = 100  # info_hashes one scrape may name (or, naming none, swarms it lists)


@dataclass
class _Peer:
    ip: str
    port: int
    seeder: bool
    seen: float
    network: str = ""  # its /24 or /64

    def __post_init__(self) -> None:
        self.network = self.network or prefix(self.ip)


def prefix(ip: str) -> str:
    """The network an address belongs to for crowding: its /24 (IPv4) or /64 (IPv6)."""
    address = ipaddress.ip_address(ip)
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def _endpoint(hint: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``) as a normalized (IP, port); None unless an IP."""
    host, _, port = hint.rpartition(":")
    try:
        return str(ipaddress.ip_address(host.strip("[]"))), int(port)
    except ValueError:
        return None


def _no_one() -> Iterable[str]:
    return ()


@dataclass
class Swarms:
    """Who announced what, in memory, bounded so that no one address or network can
    crowd out the others: at most ``MAX_PER_ADDRESS`` peers per address and
    ``MAX_PER_PREFIX`` per /24 or /64 in a swarm (a further one takes the place of that
    address's, else that network's, stalest) and ``MAX_SWARM`` in all (a newcomer to a
    full swarm takes the place of the stalest leecher if it is a seeder, else is not
    listed). A trusted peer (``trusted()``: "host:port" of this node's own BitTorrent
    session and its federation peers') counts against no bound and is listed first;
    then seeders, then leechers, the networks taking turns, the most recently seen
    first within each: announces that claim to be seeders from a few networks cannot
    push a real peer out of the answer."""

    swarms: dict[bytes, dict[bytes, _Peer]] = field(default_factory=dict)
    completed: dict[bytes, int] = field(default_factory=dict)  # "completed" events seen
    trusted: Callable[[], Iterable[str]] = _no_one

    def announce(
        self, infohash: bytes, peer_id: bytes, ip: str, port: int, left: int, event: str
    ) -> tuple[list[_Peer], int, int]:
        now = time.monotonic()
        swarm = self.swarms.setdefault(infohash, {})
        for pid in [p for p, peer in swarm.items() if now - peer.seen > STALE_S]:
            del swarm[pid]
        if event == "completed":
            self.completed[infohash] = self.completed.get(infohash, 0) + 1
        trusted = self._trusted()
        if event == "stopped":
            swarm.pop(peer_id, None)
        else:
            self._admit(swarm, peer_id, _Peer(ip, port, left == 0, now), trusted)
        if not swarm:
            self.swarms.pop(infohash, None)
        others = _in_turns([p for pid, p in swarm.items() if pid != peer_id], trusted)
        seeders = sum(1 for p in swarm.values() if p.seeder)
        return others[:MAX_PEERS_RETURNED], seeders, len(swarm) - seeders

    def scrape(self, infohash: bytes) -> tuple[int, int, int]:
        """(seeders, leechers, completed downloads) of a swarm, stale peers not counted."""
        now = time.monotonic()
        live = [p for p in self.swarms.get(infohash, {}).values() if now - p.seen <= STALE_S]
        seeders = sum(1 for p in live if p.seeder)
        return seeders, len(live) - seeders, self.completed.get(infohash, 0)

    def _trusted(self) -> set[tuple[str, int]]:
        return {e for hint in self.trusted() if (e := _endpoint(hint)) is not None}

    @staticmethod
    def _admit(
        swarm: dict[bytes, _Peer], peer_id: bytes, peer: _Peer, trusted: set[tuple[str, int]]
    ) -> None:
        known = swarm.get(peer_id)
        if known is not None and known.ip == peer.ip:
            swarm[peer_id] = peer
            return
        if known is not None:  # the same id from another address: a new peer, not a move
            return
        if (peer.ip, peer.port) in trusted:  # never crowded out, never crowding
            swarm[peer_id] = peer
            return
        same_address, same_network = [], []
        for pid, p in swarm.items():
            if p.network != peer.network or (trusted and (p.ip, p.port) in trusted):
                continue
            same_network.append((p.seen, pid))
            if p.ip == peer.ip:
                same_address.append((p.seen, pid))
        if len(same_address) >= MAX_PER_ADDRESS:
            del swarm[min(same_address)[1]]
        elif len(same_network) >= MAX_PER_PREFIX:
            del swarm[min(same_network)[1]]
        elif len(swarm) >= MAX_SWARM:
            leechers = [(p.seen, pid) for pid, p in swarm.items() if not p.seeder]
            if not peer.seeder or not leechers:
                return
            del swarm[min(leechers)[1]]
        swarm[peer_id] = peer


def _in_turns(
    peers: list[_Peer], trusted: set[tuple[str, int]], most: int = MAX_PEERS_RETURNED
) -> list[_Peer]:
    """The first ``most`` to list: trusted peers; then seeders before leechers, each
    network's best before any network's second, the most recently seen first."""
    first: list[_Peer] = []
    groups: dict[tuple[bool, str], list[_Peer]] = {}
    for peer in peers:
        if trusted and (peer.ip, peer.port) in trusted:
            first.append(peer)
        else:
            groups.setdefault((peer.seeder, peer.network), []).append(peer)
    out = sorted(first, key=lambda p: -p.seen)[:most]
    for seeder in (True, False):
        ranked = [
            sorted(group, key=lambda p: -p.seen)
            for (is_seeder, _), group in groups.items()
            if is_seeder == seeder
        ]
        rank = 0
        while len(out) < most and ranked:
            turn = sorted((group[rank] for group in ranked), key=lambda p: -p.seen)
            out += turn[: most - len(out)]
            rank += 1
            ranked = [group for group in ranked if len(group) > rank]
    return out


def _bencoded(body: Any) -> web.Response:
    return web.Response(body=bytes(lt.bencode(body)), content_type="text/plain")


def _failure(reason: str) -> web.Response:
    return _bencoded({b"failure reason": reason.encode()})


def _compact(peers: list[_Peer]) -> tuple[bytes, bytes]:
    v4, v6 = bytearray(), bytearray()
    for peer in peers:
        address = ipaddress.ip_address(peer.ip)
        packed = address.packed + peer.port.to_bytes(2, "big")
        (v4 if address.version == 4 else v6).extend(packed)
    return bytes(v4), bytes(v6)


def make_announce_handler(
    swarms: Swarms, known: Callable[[str], Awaitable[bool]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /announce``; ``known(infohash_hex)`` says whether this node tracks it."""

    async def announce(request: web.Request) -> web.Response:
        query = parse_qs(request.rel_url.raw_query_string, encoding="latin-1")

        def raw(name: str) -> bytes | None:
            values = query.get(name)
            return values[0].encode("latin-1") if values else None

        infohash, peer_id = raw("info_hash"), raw("peer_id")
        if infohash is None or len(infohash) != 20 or peer_id is None or len(peer_id) != 20:
            return _failure("info_hash and peer_id must be 20 bytes")
        try:
            port = int(query["port"][0])
            left = int(query.get("left", ["0"])[0])
        except (KeyError, ValueError):
            return _failure("port and left must be integers")
        if not 0 < port < 65536:
            return _failure("port out of range")
        if not await known(infohash.hex()):
            return _failure("this tracker does not track that torrent")
        ip = client_address(request)
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return _failure("cannot tell your address")
        event = (query.get("event") or [""])[0]
        peers, complete, incomplete = swarms.announce(infohash, peer_id, ip, port, left, event)
        v4, v6 = _compact(peers)
        body: dict[bytes, Any] = {
            b"interval": INTERVAL,
            b"complete": complete,
            b"incomplete": incomplete,
            b"peers": v4,
        }
        if v6:
            body[b"peers6"] = v6
        return _bencoded(body)

    return announce


def make_scrape_handler(
    swarms: Swarms, known: Callable[[str], Awaitable[bool]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /scrape`` (BEP 48): ``files`` maps each tracked info_hash asked for (or, with
    none asked for, each active swarm) to its complete, incomplete and downloaded counts.
    Torrents this tracker does not track are left out."""

    async def scrape(request: web.Request) -> web.Response:
        query = parse_qs(request.rel_url.raw_query_string, encoding="latin-1")
        asked = [v.encode("latin-1") for v in query.get("info_hash", [])]
        if any(len(h) != 20 for h in asked):
            return _failure("info_hash must be 20 bytes")
        if len(asked) > MAX_SCRAPE:
            return _failure(f"at most {MAX_SCRAPE} info_hash values per scrape")
        wanted = list(dict.fromkeys(asked)) if asked else list(swarms.swarms)[:MAX_SCRAPE]
        files: dict[bytes, Any] = {}
        for infohash in wanted:
            if await known(infohash.hex()):
                complete, incomplete, downloaded = swarms.scrape(infohash)
                files[infohash] = {
                    b"complete": complete,
                    b"incomplete": incomplete,
                    b"downloaded": downloaded,
                }
        return _bencoded({b"files": files})

    return scrape
