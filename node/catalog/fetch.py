"""Seeding what this node holds, and fetching model files over BitTorrent, verified.

A fetch needs a ``model_version`` record in this node's catalog that names the file's
torrent: its SHA256 is what the downloaded file is checked against before the file is
stored, seeded and shown as available. A mismatch is quarantined, reported, and never
seeded. Downloads survive restarts: the info dict and resume data are kept in the
database, and libtorrent re-checks whatever is already on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import libtorrent as lt
import sqlalchemy as sa

from node.catalog.hashing import hash_file_async
from node.catalog.publish import IngestGate
from node.catalog.tables import model_versions, version_files
from node.config import TorrentSection
from node.db import Database
from node.errors import BadRequest, CivitasError, Forbidden, NotFound
from node.p2p.outgoing import PeerError, get_capped
from node.p2p.records import now_ms
from node.p2p.tables import blobs, downloads, torrents
from node.p2p.torrent_routes import TorrentIndex, save_torrent
from node.p2p.torrentmeta import TorrentMeta, meta_from_info
from node.p2p.torrents import TorrentEngine
from node.tasks import stop_tasks

log = logging.getLogger("civitas.fetch")
HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
RESUME_EVERY_S = 30
TORRENT_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
MAX_TORRENT_BYTES = 8 * 1024 * 1024
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)


RETRY_EVERY_S = 5
RETRY_ROOM_BYTES = 16 * 1024 * 1024  # free space that resumes a download paused when full


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def paused_reason(error: str, where: Path) -> str:
    """libtorrent's error, and what the operator can do about it."""
    if "space" in error.lower() or "quota" in error.lower():
        return (
            f"the disk is full writing {where} ({error}): paused; it resumes by itself "
            "once there is room"
        )
    return f"paused by an error writing {where}: {error}"


class QuotaExceeded(CivitasError):
    code = "quota_exceeded"
    status = 507


def parse_magnet(uri: str) -> tuple[str, list[str], list[str], list[tuple[str, int]]]:
    """(infohash hex, trackers, web seeds, peers) of a BitTorrent v1 magnet link."""
    if not uri.startswith("magnet:?"):
        raise BadRequest("a magnet link starts with magnet:?")
    query = parse_qs(uri[len("magnet:?") :])
    infohash = None
    for xt in query.get("xt", []):
        if xt.lower().startswith("urn:btih:"):
            value = xt[len("urn:btih:") :]
            if HEX40.match(value):
                infohash = value.lower()
            elif len(value) == 32:
                with contextlib.suppress(ValueError):
                    import base64

                    infohash = base64.b32decode(value.upper()).hex()
    if infohash is None:
        raise BadRequest("the magnet link has no BitTorrent v1 info-hash (xt=urn:btih:…)")
    peers = []
    for peer in query.get("x.pe", []):
        host, _, port = peer.rpartition(":")
        if host and port.isdigit():
            peers.append((host.strip("[]"), int(port)))
    return infohash, query.get("tr", []), query.get("ws", []), peers


