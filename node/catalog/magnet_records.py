"""A magnet from a node this one has not peered with: fetch its signed records first.

A Civitas magnet names its source node: its tracker (``tr=…/announce``) and web seed
(``ws=…/webseed/SHA256``) are that node's URLs. When ``civitas fetch MAGNET`` finds no
version naming the magnet's infohash, it asks those nodes for the records that describe
the file — the author's profile, the model (root and revisions) and the version — with
``GET /federation/v1/files/{infohash}/records``, and accepts them through the normal
acceptance path (signature, record rules, moderation gate, append, project), recorded as
delivered by that node. Nothing is trusted for being delivered: an altered record fails
its signature, and the downloaded file is still checked against the version's SHA256.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from node.catalog.tables import model_revisions, model_versions, shown_versions, version_files
from node.db import Database
from node.errors import BadRequest, CivitasError, NotFound, RecordError
from node.p2p.federation import wire
from node.p2p.log import RecordLog
from node.p2p.outgoing import PeerError, get_capped
from node.p2p.records import MAX_RECORD_BYTES, Record, verify_record
from node.p2p.tables import authors

log = logging.getLogger("civitas.fetch")
ROUTE = "/federation/v1/files/{infohash}/records"
HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
MAX_BATCH_BYTES = wire.MAX_PUSH * (MAX_RECORD_BYTES + 16) + 1024
MAX_INFO_BYTES = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
MAX_SOURCES = 4  # source nodes asked per magnet


# --- serving: the records that describe a file ----------------------------------------


async def records_for_infohash(db: Database, record_log: RecordLog, infohash: str) -> list[bytes]:
    """The visible records a node needs to show the version that names this torrent:
    a shown one (its model not withdrawn), else none."""
    async with db.read() as conn:
        version = (
            await conn.execute(
                sa.select(model_versions.c.id, model_versions.c.model_root, model_versions.c.author)
                .select_from(
                    version_files.join(
                        shown_versions, model_versions.c.id == version_files.c.version_id
                    )
                )
                .where(version_files.c.infohash == infohash.lower())
                .limit(1)
            )
        ).first()
        if version is None:
            return []
        revisions = (
            await conn.execute(
                sa.select(model_revisions.c.id, model_revisions.c.author)
                .where(model_revisions.c.root_id == version.model_root)
                .order_by(model_revisions.c.created.desc())
                .limit(wire.MAX_PUSH - 4)
            )
        ).all()
        dids = {version.author, *(r.author for r in revisions)}
        profiles = (
            await conn.execute(sa.select(authors.c.profile_id).where(authors.c.did.in_(dids)))
        ).scalars()
        ids = [*profiles, version.model_root, *(r.id for r in reversed(revisions)), version.id]
    raws = []
    for record_id in dict.fromkeys(ids):
        entry = await record_log.get(record_id)
        if entry is not None and entry.state == "visible" and entry.raw is not None:
            raws.append(entry.raw)
    return raws[: wire.MAX_PUSH]


def make_handler(
    db: Database, record_log: RecordLog
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def file_records(request: web.Request) -> web.Response:
        infohash = request.match_info["infohash"]
        if not HEX40.match(infohash):
            raise BadRequest("an infohash is 40 hexadecimal digits")
        raws = await records_for_infohash(db, record_log, infohash)
        if not raws:
            raise NotFound("no model version here names that torrent")
        return web.Response(body=wire.encode_batch(raws), content_type=wire.MSGPACK)

    return file_records


def add_routes(app: web.Application, db: Database, record_log: RecordLog) -> None:
    app.router.add_get(ROUTE, make_handler(db, record_log))


# --- fetching: from the nodes a magnet names --------------------------------------------


def source_nodes(magnet: str) -> list[str]:
    """Base URLs of the nodes a magnet names: its trackers less ``/announce``, its web
    seeds less ``/webseed/…``; http(s) only."""
    query = parse_qs(magnet.partition("?")[2])
    bases: list[str] = []
    for url in query.get("tr", []) + query.get("ws", []):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        path = parts.path
        if path.endswith("/announce"):
            path = path.removesuffix("/announce")
        elif "/webseed/" in path:
            path = path[: path.rfind("/webseed/")]
        else:
            continue
        bases.append(f"{parts.scheme}://{parts.netloc}{path}")
    return list(dict.fromkeys(bases))[:MAX_SOURCES]


class MagnetRecords:
    """Brings a magnet's records from its source node into this node's log."""

    def __init__(self, record_log: RecordLog) -> None:
        self.log = record_log

    async def fetch(self, magnet: str, infohash: str) -> bool:
        """Whether records naming ``infohash`` were accepted from a node the magnet names."""
        problems = []
        for base in source_nodes(magnet):
            try:
                accepted = await self._from(base, infohash)
            except CivitasError as exc:
                problems.append(f"{base}: {exc.message}")
                continue
            if accepted:
                return True
        if problems:
            log.info("no records for a magnet", extra={"infohash": infohash, "why": problems})
        return False

    async def _from(self, base: str, infohash: str) -> int:
        try:
            info = json.loads(
                await get_capped(f"{base}/.well-known/civitas", MAX_INFO_BYTES, TIMEOUT)
            )
        except ValueError:
            info = None
        source = info.get("did") if isinstance(info, dict) else None
        if not isinstance(source, str) or not source.startswith("did:key:"):
            raise PeerError(f"{base} is not a Civitas node (no did in /.well-known/civitas)")
        body = await get_capped(
            f"{base}{ROUTE.format(infohash=infohash)}", MAX_BATCH_BYTES, TIMEOUT
        )
        verified: list[Record] = []
        for raw in wire.decode_batch(body):
            try:
                verified.append(verify_record(raw))
            except RecordError as exc:
                log.warning("a magnet source sent a bad record", extra={"node": base, "why": exc})
        appended = await self.log.accept_verified(verified, source=source, refused=[])
        return len(appended)
