"""What a node serves so that its torrents work anywhere: tracker, .torrent files, web seed.

- ``GET /announce`` — the HTTP tracker, for the torrents this node knows;
- ``GET /federation/v1/torrents/{infohash}`` — the ``.torrent`` (its info dict hashes to
  the infohash), naming this node's tracker and web seed;
- ``GET /webseed/{sha256}`` — the file itself, Range-capable (BEP 19 web seed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from node.db import Database
from node.errors import CivitasError, NotFound
from node.p2p.filestore import FileStore
from node.p2p.tables import torrents
from node.p2p.torrentmeta import TorrentMeta, meta_from_info, torrent_file
from node.p2p.tracker import Swarms, make_announce_handler, make_scrape_handler

HEX40 = re.compile(r"^[0-9a-f]{40}$")


class FileGate(Protocol):
    """Says whether a file was taken down here (moderation implements it; app.py wires
    it, so this layer does not import moderation): a reason, or None."""

    async def refuse_file(self, sha256: str) -> str | None: ...


class TakenDown(CivitasError):
    """The file was taken down on this node: neither it nor its torrent is handed out."""

    code = "taken_down"
    status = 451


@dataclass
class TorrentIndex:
    """The info dicts this node holds, and the URLs it names in torrents and magnets."""

    db: Database
    store: FileStore
    base_url: str = ""
    peer_hints: list[str] = field(default_factory=list)  # "host:port" of our libtorrent
    # Federation peers' BitTorrent addresses by did, learnt from their /.well-known.
    remote_hints: dict[str, str] = field(default_factory=dict)
    gate: FileGate | None = None

    async def check(self, sha256: str) -> None:
        """Raise :class:`TakenDown` for a file taken down here."""
        if self.gate is not None and (why := await self.gate.refuse_file(sha256)):
            raise TakenDown(why)

    async def shown(self, sha256: str) -> bool:
        """Whether a visible record still needs the file (its model not withdrawn)."""
        public = self.store.public
        return public is None or bool(await public.shown_among([sha256.upper()]))

    async def get(self, infohash: str) -> tuple[TorrentMeta, str] | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(torrents).where(torrents.c.infohash == infohash))
            ).first()
        return (meta_from_info(row.info), row.sha256) if row is not None else None

    async def knows(self, infohash: str) -> bool:
        """Whether the tracker serves this torrent: ours, shown, and not taken down."""
        async with self.db.read() as conn:
            sha256 = await conn.scalar(
                sa.select(torrents.c.sha256).where(torrents.c.infohash == infohash)
            )
        if sha256 is None or not await self.shown(sha256):
            return False
        return self.gate is None or await self.gate.refuse_file(sha256) is None

    def trackers(self) -> list[str]:
        return [f"{self.base_url}/announce"] if self.base_url else []

    def web_seeds(self, sha256: str) -> list[str]:
        return [f"{self.base_url}/webseed/{sha256.upper()}"] if self.base_url else []


async def save_torrent(conn: AsyncConnection, meta: TorrentMeta, sha256: str) -> None:
    """Keep a torrent's info dict (idempotent), inside the caller's write transaction."""
    exists = await conn.scalar(
        sa.select(torrents.c.infohash).where(torrents.c.infohash == meta.infohash)
    )
    if exists is None:
        await conn.execute(
            torrents.insert().values(
                infohash=meta.infohash,
                sha256=sha256,
                name=meta.name,
                size=meta.size,
                piece_length=meta.piece_length,
                info=meta.info,
            )
        )


TORRENT_INDEX = web.AppKey("torrent_index", TorrentIndex)


async def torrent(request: web.Request) -> web.Response:
    index = request.app[TORRENT_INDEX]
    infohash = request.match_info["infohash"].lower()
    found = await index.get(infohash) if HEX40.match(infohash) else None
    if found is None:
        raise NotFound("this node has no torrent with that infohash")
    meta, sha256 = found
    await index.check(sha256)  # taken down here: 451, before "not shown"
    if not await index.shown(sha256):
        raise NotFound("this node has no torrent with that infohash")
    body = torrent_file(meta, index.trackers(), index.web_seeds(sha256))
    return web.Response(
        body=body,
        content_type="application/x-bittorrent",
        headers={"Content-Disposition": f'attachment; filename="{infohash}.torrent"'},
    )


async def webseed(request: web.Request) -> web.StreamResponse:
    index = request.app[TORRENT_INDEX]
    await index.check(request.match_info["sha256"])
    path = await index.store.public_path(request.match_info["sha256"])
    if path is None:
        raise NotFound("this node does not hold that file")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def add_routes(app: web.Application, index: TorrentIndex, swarms: Swarms | None = None) -> None:
    """``swarms``: the tracker's peers (app.py builds it with the peers this node trusts)."""
    app[TORRENT_INDEX] = index
    swarms = swarms if swarms is not None else Swarms()
    handler: Any = make_announce_handler(swarms, index.knows)
    app.router.add_get("/announce", handler)
    app.router.add_get("/scrape", make_scrape_handler(swarms, index.knows))
    app.router.add_get("/federation/v1/torrents/{infohash}", torrent)
    app.router.add_get("/webseed/{sha256}", webseed)