class FetchService:
    def __init__(
        self,
        db: Database,
        index: TorrentIndex,
        engine: TorrentEngine | None,
        cfg: TorrentSection,
        peer_urls: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.db = db
        self.index = index
        self.store = index.store
        self.engine = engine
        self.cfg = cfg
        self.peer_urls = peer_urls  # federation peers: where else to find a file
        self.gate: IngestGate | None = None  # moderation: files taken down here
        # (magnet, infohash) -> whether records naming it came from the magnet's own node
        self.find_records: Callable[[str, str], Awaitable[bool]] | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None

    # --- this node's own torrent endpoints --------------------------------------------

    def trackers(self) -> list[str]:
        return self.index.trackers()

    def web_seeds(self, sha256: str) -> list[str]:
        return self.index.web_seeds(sha256)

    async def meta(self, infohash: str) -> tuple[TorrentMeta, str] | None:
        return await self.index.get(infohash)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.engine is None:
            return
        self.engine.on_finished = self._finished
        async with self.db.read() as conn:
            local = (
                await conn.execute(
                    sa.select(
                        torrents.c.infohash, blobs.c.path, torrents.c.info, blobs.c.sha256
                    ).join(blobs, blobs.c.sha256 == torrents.c.sha256)
                )
            ).all()
            fetched = set(
                (
                    await conn.execute(
                        sa.select(downloads.c.infohash).where(downloads.c.state == "complete")
                    )
                ).scalars()
            )
            pending = (
                await conn.execute(
                    sa.select(downloads, torrents.c.info)
                    .join(torrents, torrents.c.infohash == downloads.c.infohash)
                    .where(downloads.c.state == "downloading")
                )
            ).all()
        public = self.store.public
        shown = await public.shown_among([r.sha256 for r in local]) if public else None
        for row in local:
            if shown is not None and row.sha256 not in shown:
                continue  # its model was withdrawn (or its image hidden): not seeded
            # an in-place file truncated while the node was down is not seeded
            present = await self.store.local_path(row.sha256) is not None
            if self._should_seed(row.infohash in fetched) and present:
                self.engine.seed(
                    meta_from_info(row.info),
                    Path(row.path),
                    self.trackers(),
                    self.web_seeds(row.sha256),
                )
        for row in pending:
            sources = json.loads(row.sources)
            self._start_download(meta_from_info(row.info), sources, row.resume)
        self._resume_task = asyncio.create_task(self._save_resume_loop(), name="torrent-resume")
        self._retry_task = asyncio.create_task(self._retry_loop(), name="torrent-retry")

    async def stop(self) -> None:
        await stop_tasks([self._resume_task, self._retry_task])
        await self._save_resume()

    def _should_seed(self, fetched: bool) -> bool:
        return self.cfg.seed == "all" or (self.cfg.seed == "published" and not fetched)

    async def stop_seeding(self, sha256: str) -> None:
        """Stop the torrents of a file this node no longer serves (an in-place file that
        changed under it, the file of a withdrawn model)."""
        if self.engine is None:
            return
        async with self.db.read() as conn:
            hashes = (
                await conn.execute(
                    sa.select(torrents.c.infohash).where(torrents.c.sha256 == sha256.upper())
                )
            ).scalars()
            for infohash in list(hashes):
                self.engine.remove(infohash)

    def seed_published(self, meta: TorrentMeta, path: Path, sha256: str) -> None:
        """Called by the publisher once a file of this node's is stored."""
        running = self.engine is not None and self.engine.session is not None
        if running and self._should_seed(fetched=False):
            assert self.engine is not None
            self.engine.seed(meta, path, self.trackers(), self.web_seeds(sha256))

    async def peer_web_seed(self, sha256: str) -> str | None:
        """A federation peer's web seed URL for a file it holds, asked in parallel, briefly."""
        urls = [f"{base}/webseed/{sha256.upper()}" for base in await self._peers()]
        if not urls:
            return None

        async def holds(url: str) -> str | None:
            try:
                async with (
                    aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as session,
                    session.head(url, allow_redirects=False) as resp,
                ):
                    return url if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError):
                return None

        found = await asyncio.gather(*(holds(u) for u in urls))
        return next((u for u in found if u), None)

    async def _peers(self) -> list[str]:
        return await self.peer_urls() if self.peer_urls is not None else []

    # --- fetching -----------------------------------------------------------------------

    async def _resolve(self, target: str) -> tuple[Any, dict[str, Any]]:
        """The catalog's file row for a magnet, version id or SHA256, and the sources."""
        sources: dict[str, Any] = {"trackers": [], "web_seeds": [], "peers": [], "nodes": []}
        where: Any
        if target.startswith("magnet:"):
            infohash, trackers, web_seeds, peers = parse_magnet(target)
            sources.update(trackers=trackers, web_seeds=web_seeds, peers=peers)
            where = version_files.c.infohash == infohash
        elif HEX64.match(target):
            where = version_files.c.sha256 == target.upper()
        elif target.isdigit():
            where = version_files.c.version_id == (
                sa.select(model_versions.c.id)
                .where(model_versions.c.int_id == int(target))
                .scalar_subquery()
            )
        else:
            raise BadRequest("fetch takes a magnet link, a model version id or a SHA256")
        row = await self._file_row(where)
        if row is None and target.startswith("magnet:") and self.find_records is not None:
            # Not peered with its source: bring the records the magnet's node signed first.
            if await self.find_records(target, parse_magnet(target)[0]):
                row = await self._file_row(where)
        if row is None:
            raise NotFound(
                "no model version in this node's catalog names that file; its records must "
                "reach this node first"
            )
        if not row.infohash:
            raise BadRequest("that file's record carries no torrent (infohash)")
        return row, sources

    async def _file_row(self, where: Any) -> Any:
        async with self.db.read() as conn:
            return (
                await conn.execute(
                    sa.select(version_files)
                    .where(where)
                    .order_by(version_files.c.is_primary.desc(), version_files.c.position)
                    .limit(1)
                )
            ).first()

    async def fetch(self, target: str, nodes: Sequence[str] = ()) -> dict[str, Any]:
        """Start fetching a file into this node; returns its download status."""
        if self.engine is None or self.engine.session is None:
            raise BadRequest("the BitTorrent engine is off (torrent.enabled = false)")
        row, sources = await self._resolve(target.strip())
        if self.gate is not None and (why := await self.gate.refuse_file(row.sha256)):
            raise Forbidden(why)
        known = await self._peers()
        sources["nodes"] = list(dict.fromkeys(n.rstrip("/") for n in [*nodes, *known]))
        sources["sha256"] = row.sha256
        if await self.store.local_path(row.sha256) is not None:
            return {
                "infohash": row.infohash,
                "sha256": row.sha256,
                "state": "complete",
                "name": row.name,
                "size": row.size,
            }
        existing = await self._download_row(row.infohash)
        if existing is not None and existing.state == "downloading":
            return await self.describe(row.infohash)
        await self._check_quota(row.size)
        meta = await self._torrent_meta(row, sources)
        async with self.db.write() as conn:
            await conn.execute(downloads.delete().where(downloads.c.infohash == row.infohash))
            await conn.execute(
                downloads.insert().values(
                    infohash=row.infohash,
                    sha256=row.sha256,
                    name=row.name,
                    size=row.size,
                    state="downloading",
                    sources=json.dumps(sources),
                    added=now_ms(),
                )
            )
        self._start_download(meta, sources, None)
        return await self.describe(row.infohash)

    def _incoming(self, infohash: str) -> Path:
        return self.store.root / "incoming" / infohash

    def _start_download(
        self, meta: TorrentMeta, sources: dict[str, Any], resume: bytes | None
    ) -> None:
        assert self.engine is not None
        directory = self._incoming(meta.infohash)
        directory.mkdir(parents=True, exist_ok=True)
        web_seeds = list(sources.get("web_seeds", []))
        web_seeds += [
            f"{n}/webseed/{sources['sha256']}"
            for n in sources.get("nodes", [])
            if "sha256" in sources
        ]
        trackers = list(sources.get("trackers", [])) + [
            f"{n}/announce" for n in sources.get("nodes", [])
        ]
        self.engine.download(
            meta,
            directory,
            trackers=trackers,
            web_seeds=web_seeds,
            peers=[(h, p) for h, p in sources.get("peers", [])],
            resume=resume,
        )

    async def _torrent_meta(self, row: Any, sources: dict[str, Any]) -> TorrentMeta:
        found = await self.meta(row.infohash)
        if found is not None:
            return found[0]
        candidates = list(sources["nodes"])
        for url in sources["web_seeds"] + sources["trackers"]:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc:
                candidates.append(f"{parts.scheme}://{parts.netloc}")
        for base in dict.fromkeys(candidates):
            info = await self._download_info(base, row.infohash)
            if info is None:
                continue
            meta = meta_from_info(info)
            if meta.infohash != row.infohash or meta.size != row.size:
                continue
            async with self.db.write() as conn:
                await save_torrent(conn, meta, row.sha256)
            return meta
        raise NotFound(
            "could not get the torrent's metadata from any source; name a node that has the "
            "file (--from URL) or use its magnet link"
        )

    @staticmethod
    async def _download_info(base: str, infohash: str) -> bytes | None:
        url = f"{base}/federation/v1/torrents/{infohash}"
        try:
            body = await get_capped(url, MAX_TORRENT_BYTES, TORRENT_FETCH_TIMEOUT)
        except PeerError:
            return None
        try:
            decoded: Any = lt.bdecode(body)
            return bytes(lt.bencode(decoded[b"info"]))
        except (RuntimeError, KeyError, TypeError):
            return None

    async def _check_quota(self, size: int) -> None:
        if not self.cfg.fetch_quota_bytes:
            return
        async with self.db.read() as conn:
            used = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(downloads.c.size), 0)).where(
                    downloads.c.state.in_(("downloading", "complete"))
                )
            )
        if int(used or 0) + size > self.cfg.fetch_quota_bytes:
            raise QuotaExceeded(
                f"fetching {size} bytes would pass torrent.fetch_quota_bytes "
                f"({self.cfg.fetch_quota_bytes}; {used} in use)"
            )

    async def _finished(self, infohash: str) -> None:
        """Verify a finished download against its record's SHA256, then store and seed it."""
        row = await self._download_row(infohash)
        if row is None or row.state != "downloading" or self.engine is None:
            return
        path = self._incoming(infohash) / row.name
        try:
            hashes = await hash_file_async(path)
        except OSError as exc:
            await self._set_state(infohash, "failed", f"cannot read the download: {exc}")
            return
        found = await self.meta(infohash)
        self.engine.remove(infohash)
        if self.gate is not None and (why := await self.gate.refuse_file(row.sha256)):
            path.unlink(missing_ok=True)  # taken down while it downloaded
            await self._set_state(infohash, "failed", why)
            return
        if hashes.sha256 != row.sha256:
            quarantine = self.store.root / "quarantine" / f"{infohash}-{row.name}"
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, quarantine)
            message = f"SHA256 mismatch: the record says {row.sha256}, the file is {hashes.sha256}"
            log.warning("download quarantined", extra={"infohash": infohash, "why": message})
            await self._set_state(infohash, "failed", message)
            return
        stored = await asyncio.to_thread(self.store.commit_temp, path, row.sha256)
        async with self.db.write() as conn:
            await self.store.add_row(conn, row.sha256, row.size, stored, in_place=False)
            await conn.execute(
                downloads.update()
                .where(downloads.c.infohash == infohash)
                .values(state="complete", finished=now_ms(), resume=None, error=None)
            )
        with contextlib.suppress(OSError):
            self._incoming(infohash).rmdir()
        if found is not None and self._should_seed(fetched=True):
            self.engine.seed(found[0], stored, self.trackers(), self.web_seeds(row.sha256))
        log.info("download verified", extra={"infohash": infohash, "sha256": row.sha256})

    async def _set_state(self, infohash: str, state: str, error: str | None) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                downloads.update()
                .where(downloads.c.infohash == infohash)
                .values(state=state, error=error, finished=now_ms())
            )

    async def _download_row(self, infohash: str) -> Any:
        async with self.db.read() as conn:
            return (
                await conn.execute(sa.select(downloads).where(downloads.c.infohash == infohash))
            ).first()

    async def _save_resume_loop(self) -> None:
        while True:
            await asyncio.sleep(RESUME_EVERY_S)
            await self._save_resume()

    async def _retry_loop(self) -> None:
        """A download paused by an error (a full disk) resumes once there is room again."""
        while True:
            await asyncio.sleep(RETRY_EVERY_S)
            if self.engine is None or self.engine.session is None:
                continue
            for status in self.engine.all_status():
                if status.error is None:
                    continue
                room = await asyncio.to_thread(_free_bytes, self._incoming(status.infohash))
                if room >= min(status.size - status.done, RETRY_ROOM_BYTES):
                    log.info("retrying a paused download", extra={"infohash": status.infohash})
                    self.engine.retry(status.infohash)
                    await self._reconnect(status.infohash)

    async def _reconnect(self, infohash: str) -> None:
        """Connect again to the peers a download was started with."""
        row = await self._download_row(infohash)
        if row is None or self.engine is None:
            return
        for host, port in json.loads(row.sources).get("peers", []):
            self.engine.connect(infohash, host, int(port))

    async def _save_resume(self) -> None:
        if self.engine is None or self.engine.session is None:
            return
        async with self.db.read() as conn:
            active = (
                (
                    await conn.execute(
                        sa.select(downloads.c.infohash).where(downloads.c.state == "downloading")
                    )
                )
                .scalars()
                .all()
            )
        for infohash in active:
            data = await self.engine.resume_data(infohash)
            if data is not None:
                async with self.db.write() as conn:
                    await conn.execute(
                        downloads.update()
                        .where(downloads.c.infohash == infohash)
                        .values(resume=data)
                    )

    # --- status ---------------------------------------------------------------------------

    async def describe(self, infohash: str) -> dict[str, Any]:
        row = await self._download_row(infohash)
        if row is None:
            raise NotFound("this node is not fetching that torrent")
        return self._describe(row)

    def _describe(self, row: Any) -> dict[str, Any]:
        status = self.engine.status(row.infohash) if self.engine else None
        out: dict[str, Any] = {
            "infohash": row.infohash,
            "sha256": row.sha256,
            "name": row.name,
            "size": row.size,
            "state": row.state,
            "error": row.error,
            "progress": 1.0 if row.state == "complete" else 0.0,
            "done": row.size if row.state == "complete" else 0,
            "download_rate": 0,
            "upload_rate": 0,
            "peers": 0,
        }
        if status is not None and row.state == "downloading":
            out.update(
                progress=status.progress,
                done=status.done,
                download_rate=status.download_rate,
                upload_rate=status.upload_rate,
                peers=status.peers,
            )
            if status.error is not None:  # libtorrent paused it: say why and what next
                out["state"] = "paused"
                out["error"] = paused_reason(status.error, self._incoming(row.infohash))
            elif status.progress >= 1.0:
                out["state"] = "verifying"
        return out

    async def list_downloads(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(sa.select(downloads).order_by(downloads.c.added.desc()))
            ).all()
        return [self._describe(row) for row in rows]

    def seeding(self) -> list[dict[str, Any]]:
        if self.engine is None or self.engine.session is None:
            return []
        return [s.public() for s in self.engine.all_status()]
