"""Model files for a worker over BitTorrent: the job's infohash, the node as tracker and
web seed, and whatever peers the swarm (and the DHT) offers.

The torrent's info dict comes from the node (``/federation/v1/torrents/{infohash}``) and
must hash to the job's infohash and describe a file of the job's size; the finished file
must hash to the job's SHA256 before it enters the cache. Anything that goes wrong here
is reported to the caller, which falls back to plain HTTP from the web seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import libtorrent as lt

from node.config import TorrentSection
from node.errors import CivitasError, PayloadTooLarge
from node.http import read_capped
from node.p2p.torrentmeta import meta_from_info
from node.p2p.torrents import TorrentEngine

MAX_TORRENT_BYTES = 4 * 1024 * 1024
POLL_S = 0.1
STALL_S = 30.0  # no progress for this long: give up on BitTorrent for this file


class TorrentFetchFailed(CivitasError):
    code = "torrent_fetch_failed"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest().upper()


class TorrentFetcher:
    def __init__(self, state_dir: Path, *, dht: bool, allow_lan: bool) -> None:
        self.state_dir = state_dir
        cfg = TorrentSection(listen_port=0, dht=dht, allow_lan=allow_lan)
        self.engine = TorrentEngine(cfg, state_dir)

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    async def fetch(
        self, session: aiohttp.ClientSession, base_url: str, entry: dict[str, Any], dest: Path
    ) -> None:
        infohash, sha256 = entry.get("infohash"), entry["sha256"].upper()
        if not infohash:
            raise TorrentFetchFailed(f"{entry['name']} has no torrent")
        try:
            meta = meta_from_info(await self._info(session, base_url, infohash))
        except ValueError as exc:
            raise TorrentFetchFailed(f"the node's torrent is malformed: {exc}") from None
        if (
            meta.infohash != infohash
            or meta.size != entry["size"]
            or Path(meta.name).name != meta.name
        ):
            raise TorrentFetchFailed(f"the node's torrent for {entry['name']} does not match")
        directory = self.state_dir / "incoming" / infohash
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        self.engine.download(
            meta,
            directory,
            trackers=[f"{base_url}/announce"],
            web_seeds=[f"{base_url}/webseed/{sha256}"],
        )
        try:
            await self._wait(infohash)
        finally:
            self.engine.remove(infohash)
        fetched = directory / meta.name
        if await asyncio.to_thread(_sha256_of, fetched) != sha256:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise TorrentFetchFailed(f"{entry['name']} fetched by BitTorrent is corrupt")
        await asyncio.to_thread(os.replace, fetched, dest)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _info(self, session: aiohttp.ClientSession, base_url: str, infohash: str) -> bytes:
        url = f"{base_url}/federation/v1/torrents/{infohash}"
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise TorrentFetchFailed(f"{url} answered {resp.status}")
                body = await read_capped(resp.content, MAX_TORRENT_BYTES)
        except PayloadTooLarge:
            raise TorrentFetchFailed(f"{url} is too large for a torrent file") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TorrentFetchFailed(f"cannot get {url}: {exc}") from None
        try:
            decoded: Any = lt.bdecode(body)
            return bytes(lt.bencode(decoded[b"info"]))
        except (RuntimeError, KeyError, TypeError):
            raise TorrentFetchFailed(f"{url} is not a torrent file") from None

    async def _wait(self, infohash: str) -> None:
        loop = asyncio.get_running_loop()
        last_done, last_change = -1, loop.time()
        while True:
            status = self.engine.status(infohash)
            if status is None:
                raise TorrentFetchFailed("the download was removed")
            if status.error:
                raise TorrentFetchFailed(f"BitTorrent: {status.error}")
            if status.state in ("seeding", "finished") or (
                status.size and status.done >= status.size
            ):
                return
            if status.done != last_done:
                last_done, last_change = status.done, loop.time()
            elif loop.time() - last_change > STALL_S:
                raise TorrentFetchFailed(f"no BitTorrent progress in {STALL_S:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(POLL_S)
