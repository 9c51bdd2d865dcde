"""A fake Civitas peer: a real aiohttp server on 127.0.0.1 that misbehaves on purpose.

It speaks ``/.well-known/civitas``, ``GET /federation/v1/records`` and ``POST
/federation/v1/inbox`` (verifying the sender's signature, as a node does), with its own
node key, and serves its records honestly or in one of the hostile :data:`MODES`. It
counts every request by path, so a test can bound what the node under test asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from node.errors import RecordError
from node.p2p.federation import wire
from node.p2p.federation.pull import MAX_PAGE_BYTES
from node.p2p.federation.signing import RequestVerifier
from node.p2p.records import verify_record
from tests.p2p.hostile import forger

RECORDS = "/federation/v1/records"
INBOX = "/federation/v1/inbox"
WELL_KNOWN = "/.well-known/civitas"
BLOBS = "/federation/v1/blobs/"

MODES = {
    "good": "serves its log honestly",
    "empty_more": "an empty page that says more: true, forever",
    "garbage": "a records page that is not msgpack",
    "error500": "500 for every records page",
    "huge": "a records page over the node's byte cap",
    "too_many": "more entries than the node asked for",
    "stuck_cursor": "the same first entries whatever the cursor",
    "seq_after": "one entry whose seq is the cursor itself",
    "epoch_flap": "an honest page, under a new log epoch each time",
    "stall": "a records page that never comes (until released)",
    "trickle": "honest, endless, slow pages (one every trickle_s)",
    "unknown_flood": "endless pages of records of an unknown type",
}


def entry_id(raw: bytes) -> bytes:
    """A record's id; a record too broken to have one gets a stand-in (poison is served too)."""
    try:
        return verify_record(raw).id
    except RecordError:
        return hashlib.sha256(raw).digest()


