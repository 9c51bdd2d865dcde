"""A worker's connection to one node: signed requests, and model files cached by SHA256.

Every request is signed with the worker key (:mod:`node.compute.auth`); registration is
also authenticated as the donating user (``--token``). Model files are fetched from the
node's web seed (``/webseed/{sha256}``) or, when it lacks them, its download route (which
sends the worker on to a peer that holds the file), checked against their SHA256 while
they stream, and kept in the cache under their SHA256 so no job fetches a file twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp

from node.client import read_answer
from node.compute.auth import sign_digest
from node.compute.torrent_fetch import TorrentFetcher, TorrentFetchFailed
from node.errors import CivitasError
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey

log = logging.getLogger("civitas.worker")
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
CHUNK = 1024 * 1024


class NodeUnreachable(CivitasError):
    code = "node_unreachable"
    status = 503


class NodeLink:
    def __init__(self, base_url: str, key: SigningKey, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.session = session
        self.did = ""  # the node's did, read from /.well-known/civitas

    async def connect(self) -> None:
        info = await self._json("GET", "/.well-known/civitas", signed=False)
        self.did = info["did"]

    async def _json(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        signed: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = json.dumps(data).encode() if data is not None else b""
        sent = dict(headers or {})
        if data is not None:
            sent["Content-Type"] = "application/json"
        if signed:
            sent.update(sign_request(self.key, method, path, body, self.did))
        try:
            async with self.session.request(
                method, self.base_url + path, data=body or None, headers=sent
            ) as resp:
                return await read_answer(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnreachable(f"cannot reach {self.base_url}: {exc}") from None

    async def register(self, token: str | None, details: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        result: dict[str, Any] = await self._json(
            "POST", "/api/compute/workers", details, headers=headers
        )
        return result

    async def pop(self, kinds: list[str], max_pixels: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "POST", "/api/compute/pop", {"kinds": kinds, "max_pixels": max_pixels}
        )
        return result

    async def progress(self, job_id: int, report: dict[str, Any]) -> None:
        await self._json("POST", f"/api/compute/jobs/{job_id}/progress", report)

    async def fail(self, job_id: int, error: str) -> None:
        await self._json("POST", f"/api/compute/jobs/{job_id}/fail", {"error": error[:2000]})

    async def result(self, job_id: int, outputs: list[dict[str, Any]]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._json(
            "POST", f"/api/compute/jobs/{job_id}/result", {"outputs": outputs}
        )
        return answer

    async def upload(self, job_id: int, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        path = f"/api/compute/jobs/{job_id}/outputs/{digest.upper()}"
        headers = sign_digest(self.key, "PUT", path, digest, self.did)
        try:
            async with self.session.put(self.base_url + path, data=data, headers=headers) as resp:
                await read_answer(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnreachable(f"cannot reach {self.base_url}: {exc}") from None

    async def job_input(self, job_id: int, sha256: str) -> bytes:
        path = f"/api/compute/jobs/{job_id}/inputs/{sha256}"
        headers = sign_request(self.key, "GET", path, b"", self.did)
        async with self.session.get(self.base_url + path, headers=headers) as resp:
            if resp.status >= 400:
                await read_answer(resp)
            data = await resp.read()
        if hashlib.sha256(data).hexdigest().upper() != sha256.upper():
            raise CivitasError(f"input {sha256[:12]}… from {self.base_url} is corrupt")
        return data

    async def fetch(self, entry: dict[str, Any], dest: Path) -> None:
        """Download a job's file to ``dest``, refusing bytes that do not hash to its SHA256."""
        sha256 = entry["sha256"].upper()
        for path in (f"/webseed/{sha256}", f"/api/download/models/{entry['model_version_id']}"):
            async with self.session.get(self.base_url + path) as resp:
                if resp.status == 404:
                    continue
                if resp.status >= 400:
                    await read_answer(resp)
                temp = dest.with_name(dest.name + ".part")
                hasher = hashlib.sha256()
                handle = await asyncio.to_thread(open, temp, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        hasher.update(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await asyncio.to_thread(handle.close)
                if hasher.hexdigest().upper() != sha256:
                    await asyncio.to_thread(temp.unlink, missing_ok=True)
                    raise CivitasError(f"{entry['name']} from {self.base_url} is corrupt")
                await asyncio.to_thread(os.replace, temp, dest)
                return
        raise CivitasError(
            f"neither {self.base_url} nor its peers hold {entry['name']} ({sha256[:12]}…)"
        )


class ModelCache:
    """Model files by SHA256 in one folder; a file is fetched once, however many jobs.

    With a :class:`TorrentFetcher`, files come by BitTorrent first (the job's infohash),
    then over HTTP if that fails; ``sources`` says which way each file came.
    """

    def __init__(self, root: Path, torrents: TorrentFetcher | None = None) -> None:
        self.root = root
        self.torrents = torrents
        self.sources: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha256: str) -> Path:
        sha256 = sha256.upper()
        return self.root / sha256[:2] / f"{sha256}.safetensors"

    async def ensure(self, link: NodeLink, entry: dict[str, Any]) -> Path:
        path = self.path_for(entry["sha256"])
        async with self._locks.setdefault(entry["sha256"], asyncio.Lock()):
            if not await asyncio.to_thread(path.is_file):
                await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                await self._fetch(link, entry, path)
        return path

    async def _fetch(self, link: NodeLink, entry: dict[str, Any], path: Path) -> None:
        sha256 = entry["sha256"].upper()
        if self.torrents is not None and entry.get("infohash"):
            try:
                await self.torrents.fetch(link.session, link.base_url, entry, path)
                self.sources[sha256] = "bittorrent"
                return
            except (TorrentFetchFailed, OSError) as exc:
                message = exc.message if isinstance(exc, TorrentFetchFailed) else str(exc)
                log.warning("BitTorrent failed; fetching over HTTP", extra={"error": message})
        await link.fetch(entry, path)
        self.sources[sha256] = "http"
