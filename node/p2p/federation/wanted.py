"""Wanted files: the previews (and other blobs) projected records need, fetched until held.

A file is wanted when a record that needs it arrives (from the peer that sent it), and
whenever a reconciliation finds a shown record whose file the store lacks: at start
(so a ``kill -9`` mid-sync, a peer outage or a full disk never loses a file for good)
and every ``reconcile_s``. One background task fetches due files, a few at a time:
from the peer that sent the record first, then from every other peer
(``GET /federation/v1/blobs/{sha256}``), size-capped and checked against the SHA256.
Fairly (:mod:`.wanted_plan`): one request at a time to any one peer, so a peer whose
blobs stall holds one slot; the files of every source take turns, so no backlog (a push
flood of files nobody holds) starves the others; and a request that receives no byte for
``read_timeout_s`` fails, while a large file that keeps flowing may take its time.
A file no peer could give, or that could not be stored (a full disk is an ``OSError``
for that file, not an abort), is tried again later with exponential backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import sqlalchemy as sa

from node.db import Database
from node.p2p.federation.wanted_plan import FetchPlan, Job
from node.p2p.filestore import FileStore
from node.p2p.outgoing import PeerError, get_capped, refuse_private
from node.p2p.records import Record, now_ms
from node.p2p.tables import wanted_files
from node.tasks import stop_tasks, wait_event

log = logging.getLogger("civitas.wanted")
MAX_LISTED = 500  # wanted files one listing shows (the count is always complete)
BLOB_READ_TIMEOUT_S = 10.0  # a peer that sends no byte of a file this long fails it
MIN_RATE = 32 * 1024  # bytes a second a file's transfer is allowed at least (on average)


@dataclass(frozen=True)
class NeededFile:
    sha256: str  # uppercase hex
    size: int | None  # as the record states it; None: unknown


class FileSource(Protocol):
    """A peer that may hold a file (``Federation.list_peers`` gives these)."""

    @property
    def did(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def explicit(self) -> bool: ...


class FileNeeds(Protocol):
    """What projected records need (the catalog answers: ``node/catalog/needed_files.py``)."""

    async def missing(self, *, deep: bool = False) -> list[NeededFile]:
        """Files shown records need that the store has no row for; ``deep``: also those
        whose row remains but whose file is gone from the disk."""
        ...

    async def needed_among(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these files some shown record still needs."""
        ...


Sources = Callable[[], Awaitable[Sequence[FileSource]]]


def files_needed(record: Record) -> list[NeededFile]:
    """The files a record needs on this node: an image's own file, today."""
    sha = record.body.get("sha256") if record.type == "image" else None
    if not isinstance(sha, bytes) or len(sha) != 32:
        return []
    size = record.body.get("size")
    return [NeededFile(sha.hex().upper(), size if isinstance(size, int) else None)]


def _preferred(item: Wanted, peers: dict[str, FileSource]) -> list[str]:
    """The peers to ask for ``item``: the one that sent its record first."""
    return sorted(peers, key=lambda did: did != item.source)


@dataclass(frozen=True)
class _Outcome:
    """What one request for a file came to: ``done`` (stored, held already, or failed
    for good: ``failed`` says why), else ``error`` and the next peer is asked."""

    done: bool = False
    stored: int = 0
    error: str | None = None
    failed: str | None = None


def retry_after_ms(attempts: int, base_s: float) -> int:
    """Backoff after ``attempts`` failed tries: base, 2 x base, 4 x base … at most an hour."""
    return int(min(3600.0, base_s * 2 ** max(0, attempts - 1)) * 1000)


@dataclass(frozen=True)
class Wanted:
    sha256: str
    size: int | None
    source: str | None
    added: int
    attempts: int
    next_try: int
    last_error: str | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