class FakePeer:
    def __init__(
        self, mode: str = "good", records: Sequence[bytes] = (), label: str = "fake"
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.key = forger.key(f"node {label}")
        self.records = list(records)
        self.requests: Counter[str] = Counter()
        self.pushed: list[bytes] = []  # records received in the inbox
        self.asked = asyncio.Event()  # a records page was asked for
        self.release = asyncio.Event()  # lets a stalled page go
        self.got_push = asyncio.Event()
        self.trickle_s = 0.05
        # Besides the records pages, whatever the mode:
        self.stall_well_known = False  # /.well-known never answers (until released)
        self.refuse_pushes = False  # the inbox answers 403: this node is not its peer
        self.blob_stall_s = 0.0  # each blob answer waits this long before its first byte
        self.blob_chunk_s = 0.0  # else, if set: sent in 16 KiB chunks this far apart
        self.blobs: dict[str, bytes] = {}  # files it serves, by uppercase SHA256
        self.blobs_asked: Counter[str] = Counter()
        self.epoch = "fake-epoch"
        self._pages = 0
        self._junk: dict[int, bytes] = {}
        self._verifier = RequestVerifier(self.key.did)
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def did(self) -> str:
        return self.key.did

    async def start(self) -> FakePeer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get(WELL_KNOWN, self._well_known)
        app.router.add_get(RECORDS, self._page)
        app.router.add_post(INBOX, self._inbox)
        app.router.add_get(BLOBS + "{sha256}", self._blob)
        app.middlewares.append(self._count)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[request.path] += 1
        return await handler(request)  # type: ignore[no-any-return]

    async def _well_known(self, request: web.Request) -> web.Response:
        if self.stall_well_known:
            await self.release.wait()
        return web.json_response(
            {
                "did": self.did,
                "name": f"fake {self.mode}",
                "software": "fake/0",
                "epoch": self.epoch,
            }
        )

    async def _inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.refuse_pushes:
            return web.json_response(
                {"error": "forbidden", "message": "not a peer of this node"}, status=403
            )
        self._verifier.verify(request.method, request.path_qs, body, request.headers)
        batch = wire.decode_batch(body)
        self.pushed += batch
        self.got_push.set()
        return web.json_response({"accepted": len(batch), "rejected": []})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        sha256 = request.match_info["sha256"].upper()
        self.blobs_asked[sha256] += 1
        if self.blob_stall_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.blob_stall_s)
        if sha256 not in self.blobs:
            return web.json_response({"error": "not_found", "message": "no such file"}, status=404)
        data = self.blobs[sha256]
        if not self.blob_chunk_s:
            return web.Response(body=data, content_type="application/octet-stream")
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(data)
        await resp.prepare(request)
        for at in range(0, len(data), 16 * 1024):
            await resp.write(data[at : at + 16 * 1024])
            await asyncio.sleep(self.blob_chunk_s)
        await resp.write_eof()
        return resp

    # --- the records pages -----------------------------------------------------------------

    def honest(self, after: int, limit: int, records: Sequence[bytes] | None = None) -> wire.Page:
        records = self.records if records is None else records
        chosen = records[after : after + limit]
        entries = [
            wire.PageEntry(after + i + 1, entry_id(raw), "visible", raw)
            for i, raw in enumerate(chosen)
        ]
        return wire.Page(self.epoch, len(records), entries, after + limit < len(records))

    def junk(self, after: int, limit: int, known: bool = False) -> wire.Page:
        """Records made up as asked for: of an unknown type, or ``known`` profiles."""
        for seq in range(after + 1, after + limit + 1):
            if seq not in self._junk:
                self._junk[seq] = (
                    forger.forge(self.key, "profile", {"name": f"trickle {seq}"})
                    if known
                    else forger.unknown(self.key, 1, start=seq)[0]
                )
        entries = [
            wire.PageEntry(s, verify_record(self._junk[s]).id, "visible", self._junk[s])
            for s in range(after + 1, after + limit + 1)
        ]
        return wire.Page(self.epoch, after + limit + 1, entries, True)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 100))
        self._pages += 1
        self.asked.set()
        page = await self._answer(after, limit)
        if isinstance(page, web.StreamResponse):
            return page
        return web.Response(body=wire.encode_page(page), content_type=wire.MSGPACK)

    async def _answer(self, after: int, limit: int) -> wire.Page | web.StreamResponse:
        mode = self.mode
        if mode == "empty_more":
            return wire.Page(self.epoch, 10**6, [], True)
        if mode == "garbage":
            return web.Response(body=b"\xc1 not msgpack \xc1" * 64, content_type=wire.MSGPACK)
        if mode == "error500":
            return web.Response(status=500, text="internal error")
        if mode == "huge":
            return web.Response(body=b"\x00" * (MAX_PAGE_BYTES + 1024), content_type=wire.MSGPACK)
        if mode == "too_many":
            return self.honest(after, limit + 1)
        if mode == "stuck_cursor":
            page = self.honest(0, min(limit, 5))
            return wire.Page(page.epoch, page.high, page.entries, True)
        if mode == "seq_after":
            raw = self.records[0]
            entry = wire.PageEntry(after, entry_id(raw), "visible", raw)
            return wire.Page(self.epoch, after + 10, [entry], True)
        if mode == "epoch_flap":
            self.epoch = f"epoch-{self._pages}"
            return self.honest(after, limit)
        if mode == "stall":
            await self.release.wait()
            return self.honest(after, limit)
        if mode == "trickle":
            await asyncio.sleep(self.trickle_s)
            return self.junk(after, 1, known=True)
        if mode == "unknown_flood":
            return self.junk(after, limit)
        return self.honest(after, limit)


async def push(peer: FakePeer, node_url: str, node_did: str, raws: Sequence[bytes]) -> Any:
    """Push ``raws`` to a node's inbox, signed by the fake peer's node key."""
    import aiohttp

    from node.p2p.federation.signing import sign_request

    body = wire.encode_batch(list(raws))
    headers = sign_request(peer.key, "POST", INBOX, body, node_did)
    async with (
        aiohttp.ClientSession() as session,
        session.post(node_url + INBOX, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()
