"""The record log: every accepted record, append-only, with a local sequence number.

Acceptance runs in one fixed order (DESIGN.md section 4): size limits and canonical
decoding and signature (:func:`verify_record`), body rules, then append and project in
the same transaction. Appending is idempotent by record id. The catalog is a projection
of the log: :meth:`RecordLog.reindex` rebuilds every projected table from it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.db import Database
from node.errors import (
    AuthorBlocked,
    BadRequest,
    CivitasError,
    NotFound,
    ProjectionFailed,
    RecordError,
)
from node.p2p.acceptance import not_authored
from node.p2p.keys import SigningKey, public_key_from_did
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record, decode_stored, now_ms, sign_record, verify_record
from node.p2p.rotation import frozen_among
from node.p2p.rotation import recompute as recompute_identities
from node.p2p.tables import (
    blocked_authors,
    identities,
    key_rotations,
    node_meta,
    records,
    rotation_verdicts,
)

State = Literal["visible", "suppressed", "purged"]
STATES: tuple[State, ...] = ("visible", "suppressed", "purged")
_log = logging.getLogger("civitas.log")
REPLAY_CHUNK = 500
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Appended:
    record: Record
    seq: int
    new: bool


@dataclass(frozen=True)
class Refused:
    """A record left out of an append, and the rule it broke (``error.code``)."""

    record: Record
    error: RecordError


@dataclass(frozen=True)
class LogEntry:
    seq: int
    id: bytes
    type: str
    author: str
    created: int
    state: State
    raw: bytes | None
    source: str | None = None  # the peer that delivered it; None: published here


class AcceptGate(Protocol):
    """Asked about new records before they are appended (moderation implements it).

    Returns the ids of records to hold: appended as ``suppressed`` (kept, neither shown
    nor relayed), e.g. content a takedown this node honors already covers; or raises to
    refuse the whole batch (``source`` None: published on this node). It runs in the
    appending transaction and may write its own rows there.
    """

    async def screen(
        self, conn: AsyncConnection, batch: Sequence[Record], source: str | None
    ) -> set[bytes]: ...

    async def held_among(self, conn: AsyncConnection, record_ids: Sequence[bytes]) -> set[bytes]:
        """Which of these records the gate holds (so lifting an author block keeps them)."""
        ...


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        row.seq, row.id, row.type, row.author, row.created, row.state, row.raw, row.source
    )


async def get_meta(conn: AsyncConnection, key: str) -> str | None:
    return await conn.scalar(sa.select(node_meta.c.value).where(node_meta.c.key == key))


async def set_meta(conn: AsyncConnection, key: str, value: str) -> None:
    updated = await conn.execute(
        node_meta.update().where(node_meta.c.key == key).values(value=value)
    )
    if updated.rowcount == 0:
        await conn.execute(node_meta.insert().values(key=key, value=value))


class RecordLog:
    """The node's record log. All appends go through :meth:`Database.write`."""

    def __init__(self, db: Database, types: RecordTypes) -> None:
        self.db = db
        self.types = types
        # Called (without arguments) after a transaction that appended new records commits.
        self.listeners: list[Callable[[], None]] = []
        self.gate: AcceptGate | None = None

    # --- identity of the log --------------------------------------------------------

    async def ensure_epoch(self) -> str:
        """The log epoch: a random id made once at init; a restored backup gets a new one."""
        async with self.db.write() as conn:
            epoch = await get_meta(conn, "log_epoch")
            if epoch is None:
                epoch = secrets.token_hex(16)
                await set_meta(conn, "log_epoch", epoch)
            return epoch

    async def epoch(self) -> str | None:
        async with self.db.read() as conn:
            return await get_meta(conn, "log_epoch")

    # --- writing --------------------------------------------------------------------

    async def publish(self, key: SigningKey, record_type: str, body: Mapping[str, Any]) -> Appended:
        """Sign a record with ``key`` and accept it into the log."""
        return (await self.accept_verified([sign_record(key, record_type, body)]))[0]

    async def accept(self, raw: bytes, now: int | None = None) -> Appended:
        return (await self.accept_batch([raw], now))[0]

    async def accept_batch(self, raws: Sequence[bytes], now: int | None = None) -> list[Appended]:
        """Verify every record, then append and project them all in one transaction.

        A batch is all-or-nothing: the first invalid record raises and nothing is written.
        """
        verified = [verify_record(raw, now) for raw in raws]
        return await self.accept_verified(verified)

    async def accept_verified(
        self,
        batch: Iterable[Record],
        source: str | None = None,
        refused: list[Refused] | None = None,
    ) -> list[Appended]:
        """Append verified records in one transaction; ``source``: the peer that sent them.

        See :meth:`append_many` for records refused one by one (``refused``).
        """
        batch = list(batch)
        for record in batch:
            self.types.check_body(record)
        async with self.db.write() as conn:
            return await self.append_many(conn, batch, source, refused)

    async def append_in(
        self, conn: AsyncConnection, record: Record, source: str | None = None
    ) -> Appended:
        """Append inside the caller's write transaction (body rules already checked)."""
        return (await self.append_many(conn, [record], source))[0]

    async def append_many(
        self,
        conn: AsyncConnection,
        batch: Sequence[Record],
        source: str | None = None,
        refused: list[Refused] | None = None,
    ) -> list[Appended]:
        """Append a page of records with one lookup and one multi-row insert, then project
        the new ones in order. Known ids (and repeats within the page) are no-ops.

        A record against an acceptance rule (a revision or tombstone of another author's
        record) or one whose projection fails is refused alone: left out of the result,
        logged, and added to ``refused`` when given, while the rest of the page applies.
        Only a batch published here (``source`` None) without ``refused`` raises instead.
        """
        tolerant = refused is not None or source is not None
        blocked = await self.blocked(conn, {r.author for r in batch})
        if blocked:
            raise AuthorBlocked(f"this node blocked the author {sorted(blocked)[0]}")
        frozen = await frozen_among(conn, {r.author for r in batch})
        if frozen:
            raise AuthorBlocked(
                f"the identity of {sorted(frozen)[0]} is frozen: it rotated its key two ways; "
                "an operator must choose (civitas author unfreeze)"
            )
        seqs: dict[bytes, int] = {}
        ids = list(dict.fromkeys(r.id for r in batch))
        for start in range(0, len(ids), LOOKUP_CHUNK):
            found = await conn.execute(
                sa.select(records.c.id, records.c.seq).where(
                    records.c.id.in_(ids[start : start + LOOKUP_CHUNK])
                )
            )
            seqs.update({row.id: int(row.seq) for row in found})
        fresh = list({r.id: r for r in batch if r.id not in seqs}.values())
        bad = await not_authored(conn, self.types, fresh)
        if bad:
            if not tolerant:
                raise next(iter(bad.values()))
            self._refuse(refused, source, [(r, bad[r.id]) for r in fresh if r.id in bad])
            fresh = [r for r in fresh if r.id not in bad]
        new_seqs: dict[bytes, int] = {}
        if fresh:
            held = await self.gate.screen(conn, fresh, source) if self.gate is not None else set()
            touches_keys = any(r.type in ("key_rotation", "profile") for r in fresh)
            before = await self._identities(conn) if touches_keys else None
            if not tolerant:
                new_seqs = await self._insert_and_project(conn, fresh, held, source)
            else:
                try:  # the fast path: the whole page at once, under one savepoint
                    async with conn.begin_nested():
                        new_seqs = await self._insert_and_project(conn, fresh, held, source)
                except CivitasError:
                    raise
                except Exception:  # some record cannot project: find it, keep the rest
                    new_seqs, failed = await self._one_by_one(conn, fresh, held, source)
                    self._refuse(refused, source, failed)
            if touches_keys and await self._identities(conn) != before:
                # Records signed by a key now known as someone's next key become theirs.
                later = {t for p in self.types.projections if p.phase > 0 for t in p.record_types}
                await self._rebuild(conn, later - {"key_rotation", "profile"})
            if new_seqs:
                hooks = conn.info.setdefault("after_commit", [])
                hooks.extend(h for h in self.listeners if h not in hooks)
        out = []
        left_out = {r.id for r in fresh if r.id not in new_seqs} | set(bad)
        for record in batch:
            if record.id in left_out:
                continue
            if record.id in new_seqs:
                out.append(Appended(record, new_seqs.pop(record.id), new=True))
            else:
                seq = seqs.get(record.id)
                if seq is None:  # a repeat, within this page, of a record just appended
                    seq = next(a.seq for a in out if a.record.id == record.id)
                out.append(Appended(record, seq, new=False))
        return out

    async def _insert_and_project(
        self, conn: AsyncConnection, fresh: Sequence[Record], held: set[bytes], source: str | None
    ) -> dict[bytes, int]:
        received = now_ms()
        inserted = await conn.execute(
            # Matched back by id, so no per-row ordering is asked for: SQLAlchemy then sends
            # the page as one multi-row INSERT … RETURNING (per 1000 rows), not row by row.
            records.insert().returning(records.c.id, records.c.seq),
            [
                {
                    "id": r.id,
                    "type": r.type,
                    "author": r.author,
                    "created": r.created,
                    "received": received,
                    "state": "suppressed" if r.id in held else "visible",
                    "raw": r.raw,
                    "source": source,
                }
                for r in fresh
            ],
        )
        new_seqs = {row.id: int(row.seq) for row in inserted}
        await self.types.project_many(conn, [r for r in fresh if r.id not in held])
        return new_seqs

    async def _one_by_one(
        self, conn: AsyncConnection, fresh: Sequence[Record], held: set[bytes], source: str | None
    ) -> tuple[dict[bytes, int], list[tuple[Record, RecordError]]]:
        """The slow path, only after the page failed: each record under its own savepoint."""
        new_seqs: dict[bytes, int] = {}
        failed: list[tuple[Record, RecordError]] = []
        for record in fresh:
            try:
                async with conn.begin_nested():
                    new_seqs.update(await self._insert_and_project(conn, [record], held, source))
            except CivitasError:
                raise
            except Exception as exc:
                _log.exception(
                    "record does not project", extra={"record": record.id_hex, "peer": source}
                )
                failed.append(
                    (record, ProjectionFailed(f"{record.type} {record.id_hex} cannot apply: {exc}"))
                )
        return new_seqs, failed

    @staticmethod
    def _refuse(
        refused: list[Refused] | None,
        source: str | None,
        records_and_errors: Sequence[tuple[Record, RecordError]],
    ) -> None:
        for record, error in records_and_errors:
            _log.info(
                "record refused",
                extra={"record": record.id_hex, "peer": source, "why": error.message},
            )
            if refused is not None:
                refused.append(Refused(record, error))

    @staticmethod
    async def _identities(conn: AsyncConnection) -> set[tuple[str, str, bool]]:
        rows = await conn.execute(
            sa.select(identities.c.did, identities.c.identity, identities.c.frozen)
        )
        return {(r.did, r.identity, bool(r.frozen)) for r in rows}

    async def set_state(self, record_id: bytes, state: State) -> None:
        """Change a record's state and re-derive the tables its type projects into."""
        if state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}")
        async with self.db.write() as conn:
            current = await conn.scalar(sa.select(records.c.state).where(records.c.id == record_id))
            if current is None:
                raise NotFound(f"no record {record_id.hex()}")
            if current == "purged" and state != "purged":
                raise BadRequest(
                    "a purged record's body is gone: only fetching it again restores it"
                )
            await self.set_states_in(conn, [record_id], state)

    async def set_states_in(
        self, conn: AsyncConnection, record_ids: Sequence[bytes], state: State
    ) -> set[str]:
        """Change many records' state inside the caller's transaction and re-derive the
        tables of their types once; returns those types. Purging erases the bodies."""
        changed: list[Record] = []
        values: dict[str, Any] = {"state": state}
        if state == "purged":
            values["raw"] = None
        # A purged body is gone: only re-fetching it (restore_in) makes it visible again.
        movable = records.c.state != "purged" if state != "purged" else sa.true()
        for start in range(0, len(record_ids), LOOKUP_CHUNK):
            chunk = list(record_ids[start : start + LOOKUP_CHUNK])
            where = sa.and_(records.c.id.in_(chunk), records.c.state != state, movable)
            found = await conn.execute(sa.select(records.c.id, records.c.raw).where(where))
            changed += [decode_stored(r.raw, r.id) for r in found if r.raw is not None]
            await conn.execute(records.update().where(where).values(values))
        await self._rederive(conn, changed)
        return {r.type for r in changed}

    async def _rederive(self, conn: AsyncConnection, changed: Sequence[Record]) -> None:
        """After records changed state: let each projection re-derive what they touch
        (its ``refresh``), or replay it whole."""
        types = {r.type for r in changed}
        full: set[str] = set()
        for projection in self.types.projections:
            if not projection.record_types & types:
                continue
            if projection.refresh is None:
                full |= projection.record_types & types
            else:
                await projection.refresh(
                    conn, [r for r in changed if r.type in projection.record_types]
                )
        if full:
            await self._rebuild(conn, full)

    async def restore(self, record_id: bytes, raw: bytes) -> bool:
        """Give a purged record its body back (fetched again from a peer) and show it."""
        record = verify_record(raw)
        if record.id != record_id:
            raise BadRequest("the fetched bytes are not that record")
        async with self.db.write() as conn:
            changed = await conn.execute(
                records.update()
                .where(records.c.id == record_id, records.c.state == "purged")
                .values(state="visible", raw=raw)
            )
            if changed.rowcount:
                await self._rederive(conn, [record])
        return bool(changed.rowcount)

    # --- blocked authors ------------------------------------------------------------

    @staticmethod
    async def blocked(conn: AsyncConnection, dids: Iterable[str]) -> set[str]:
        wanted = list(set(dids))
        if not wanted:
            return set()
        found = await conn.execute(
            sa.select(blocked_authors.c.did).where(blocked_authors.c.did.in_(wanted))
        )
        return set(found.scalars())

    async def blocked_among(self, dids: Iterable[str]) -> set[str]:
        """Authors whose records this node refuses: blocked, or of a frozen identity."""
        dids = set(dids)
        async with self.db.read() as conn:
            return await self.blocked(conn, dids) | await frozen_among(conn, dids)

    async def block_author(self, did: str, reason: str = "") -> int:
        """Refuse ``did``'s records from now on and suppress those already here."""
        public_key_from_did(did)
        async with self.db.write() as conn:
            if not await self.blocked(conn, [did]):
                await conn.execute(
                    blocked_authors.insert().values(did=did, reason=reason[:2000], added=now_ms())
                )
            return await self._set_author_state(conn, did, "visible", "suppressed")

    async def unblock_author(self, did: str) -> int:
        """Lift a block: the author's suppressed records are shown again."""
        async with self.db.write() as conn:
            gone = await conn.execute(blocked_authors.delete().where(blocked_authors.c.did == did))
            if gone.rowcount == 0:
                raise NotFound(f"{did} is not blocked")
            return await self._set_author_state(conn, did, "suppressed", "visible")

    async def unfreeze(self, did: str, keep: str) -> None:
        """Settle a frozen identity: of the rotations from ``did``, keep the one to
        ``keep`` and reject the others (a local verdict); the identity thaws."""
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    sa.select(key_rotations.c.id, key_rotations.c.new_did).where(
                        key_rotations.c.old_did == did, key_rotations.c.valid
                    )
                )
            ).all()
            if len({r.new_did for r in rows}) < 2:
                raise NotFound(f"{did} has no conflicting rotations to settle")
            if keep not in {r.new_did for r in rows}:
                raise BadRequest(f"{did} never rotated to {keep}")
            for row in rows:
                await conn.execute(
                    rotation_verdicts.delete().where(rotation_verdicts.c.rotation_id == row.id)
                )
                await conn.execute(
                    rotation_verdicts.insert().values(
                        rotation_id=row.id, keep=row.new_did == keep, at=now_ms()
                    )
                )
            await recompute_identities(conn)
            later = {t for p in self.types.projections if p.phase > 0 for t in p.record_types}
            await self._rebuild(conn, later)

    async def list_frozen(self) -> list[dict[str, Any]]:
        """Keys whose identity is frozen, with the conflicting rotations an operator picks from."""
        async with self.db.read() as conn:
            frozen = list(
                (
                    await conn.execute(
                        sa.select(identities.c.did)
                        .where(identities.c.frozen)
                        .order_by(identities.c.did)
                    )
                ).scalars()
            )
            rows = await conn.execute(
                sa.select(key_rotations.c.old_did, key_rotations.c.new_did).where(
                    key_rotations.c.old_did.in_(frozen), key_rotations.c.valid
                )
            )
            rotated: dict[str, list[str]] = {}
            for row in rows:
                rotated.setdefault(row.old_did, []).append(row.new_did)
        return [
            {"did": old, "rotated_to": sorted(news)}
            for old, news in sorted(rotated.items())
            if len(news) > 1
        ]

    async def list_blocked(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(blocked_authors).order_by(blocked_authors.c.added))
            return [{"did": r.did, "reason": r.reason, "added": r.added} for r in rows]

    async def _set_author_state(
        self, conn: AsyncConnection, did: str, old: State, new: State
    ) -> int:
        where = sa.and_(records.c.author == did, records.c.state == old)
        if new == "visible" and self.gate is not None:  # a takedown's hold outlasts a block
            ids = list((await conn.execute(sa.select(records.c.id).where(where))).scalars())
            kept = await self.gate.held_among(conn, ids)
            if kept:
                where = sa.and_(where, records.c.id.not_in(kept))
        rows = await conn.execute(sa.select(records.c.id, records.c.raw).where(where))
        changed = [decode_stored(r.raw, r.id) for r in rows if r.raw is not None]
        await conn.execute(records.update().where(where).values(state=new))
        await self._rederive(conn, changed)
        return len(changed)

    async def reindex(self) -> int:
        """Rebuild every projected table from the log; return how many records were replayed."""
        async with self.db.write() as conn:
            return await self._rebuild(conn, self.types.projected_types)

    async def _rebuild(self, conn: AsyncConnection, record_types: set[str] | frozenset[str]) -> int:
        chosen = [p for p in self.types.projections if p.record_types & record_types]
        replayed = 0
        for phase in sorted({p.phase for p in chosen}):
            replayed += await self._replay(conn, [p for p in chosen if p.phase == phase])
        return replayed

    async def _replay(self, conn: AsyncConnection, projections: list[Projection]) -> int:
        replay_types = frozenset().union(*(p.record_types for p in projections))
        for projection in projections:
            for table in reversed(projection.tables):
                await conn.execute(table.delete())
        replayed = 0
        after = 0
        while True:
            rows = (
                await conn.execute(
                    sa.select(records.c.seq, records.c.id, records.c.raw)
                    .where(records.c.seq > after)
                    .where(records.c.state == "visible")
                    .where(records.c.type.in_(replay_types))
                    .order_by(records.c.seq)
                    .limit(REPLAY_CHUNK)
                )
            ).all()
            if not rows:
                return replayed
            for row in rows:
                record = decode_stored(row.raw, row.id)
                for projection in projections:
                    if record.type in projection.record_types:
                        await projection.apply(conn, record)
                replayed += 1
            after = rows[-1].seq

    # --- reading --------------------------------------------------------------------

    async def get(self, record_id: bytes) -> LogEntry | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(records).where(records.c.id == record_id))).first()
        return _entry(row) if row is not None else None

    async def high_water(self) -> int:
        """The highest committed seq: appends are serialised, so nothing below it is missing."""
        async with self.db.read() as conn:
            high = await conn.scalar(sa.select(sa.func.max(records.c.seq)))
        return int(high or 0)

    async def after(self, seq: int, limit: int = 100) -> list[LogEntry]:
        high = await self.high_water()
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(records)
                .where(records.c.seq > seq, records.c.seq <= high)
                .order_by(records.c.seq)
                .limit(limit)
            )
            return [_entry(row) for row in rows]

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(records)) or 0)
