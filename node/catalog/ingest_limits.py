"""Limits on ingest: how many files are taken in and images decoded at once, and an
upload's early refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

from node.catalog.safetensors import U64_MAX, header_length, refuse_pickle
from node.errors import CivitasError

DEFAULT_MAX_INGESTS = 4
DEFAULT_MAX_DECODES = 2
T = TypeVar("T")
INGEST_RETRY_AFTER_S = 30


class IngestBusy(CivitasError):
    """Every ingest slot is taken: an upload is refused before its body is read."""

    code = "ingest_busy"
    status = 503
    retry_after_s = INGEST_RETRY_AFTER_S


_holding_slot: ContextVar[bool] = ContextVar("holding_ingest_slot", default=False)


class IngestSlots:
    """At most ``limit`` files are received, hashed and header-checked at once.

    Each ingest costs a bounded amount (hash queue, header parse, preview bytes), so the
    node's memory for ingest is bounded by ``limit`` times that. An HTTP upload that finds
    every slot taken is answered 503 with ``Retry-After`` at once, before its body is
    read: waiting would keep its connection and unread body open for as long as the
    others take (minutes for a checkpoint). A file on the node's own disk (admin, CLI,
    compute results) waits for a slot instead. A task that holds a slot re-enters freely,
    so a route can take it before reading previews and the publisher inside it again.
    """

    def __init__(self, limit: int = DEFAULT_MAX_INGESTS) -> None:
        self.limit = limit
        self._free = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def hold(self, *, wait: bool) -> AsyncIterator[None]:
        if _holding_slot.get():
            yield
            return
        if not wait and self._free.locked():
            raise IngestBusy(
                f"this node is already ingesting {self.limit} files: "
                f"retry in {INGEST_RETRY_AFTER_S} s"
            )
        await self._free.acquire()
        token = _holding_slot.set(True)
        try:
            yield
        finally:
            _holding_slot.reset(token)
            self._free.release()


class ImageDecodes:
    """At most ``limit`` images decoded at once on this node, whoever asks: uploads'
    previews, training inputs, compute outputs, resized previews, blurhashes.

    One decode may hold up to ``images.MAX_DECODE_BYTES``, so image decoding never holds
    more than ``limit`` times that. Callers wait for a slot (a decode takes a second at
    most); the work runs in a thread. A caller cancelled while its decode runs keeps the
    slot until the thread ends, since a thread cannot be stopped.
    """

    def __init__(self, limit: int = DEFAULT_MAX_DECODES) -> None:
        self.limit = limit
        self._free = asyncio.Semaphore(limit)
        self.active = 0
        self.peak = 0  # most decodes seen at once
        self.done = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._free:
            self.active += 1
            self.peak = max(self.peak, self.active)
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            try:
                return await asyncio.shield(work)
            finally:
                if not work.done():
                    await asyncio.wait([work])
                if not work.cancelled():
                    work.exception()  # retrieved: a cancelled caller's error is not lost noise
                self.active -= 1
                self.done += 1


async def checked_start(chunks: AsyncIterator[bytes], filename: str) -> AsyncIterator[bytes]:
    """Pass an upload's bytes through, refusing a pickle or a header length over the limit
    as soon as the first bytes arrive, before the rest is received or stored."""
    head = b""
    async for chunk in chunks:
        if len(head) < 16:
            head += chunk[: 16 - len(head)]
            if len(head) >= 16:
                refuse_pickle(head, filename)
                header_length(head[:8], U64_MAX)  # the real size is checked at the end
        yield chunk
