"""Limits on ingest: how many files are taken in and images decoded at once, and an
upload's early refusal."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

from aiohttp import StreamReader

from node.background import run_in_process
from node.catalog.safetensors import U64_MAX, header_length, refuse_pickle
from node.errors import CivitasError

DEFAULT_MAX_INGESTS = 4
DEFAULT_MAX_DECODES = 2
DEFAULT_PER_ACCOUNT = 2
DEFAULT_MIN_RATE = 16 * 1024  # bytes a second: a 6 GB checkpoint in under 5 days
UPLOAD_GRACE_S = 30.0
T = TypeVar("T")
INGEST_RETRY_AFTER_S = 30


class IngestBusy(CivitasError):
    """Every ingest slot is taken: an upload is refused before its body is read."""

    code = "ingest_busy"
    status = 503
    retry_after_s = INGEST_RETRY_AFTER_S


_holding_slot: ContextVar[bool] = ContextVar("holding_ingest_slot", default=False)


class AccountIngestsBusy(CivitasError):
    """One account already sends as many files as it may at once."""

    code = "uploads_busy"
    status = 429
    retry_after_s = INGEST_RETRY_AFTER_S


class UploadTooSlow(CivitasError):
    code = "upload_too_slow"
    status = 408


class IngestSlots:
    """At most ``limit`` files are received, hashed and header-checked at once, and at
    most ``per_account`` of them for one account.

    Each ingest costs a bounded amount (hash queue, header parse, preview bytes), so the
    node's memory for ingest is bounded by ``limit`` times that. An HTTP upload that finds
    every slot taken is answered 503 with ``Retry-After`` at once, before its body is
    read: waiting would keep its connection and unread body open for as long as the
    others take (minutes for a checkpoint). One that finds its account's slots taken is
    answered 429 the same way, so one member cannot hold every slot. A file on the
    node's own disk (admin, CLI, compute results) waits for a slot instead. A task that
    holds a slot re-enters freely, so a route can take it before reading previews and
    the publisher inside it again. An HTTP upload takes its slot with :meth:`upload`,
    only once its sender is authenticated, and lets it go when its body falls below
    ``min_rate`` bytes a second on average once ``grace_s`` has passed (:meth:`paced`).
    """

    def __init__(
        self,
        limit: int = DEFAULT_MAX_INGESTS,
        per_account: int = DEFAULT_PER_ACCOUNT,
        min_rate: int = DEFAULT_MIN_RATE,
        grace_s: float = UPLOAD_GRACE_S,
    ) -> None:
        self.limit = limit
        self.per_account = per_account
        self.min_rate = min_rate
        self.grace_s = grace_s
        self._free = asyncio.Semaphore(limit)
        self.accounts: Counter[str] = Counter()  # slots held, by account

    @asynccontextmanager
    async def hold(self, *, wait: bool, account: str | None = None) -> AsyncIterator[None]:
        if _holding_slot.get():
            yield
            return
        if account is not None and self.accounts[account] >= self.per_account:
            raise AccountIngestsBusy(
                f"you already send {self.per_account} file(s) at once "
                f"(server.max_uploads_per_account): retry in {INGEST_RETRY_AFTER_S} s"
            )
        if not wait and self._free.locked():
            raise IngestBusy(
                f"this node is already ingesting {self.limit} files: "
                f"retry in {INGEST_RETRY_AFTER_S} s"
            )
        if account is not None:
            self.accounts[account] += 1
        try:
            await self._free.acquire()
            token = _holding_slot.set(True)
            try:
                yield
            finally:
                _holding_slot.reset(token)
                self._free.release()
        finally:
            if account is not None:
                self.accounts[account] -= 1
                if self.accounts[account] <= 0:
                    del self.accounts[account]

    @asynccontextmanager
    async def upload(self, account: str | None, body: StreamReader) -> AsyncIterator[None]:
        """An HTTP upload's slot, for an authenticated sender: the did of its ``account``
        (429 past its share) or None for the node's admin token; 503 when every slot is
        taken. Held while ``body`` keeps up the minimum rate (:meth:`paced`). Taken
        before a byte of the body is read, once the sender is known: an anonymous
        request must be refused before this, never given a slot."""
        async with self.hold(wait=False, account=account), self.paced(body):
            yield

    @asynccontextmanager
    async def paced(self, body: StreamReader) -> AsyncIterator[None]:
        """Run the block while the request ``body`` arrives at ``min_rate`` bytes a second
        on average after ``grace_s``, counted over the whole body (preamble, every part,
        boundaries) until its last byte is in; else 408, and the slot is free again.

        A trickle (a byte every few seconds, never a stall long enough for the body
        timeout) would otherwise hold a slot for as long as its sender likes, in whichever
        part it trickles. Once the whole body is in, the node's own work on it (hashing,
        checks, decodes) is not timed."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        watch: asyncio.TimerHandle | None = None
        deadline = asyncio.timeout(None)

        def check() -> None:
            nonlocal watch
            if body.is_eof():
                return
            due = start + self.grace_s + body.total_bytes / self.min_rate
            if loop.time() >= due:
                deadline.reschedule(loop.time())  # the block is cancelled: 408 below
            else:
                watch = loop.call_at(due, check)

        try:
            async with deadline:
                watch = loop.call_at(start + self.grace_s, check)
                try:
                    yield
                finally:
                    watch.cancel()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise UploadTooSlow(
                f"the upload fell below {self.min_rate:,} bytes a second "
                f"(server.min_upload_bytes_per_s, after {self.grace_s:g} s): "
                f"{body.total_bytes:,} bytes in {loop.time() - start:,.0f} s"
            ) from None


class ImageDecodes:
    """At most ``limit`` images decoded at once on this node, whoever asks: uploads'
    previews, training inputs, compute outputs, resized previews, blurhashes.

    One decode may hold up to ``images.MAX_DECODE_BYTES``, so image decoding never holds
    more than ``limit`` times that. Callers wait for a slot (a decode takes a second at
    most); the work runs in a decode process, at a lower CPU priority than the event loop
    and with a GIL of its own (node/background.py), so ``fn`` must be a module-level
    function whose arguments and result pickle. A caller cancelled while its decode runs
    keeps the slot until the decode ends, since it cannot be stopped.
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
            work = asyncio.ensure_future(run_in_process(fn, *args))
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
