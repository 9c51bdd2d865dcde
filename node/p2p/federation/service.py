"""Peering and sync: pull every peer's log with a cursor, push news to their inboxes.

Peering is explicit: an operator adds a peer by URL and the node learns its did from
``/.well-known/civitas``. Pull repairs everything push misses; a peer whose log epoch
changed (restored from a backup) is read again from the start. A page's valid records
are appended and projected in one transaction; a bad record is skipped and logged, never
allowed to block the rest. Image previews named by new records are fetched from the peer
that sent them, size-capped and checked against their SHA256.

A round pulls from every peer at once (at most ``limits.concurrency`` together), each
peer in its own task within its budgets (:mod:`node.p2p.federation.budgets`): one slow,
failing or hostile peer ends only its own turn, never the round, and never holds up the
pushes to the others. Removing or blocking a peer cancels its running turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sqlalchemy as sa

from node.db import Database
from node.errors import BadRequest, CivitasError, Conflict, NotFound, RecordError
from node.p2p.federation import wire
from node.p2p.federation.budgets import (
    UNKNOWN_OVER_BUDGET,
    UNLIMITED,
    PeerBudget,
    PeerMisbehaved,
    PullLimits,
    RoundTally,
)
from node.p2p.federation.pull import MAX_PAGE_BYTES, MAX_SEQ, PAGE, PullCursor, decode
from node.p2p.federation.rounds import SyncRounds
from node.p2p.federation.signing import sign_request
from node.p2p.federation.wanted import WantedFiles
from node.p2p.filestore import FileStore
from node.p2p.keys import SigningKey
from node.p2p.log import RecordLog, Refused, get_meta
from node.p2p.outgoing import (
    TIMEOUT,
    PeerError,
    client_session,
    get_capped,
    refuse_private,
    unreachable,
)
from node.p2p.records import Record, now_ms, sign_record, verify_record
from node.p2p.tables import nodes, peers, records

log = logging.getLogger("civitas.federation")


class TooManyRecords(CivitasError):
    code = "too_many_records"
    status = 429


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass(frozen=True)
class Peer:
    did: str
    url: str
    name: str
    epoch: str | None
    cursor: int
    pushed: int
    blocked: bool
    last_sync: int | None
    last_error: str | None
    their_high: int = 0
    failures: int = 0
    failing_since: int | None = None
    next_try: int | None = None
    explicit: bool = True
    last_accepted: int = 0  # new records in the last round's pull
    last_refused: dict[str, int] = field(default_factory=dict)  # and refused, by reason
    push_error: str | None = None  # pushes failing (this process): the last error
    push_next_try: int | None = None  # and when they are tried again

    def public(self) -> dict[str, Any]:
        return {**self.__dict__, "behind": max(0, self.their_high - self.cursor)}


def _peer(row: Any) -> Peer:
    return Peer(
        row.did,
        row.url,
        row.name,
        row.epoch,
        row.cursor,
        row.pushed,
        row.blocked,
        row.last_sync,
        row.last_error,
        row.their_high,
        row.failures,
        row.failing_since,
        row.next_try,
        row.explicit,
        row.last_accepted,
        _refusals(row.last_refused),
    )


def _refusals(text: str | None) -> dict[str, int]:
    try:
        counts = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


class Federation:
    def __init__(
        self,
        db: Database,
        log: RecordLog,
        key: SigningKey,
        store: FileStore,
        interval_s: int = 30,
        max_pushed_per_minute: int = 6000,
        name: str = "",
        auto_connect: bool = False,
        author_records_per_day: int = 0,
        limits: PullLimits | None = None,
        wanted: WantedFiles | None = None,
    ) -> None:
        self.db = db
        self.log = log
        self.key = key
        self.store = store
        self.interval_s = interval_s
        self.max_pushed_per_minute = max_pushed_per_minute
        self.name = name
        self.auto_connect = auto_connect
        self.auto_connect_private = False  # a LAN federation may allow private addresses
        self.torrent_hints: dict[str, str] = {}  # peers' BitTorrent "host:port" by did
        self.author_records_per_day = author_records_per_day
        self.public_url = ""  # set once known (configured, or the bound port)
        self.wanted = wanted  # previews and other files records need, fetched until held
        self._buckets: dict[str, _Bucket] = {}
        self.limits = limits or PullLimits()
        self._budgets: dict[str, PeerBudget] = {}
        self._push_locks: dict[str, asyncio.Lock] = {}
        self.rounds = SyncRounds(self)

    # --- HTTP to peers -------------------------------------------------------------------

    async def _get(self, url: str, limit: int, public_only: bool = False) -> bytes:
        return await get_capped(url, limit, public_only=public_only)

    def _public_only(self, peer: Peer) -> bool:
        """An announced peer (not named by the operator): public addresses only, checked
        on each connection's own lookup (no DNS-rebinding window)."""
        return not peer.explicit and not self.auto_connect_private

    def _timeout(self) -> aiohttp.ClientTimeout:
        total = min(float(TIMEOUT.total or 30), self.limits.request_timeout_s)
        return aiohttp.ClientTimeout(total=total, connect=min(10.0, total))

    async def _post_signed(self, peer: Peer, path: str, body: bytes) -> None:
        headers = sign_request(self.key, "POST", path, body, peer.did)
        headers["Content-Type"] = wire.MSGPACK
        try:
            async with (
                client_session(self._timeout(), public_only=self._public_only(peer)) as session,
                session.post(
                    peer.url + path, data=body, headers=headers, allow_redirects=False
                ) as resp,
            ):
                if resp.status >= 400:
                    raise PeerError(
                        f"{peer.url} refused our push: {resp.status} {(await resp.text())[:200]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerError(unreachable(peer.url, exc, self._timeout())) from None

    # --- peers -----------------------------------------------------------------------------

    async def add_peer(
        self, url: str, expected_did: str | None = None, *, explicit: bool = True
    ) -> Peer:
        """Peer with the node at ``url``; ``explicit``: the operator named it (it may be on
        a private address), else an announced node (public addresses only)."""
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise BadRequest("a peer URL starts with http:// or https://")
        if not explicit and not self.auto_connect_private:
            await refuse_private(url)
        try:
            public_only = not explicit and not self.auto_connect_private
            info = json.loads(await self._get(f"{url}/.well-known/civitas", 64 * 1024, public_only))
            did, name = str(info["did"]), str(info.get("name", ""))[:200]
        except (ValueError, KeyError, TypeError):
            raise PeerError(f"{url} does not look like a Civitas node") from None
        if did == self.key.did:
            raise BadRequest("that is this node itself")
        if expected_did is not None and did != expected_did:
            raise PeerError(f"{url} is {did}, not the {expected_did} that announced it")
        async with self.db.write() as conn:
            if await conn.scalar(sa.select(peers.c.did).where(peers.c.did == did)) is not None:
                raise Conflict(f"{did} is a peer already")
            await conn.execute(
                peers.insert().values(
                    did=did, url=url, name=name, added=now_ms(), explicit=explicit
                )
            )
        self.rounds.pull_now.set()
        return await self.peer(did)

    async def peer(self, did: str) -> Peer:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(peers).where(peers.c.did == did))).first()
        if row is None:
            raise NotFound(f"{did} is not a peer of this node")
        return self._with_pushes(_peer(row))

    async def list_peers(self) -> list[Peer]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(peers).order_by(peers.c.added))
            return [self._with_pushes(_peer(r)) for r in rows]

    def _with_pushes(self, peer: Peer) -> Peer:
        """The peer, with the state of pushes to it if they are failing (kept apart from
        the pulls': a refused push never backs off a pull)."""
        state = self.rounds.push_state.get(peer.did)
        if state is None:
            return peer
        return dataclasses.replace(peer, push_error=state.error, push_next_try=state.next_try)

    async def peer_urls(self) -> list[str]:
        """Where this node's peers are: other places to find a file."""
        return [p.url for p in await self.list_peers() if not p.blocked]

    async def remove_peer(self, did: str) -> None:
        async with self.db.write() as conn:
            gone = await conn.execute(peers.delete().where(peers.c.did == did))
        if gone.rowcount == 0:
            raise NotFound(f"{did} is not a peer of this node")
        self.rounds.stop_peer(did)
        self.rounds.push_state.pop(did, None)
        self._budgets.pop(did, None)

    async def trusted_peer(self, did: str) -> Peer:
        """A peer allowed to push to our inbox."""
        try:
            peer = await self.peer(did)
        except NotFound:
            raise CivitasError(f"{did} is not a peer of this node") from None
        if peer.blocked:
            raise CivitasError(f"{did} is blocked on this node")
        return peer

    async def _update(self, did: str, **values: Any) -> None:
        async with self.db.write() as conn:
            await conn.execute(peers.update().where(peers.c.did == did).values(values))

    # --- accepting records ----------------------------------------------------------------

    async def accept(self, raws: Sequence[bytes], source: Peer) -> tuple[int, list[str]]:
        """Verify each record alone, append the good ones together; (new, errors).

        Records of types this node does not know are stored and relayed, but only
        ``limits.unknown_types_per_minute`` of them a minute from one peer: the rest are
        refused as ``unknown_type_over_budget``."""
        good: list[Record] = []
        errors: list[str] = []
        known = self.log.types.rules.keys() | self.log.types.projected_types
        unknown = self._budget(source.did).unknown
        over = 0
        for raw in raws:
            try:
                record = verify_record(raw)
                self.log.types.check_body(record)
            except RecordError as exc:
                errors.append(exc.code)
                log.info("record refused", extra={"peer": source.did, "why": exc.message})
                continue
            if record.type not in known and not unknown.take():
                over += 1
                continue
            good.append(record)
        if over:
            errors += [UNKNOWN_OVER_BUDGET] * over
            log.warning(
                "records of unknown types refused",
                extra={"peer": source.did, "count": over, "why": "over the per-minute budget"},
            )
        blocked = await self.log.blocked_among(r.author for r in good)
        if blocked:
            errors += ["author_blocked"] * sum(1 for r in good if r.author in blocked)
            good = [r for r in good if r.author not in blocked]
        if self.author_records_per_day:
            good, over = await self._within_author_quota(good)
            errors += ["author_quota"] * over
        refused: list[Refused] = []
        appended = (
            await self.log.accept_verified(good, source=source.did, refused=refused) if good else []
        )
        errors += [r.error.code for r in refused]
        new = [a.record for a in appended if a.new]
        await self._fetch_previews(new, source)
        return len(new), errors

    async def _within_author_quota(self, batch: list[Record]) -> tuple[list[Record], int]:
        """Keep each author under ``author_records_per_day`` records received from peers."""
        since = now_ms() - 24 * 3600 * 1000
        authors = {r.author for r in batch}
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(records.c.author, sa.func.count())
                .where(
                    records.c.author.in_(authors),
                    records.c.received >= since,
                    records.c.source.is_not(None),
                )
                .group_by(records.c.author)
            )
            used = {author: int(count) for author, count in rows}
        kept, over = [], 0
        for record in batch:
            if used.get(record.author, 0) >= self.author_records_per_day:
                over += 1
                continue
            used[record.author] = used.get(record.author, 0) + 1
            kept.append(record)
        return kept, over

    def _budget(self, did: str) -> PeerBudget:
        budget = self._budgets.get(did)
        if budget is None:
            budget = self._budgets[did] = PeerBudget.of(self.limits)
        return budget

    def take_push_allowance(self, did: str, count: int) -> None:
        """A token bucket per peer: at most ``max_pushed_per_minute`` pushed records."""
        rate = self.max_pushed_per_minute / 60.0
        now = time.monotonic()
        bucket = self._buckets.setdefault(did, _Bucket(self.max_pushed_per_minute, now))
        bucket.tokens = min(self.max_pushed_per_minute, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if count > bucket.tokens:
            raise TooManyRecords(
                f"{did} pushed more than {self.max_pushed_per_minute} records a minute; "
                "slow down (pulls repair whatever is refused)"
            )
        bucket.tokens -= count

    async def _fetch_previews(self, new: Sequence[Record], source: Peer) -> None:
        """The files new records need are wanted: fetched at once from ``source`` first,
        from other peers, and again with backoff until held (see wanted.py)."""
        if self.wanted is not None:
            await self.wanted.want_for(new, source.did)

    async def fetch_record(self, record_id: bytes) -> bytes | None:
        """A record's bytes from the first peer that still has it visible (a reversed
        takedown brings back what was purged here); None when no peer has it."""
        for url in await self.peer_urls():
            try:
                raw = await self._get(f"{url}/federation/v1/records/{record_id.hex()}", 64 * 1024)
                if verify_record(raw).id == record_id:
                    return raw
            except (PeerError, RecordError):
                continue
        return None

    # --- pull and push --------------------------------------------------------------------

    async def _learn_torrent_address(self, peer: Peer) -> None:
        """The peer's BitTorrent address, for magnets' peer hints. Best effort, but a
        peer that does not answer within the per-request timeout fails its turn (and is
        backed off): a stall would otherwise cost every round that long, for ever."""
        wait = self.limits.request_timeout_s
        try:
            async with asyncio.timeout(wait):
                body = await get_capped(
                    f"{peer.url}/.well-known/civitas",
                    64 * 1024,
                    aiohttp.ClientTimeout(total=None, connect=min(10.0, wait)),
                    public_only=self._public_only(peer),
                )
            info = json.loads(body)
        except TimeoutError:
            raise PeerError(
                f"{peer.url} sent no /.well-known/civitas answer within {wait:g} s"
            ) from None
        except (PeerError, ValueError):  # an answer, if a bad one: the pull tells more
            return
        hint = info.get("bittorrent") if isinstance(info, dict) else None
        if isinstance(hint, str) and 0 < len(hint) <= 300 and ":" in hint:
            self.torrent_hints[peer.did] = hint
        else:
            self.torrent_hints.pop(peer.did, None)

    async def pull(
        self, peer: Peer, limits: PullLimits = UNLIMITED, tally: RoundTally | None = None
    ) -> int:
        """Read the peer's log from our cursor, page by page, within ``limits`` (none by
        default: a round passes its budgets); return how many records were new. A page
        that breaks the protocol raises PeerMisbehaved (:mod:`.pull`)."""
        tally = RoundTally() if tally is None else tally
        budget = None if limits is UNLIMITED else self._budget(peer.did)
        await self._learn_torrent_address(peer)
        at = PullCursor(peer.cursor, peer.epoch)
        while True:
            limit = min(PAGE, limits.records_per_round - tally.records)
            if budget is not None:
                limit = min(limit, budget.records.available())
            if tally.pages >= limits.pages_per_round or limit <= 0:
                tally.stopped = "round budget spent (pages or records); more next round"
                return tally.accepted
            if budget is not None and not budget.pages.take():
                tally.stopped = "per-minute page budget spent; more next round"
                return tally.accepted
            after = at.cursor
            url = f"{peer.url}/federation/v1/records?after={after}&limit={limit}"
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    body = await self._get(url, MAX_PAGE_BYTES, self._public_only(peer))
            except TimeoutError:
                raise PeerError(
                    f"{peer.url} sent no records page within {self.limits.request_timeout_s:g} s"
                    f" (after={after})"
                ) from None
            tally.pages += 1
            page = decode(body, after)
            if not at.follow(page, after, limit):  # a new epoch: read again from the start
                await self._update(peer.did, cursor=0, epoch=at.epoch)
                continue
            tally.records += len(page.entries)
            if budget is not None:
                budget.records.take(len(page.entries))
            raws = [e.raw for e in page.entries if e.raw is not None]
            new, errors = await self.accept(raws, peer)
            tally.accepted += new
            tally.refuse(errors)
            high = max(0, min(page.high, MAX_SEQ))
            await self._update(peer.did, cursor=at.cursor, epoch=at.epoch, their_high=high)
            flood = errors.count(UNKNOWN_OVER_BUDGET)
            if flood:  # past them now; but no more of this peer's log this round
                raise PeerMisbehaved(
                    f"sent more records of unknown types than federation.unknown_types_per_minute"
                    f" ({self.limits.unknown_types_per_minute}) allows: {flood} refused"
                )
            if not page.more:
                return tally.accepted

    def _push_lock(self, did: str) -> asyncio.Lock:
        return self._push_locks.setdefault(did, asyncio.Lock())

    async def push(self, peer: Peer) -> int:
        """Send the peer what we accepted since we last pushed to it, in batches (one
        push to a peer at a time: the round's and the push loop's take turns)."""
        async with self._push_lock(peer.did):
            return await self._push(await self.peer(peer.did))

    async def _push(self, peer: Peer) -> int:
        sent = 0
        cursor = peer.pushed
        while True:
            batch = await self.log.after(cursor, limit=wire.MAX_PUSH)
            if not batch:
                return sent
            raws = [  # not back to the peer it came from
                e.raw
                for e in batch
                if e.state == "visible" and e.raw is not None and e.source != peer.did
            ]
            if raws:
                await self._post_signed(peer, "/federation/v1/inbox", wire.encode_batch(raws))
                sent += len(raws)
            cursor = batch[-1].seq
            await self._update(peer.did, pushed=cursor)

    # --- announcements ---------------------------------------------------------------

    async def announce(self) -> None:
        """Publish a ``node`` record when this node's URL, name or software changed."""
        if not self.public_url:
            return
        from node import __version__

        body = {
            "url": self.public_url,
            "name": self.name or "civitas",
            "software": f"civitas/{__version__}",
        }
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(nodes).where(nodes.c.did == self.key.did))).first()
        if row is not None and (row.url, row.name, row.software) == tuple(body.values()):
            return
        await self.log.accept_verified([sign_record(self.key, "node", body)])

    async def known_nodes(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(nodes).order_by(nodes.c.created.desc()))
            peered = set((await conn.execute(sa.select(peers.c.did))).scalars())
        return [
            {
                "did": r.did,
                "url": r.url,
                "name": r.name,
                "software": r.software,
                "peer": r.did in peered,
                "self": r.did == self.key.did,
            }
            for r in rows
        ]

    async def _connect_announced(self) -> None:
        for known in await self.known_nodes():
            if known["peer"] or known["self"]:
                continue
            try:
                await self.add_peer(known["url"], expected_did=known["did"], explicit=False)
            except CivitasError as exc:
                log.info(
                    "announced node not connected", extra={"url": known["url"], "why": exc.message}
                )

    async def sync_all(self, *, force: bool = False) -> dict[str, Any]:
        """One round with every peer now (:meth:`SyncRounds.sync_all`)."""
        return await self.rounds.sync_all(force=force)

    async def set_blocked(self, did: str, blocked: bool) -> Peer:
        """A blocked node is neither pulled from nor pushed to, and its pushes are refused."""
        await self.peer(did)
        await self._update(did, blocked=blocked)
        if blocked:
            self.rounds.stop_peer(did)
        return await self.peer(did)

    # --- background -------------------------------------------------------------------------

    def nudge(self) -> None:
        """New records were committed: push them to peers soon (news spreads in seconds)."""
        self.rounds.wake.set()

    async def start(self) -> None:
        self.log.listeners.append(self.nudge)
        self.rounds.start()

    async def stop(self) -> None:
        if self.nudge in self.log.listeners:
            self.log.listeners.remove(self.nudge)
        await self.rounds.stop()

    # --- serving our log ---------------------------------------------------------------------

    async def page(self, after: int, limit: int) -> wire.Page:
        high = await self.log.high_water()
        entries = await self.log.after(after, limit=limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        async with self.db.read() as conn:
            epoch = await get_meta(conn, "log_epoch") or ""
        return wire.Page(
            epoch,
            high,
            [
                wire.PageEntry(e.seq, e.id, e.state, e.raw if e.state == "visible" else None)
                for e in entries
            ],
            more,
        )

    async def record(self, record_id: bytes) -> tuple[str, bytes | None]:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(records.c.state, records.c.raw).where(records.c.id == record_id)
                )
            ).first()
        if row is None:
            raise NotFound("this node has no such record")
        return row.state, row.raw if row.state == "visible" else None