class WantedFiles:
    def __init__(
        self,
        db: Database,
        store: FileStore,
        sources: Sources,
        needs: FileNeeds,
        *,
        max_bytes: int = 50 * 1024 * 1024,
        concurrency: int = 4,
        reconcile_s: int = 300,
        allow_private_announced: bool = False,
    ) -> None:
        self.db = db
        self.store = store
        self.sources = sources
        self.needs = needs
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.reconcile_s = reconcile_s
        self.allow_private_announced = allow_private_announced
        self.retry_base_s = 10.0
        self.per_peer = 1  # requests to one peer at once: a stalling peer holds one slot
        self.read_timeout_s = BLOB_READ_TIMEOUT_S
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fetching = asyncio.Lock()

    # --- the queue ------------------------------------------------------------------------

    async def want(
        self, files: Iterable[NeededFile], source: str | None = None, *, known_missing: bool = False
    ) -> int:
        """Queue files this node lacks (due now); how many were new to the queue.
        ``known_missing``: the caller saw they are not in the store (no check per file)."""
        fresh = {f.sha256.upper(): f for f in files if self._fits(f)}
        if not fresh:
            return 0
        async with self.db.read() as conn:
            queued = set(
                (
                    await conn.execute(
                        sa.select(wanted_files.c.sha256).where(
                            wanted_files.c.sha256.in_(list(fresh))
                        )
                    )
                ).scalars()
            )
        missing = [f for sha, f in fresh.items() if sha not in queued]
        if not known_missing:
            missing = [f for f in missing if await self.store.local_path(f.sha256) is None]
        if not missing:
            return 0
        now = now_ms()
        rows = [
            {"sha256": f.sha256.upper(), "size": f.size, "source": source, "added": now}
            | {"attempts": 0, "next_try": now}
            for f in missing
        ]
        async with self.db.write() as conn:
            # Another writer may have queued one since the read (writes are serialized by
            # Database.write, so this check in the transaction is enough): skip those.
            again = set(
                (
                    await conn.execute(
                        sa.select(wanted_files.c.sha256).where(
                            wanted_files.c.sha256.in_([r["sha256"] for r in rows])
                        )
                    )
                ).scalars()
            )
            rows = [r for r in rows if r["sha256"] not in again]
            if rows:
                await conn.execute(wanted_files.insert(), rows)
        return len(rows)

    async def want_for(self, records: Sequence[Record], source: str | None) -> int:
        """Queue the files new records need, from ``source`` first, and fetch them now."""
        added = await self.want([f for r in records for f in files_needed(r)], source)
        if added:
            self.nudge()
        return added

    def _fits(self, file: NeededFile) -> bool:
        if file.size is not None and not 0 <= file.size <= self.max_bytes:
            log.info("wanted file over the cap", extra={"sha256": file.sha256, "size": file.size})
            return False
        return True

    async def reconcile(self, *, deep: bool = False) -> int:
        """Queue every file projected records need and the store lacks; drop queued files
        no record needs any more. How many were queued anew."""
        started = now_ms()
        added = await self.want(await self.needs.missing(deep=deep), known_missing=True)
        async with self.db.read() as conn:
            stale = sa.select(wanted_files.c.sha256).where(wanted_files.c.added <= started)
            queued = list((await conn.execute(stale)).scalars())
        gone = set(queued) - await self.needs.needed_among(queued)
        if gone:
            async with self.db.write() as conn:
                await conn.execute(
                    wanted_files.delete().where(
                        wanted_files.c.sha256.in_(list(gone)), wanted_files.c.added <= started
                    )
                )
        if added:
            log.info("files wanted after reconciling", extra={"count": added, "deep": deep})
            self.nudge()
        return added

    async def listing(self, limit: int = MAX_LISTED) -> tuple[int, list[Wanted]]:
        """How many files are wanted, and the first ``limit`` of them, soonest due first."""
        async with self.db.read() as conn:
            total = await conn.scalar(sa.select(sa.func.count()).select_from(wanted_files))
            rows = await conn.execute(
                sa.select(wanted_files)
                .order_by(wanted_files.c.next_try, wanted_files.c.sha256)
                .limit(limit)
            )
            return int(total or 0), [Wanted(**row._mapping) for row in rows]

    async def retry_all(self) -> int:
        """Make every wanted file due now (an operator fixed the disk or the peer)."""
        async with self.db.write() as conn:
            done = await conn.execute(wanted_files.update().values(next_try=now_ms()))
        self.nudge()
        return int(done.rowcount or 0)

    # --- fetching ---------------------------------------------------------------------------

    async def fetch_due(self) -> int:
        """Fetch every file now due, and any that become due meanwhile, fairly
        (:mod:`.wanted_plan`: ``concurrency`` requests at once, ``per_peer`` to one peer,
        sources taking turns); how many were stored."""
        stored = 0
        async with self._fetching:
            plan: FetchPlan[Wanted] = FetchPlan(self.concurrency, self.per_peer)
            running: dict[asyncio.Task[_Outcome], Job[Wanted]] = {}
            peers: dict[str, FileSource] = {}
            load = True
            try:
                while True:
                    if load:
                        self._wake.clear()
                        peers |= {s.did: s for s in await self.sources() if not s.blocked}
                        for item in await self._due_fairly(plan):
                            plan.add(Job(item, _preferred(item, peers)))
                        load = False
                    for job in plan.exhausted():
                        await self._failed(job.item, "; ".join(job.errors[-3:]) or "no peer to ask")
                    for job, did in plan.next_starts():
                        task = asyncio.create_task(self._attempt(job.item, peers[did]))
                        running[task] = job
                    if not running:
                        return stored
                    woken = asyncio.create_task(self._wake.wait())
                    done, _ = await asyncio.wait(
                        [*running, woken], return_when=asyncio.FIRST_COMPLETED
                    )
                    woken.cancel()
                    load = woken in done
                    for task in [t for t in running if t in done]:
                        job = running.pop(task)
                        try:
                            outcome = task.result()
                        except Exception as exc:  # that file's failure, not the others'
                            log.exception("wanted file failed", extra={"sha256": job.item.sha256})
                            outcome = _Outcome(done=True, failed=f"{type(exc).__name__}: {exc}")
                        plan.finished(job.item.sha256, done=outcome.done)
                        if outcome.error is not None:
                            job.errors.append(outcome.error)
                        if outcome.failed is not None:
                            await self._failed(job.item, outcome.failed)
                        stored += outcome.stored
                        load = True  # a slot is free: due files may fill it
            finally:
                for task in running:
                    task.cancel()

    async def _due_fairly(self, plan: FetchPlan[Wanted]) -> list[Wanted]:
        """Due files not in the plan yet, at most ``concurrency`` held per source: a
        source with thousands waiting never keeps another's out of the plan."""
        now, held = now_ms(), list(plan.jobs)
        due = wanted_files.c.next_try <= now
        out: list[Wanted] = []
        async with self.db.read() as conn:
            sources = list(
                (
                    await conn.execute(sa.select(wanted_files.c.source).where(due).distinct())
                ).scalars()
            )
            for source in sources:
                room = self.concurrency - plan.loaded_from(source)
                if room <= 0:
                    continue
                rows = await conn.execute(
                    sa.select(wanted_files)
                    .where(
                        due,
                        wanted_files.c.source.is_(None)
                        if source is None
                        else wanted_files.c.source == source,
                        wanted_files.c.sha256.not_in(held),
                    )
                    .order_by(wanted_files.c.attempts, wanted_files.c.added)
                    .limit(room)
                )
                out += [Wanted(**r._mapping) for r in rows]
        return out

    def _timeout(self, limit: int) -> aiohttp.ClientTimeout:
        """No byte for ``read_timeout_s``: the request fails; a file that keeps flowing
        may take as long as it needs at ``MIN_RATE`` bytes a second, plus a minute."""
        return aiohttp.ClientTimeout(
            total=60 + limit / MIN_RATE, connect=10, sock_read=self.read_timeout_s
        )

    async def _attempt(self, item: Wanted, source: FileSource) -> _Outcome:
        """Ask one peer for one file, and store it if its bytes match."""
        if await self.store.local_path(item.sha256) is not None:
            await self._done(item.sha256)
            return _Outcome(done=True)
        limit = self.max_bytes if item.size is None else min(self.max_bytes, item.size)
        public_only = not source.explicit and not self.allow_private_announced
        try:
            if public_only:
                await refuse_private(source.url)
            data = await get_capped(
                f"{source.url}/federation/v1/blobs/{item.sha256}",
                limit,
                self._timeout(limit),
                public_only=public_only,
            )
        except PeerError as exc:
            return _Outcome(error=exc.message)
        if hashlib.sha256(data).hexdigest().upper() != item.sha256:
            log.warning("wanted file does not match its SHA256", extra={"peer": source.did})
            return _Outcome(error=f"{source.url} sent bytes that do not match the SHA256")
        try:
            await self._store(item.sha256, data)
        except OSError as exc:  # a full disk: this file fails, the others go on
            log.warning("wanted file not stored", extra={"sha256": item.sha256, "why": exc})
            return _Outcome(done=True, failed=f"cannot store the file: {exc.strerror or exc}")
        return _Outcome(done=True, stored=1)

    async def _store(self, sha256: str, data: bytes) -> None:
        temp = self.store.temp_path()
        try:
            await asyncio.to_thread(temp.write_bytes, data)
            path = await asyncio.to_thread(self.store.commit_temp, temp, sha256)
        except OSError:
            await asyncio.to_thread(self.store.discard, temp)
            raise
        async with self.db.write() as conn:
            await self.store.add_row(conn, sha256, len(data), path, in_place=False)
            await conn.execute(wanted_files.delete().where(wanted_files.c.sha256 == sha256))

    async def _done(self, sha256: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(wanted_files.delete().where(wanted_files.c.sha256 == sha256))

    async def _failed(self, item: Wanted, why: str) -> None:
        attempts = item.attempts + 1
        log.info("wanted file not fetched", extra={"sha256": item.sha256, "why": why})
        async with self.db.write() as conn:
            await conn.execute(
                wanted_files.update()
                .where(wanted_files.c.sha256 == item.sha256)
                .values(
                    attempts=attempts,
                    last_error=why[:1000],
                    next_try=now_ms() + retry_after_ms(attempts, self.retry_base_s),
                )
            )

    # --- background -------------------------------------------------------------------------

    def nudge(self) -> None:
        """Files became wanted (or due): fetch without waiting for the timer."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="wanted-files")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        self._task = None

    async def _next_due_in_s(self) -> float | None:
        async with self.db.read() as conn:
            due = await conn.scalar(sa.select(sa.func.min(wanted_files.c.next_try)))
        return None if due is None else max(0.0, (int(due) - now_ms()) / 1000)

    async def _loop(self) -> None:
        deep, last_reconcile = True, float("-inf")
        while True:
            self._wake.clear()
            try:
                if time.monotonic() - last_reconcile >= self.reconcile_s:
                    await self.reconcile(deep=deep)  # deep at start: files gone from disk too
                    deep, last_reconcile = False, time.monotonic()
                await self.fetch_due()
                wait = self.reconcile_s - (time.monotonic() - last_reconcile)
                due_in = await self._next_due_in_s()
                if due_in is not None:
                    wait = min(wait, due_in)
            except Exception:  # the loop must outlive any one bad round
                log.exception("wanted files round failed")
                wait = self.retry_base_s
            await wait_event(self._wake, max(0.05, wait))
