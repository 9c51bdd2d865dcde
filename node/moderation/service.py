"""Moderation: takedown notices, moderators' decisions, subscriptions to other nodes'
takedown lists, the review queue, counter-notices, reports and the audit log.

Guard rails (DESIGN.md section 5): a notice alone never removes anything; only a decision
signed by this node's key, or by a node the operator subscribed to, does — and only for
targets its notice names. ``auto`` subscriptions honor at once, ``review`` ones queue;
content first published on this node always goes to review. Honoring another node's
decision never re-publishes it (trust does not chain). Every outcome is in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.overrides import set_override
from node.catalog.projection import refresh_roots
from node.catalog.schemas import RATINGS
from node.db import Database
from node.errors import BadRequest, CivitasError, Conflict, Forbidden, NotFound
from node.moderation import proof, schemas
from node.moderation.enforcement import Enforcer, audit, queue_review, resolve
from node.moderation.list_pages import MAX_LIST_PAGES, read_list_page
from node.moderation.schemas import Target
from node.moderation.tables import (
    audit_log,
    counter_notices,
    decision_outcomes,
    enforced_records,
    notice_contacts,
    notice_targets,
    reports,
    review_queue,
    subscriptions,
    takedown_decisions,
    takedown_notices,
)
from node.p2p.keys import SigningKey, public_key_from_did
from node.p2p.log import RecordLog
from node.p2p.outgoing import PeerError, get_capped
from node.p2p.records import Record, now_ms, sign_record, verify_record
from node.p2p.rotation import identity_of
from node.p2p.tables import nodes, peers, records
from node.tasks import stop_tasks, wait_event

log = logging.getLogger("civitas.moderation")

DAY_MS = 24 * 3600 * 1000
POLICIES = ("auto", "review")
REPORT_REASONS = (*schemas.REASONS, "rating", "spam", "other")
LIST_PAGE = 100
MAX_LIST_BYTES = 8 * 1024 * 1024


# Notices and counter-notices that have no review item yet.
_UNQUEUED_NOTICES = (
    sa.select(takedown_notices.c.id, takedown_notices.c.invalid)
    .outerjoin(
        review_queue,
        sa.and_(review_queue.c.kind == "notice", review_queue.c.ref == takedown_notices.c.id),
    )
    .where(review_queue.c.id.is_(None))
)
_UNQUEUED_COUNTERS = (
    sa.select(counter_notices.c.id, counter_notices.c.notice_id)
    .outerjoin(
        review_queue,
        sa.and_(
            review_queue.c.kind == "counter", review_queue.c.ref == counter_notices.c.notice_id
        ),
    )
    .where(review_queue.c.id.is_(None))
)


class TooManyNotices(CivitasError):
    code = "too_many_notices"
    status = 429


@dataclass(frozen=True)
class Submitter:
    """Who handed a notice to this node, for its moderators and rate limits."""

    contact: str = ""
    account: str | None = None
    address: str | None = None
    peer: str | None = None  # a peer node that relayed it


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


class ModerationService:
    def __init__(
        self,
        db: Database,
        log_: RecordLog,
        node_key: SigningKey,
        enforcer: Enforcer,
        *,
        notices_per_day: int = 20,
        proof_allow_private: bool = False,
        list_interval_s: int = 60,
    ) -> None:
        self.db = db
        self.log = log_
        self.key = node_key
        self.enforcer = enforcer
        self.notices_per_day = notices_per_day
        self.proof_allow_private = proof_allow_private
        self.list_interval_s = list_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._evaluating = asyncio.Lock()
        log_.listeners.append(self._wake.set)
        # Wired by app.py: the author key the node holds for a local account's did.
        self.author_key: Callable[[str], SigningKey] = _no_keys

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._loop(), name="moderation")

    async def stop(self) -> None:
        await stop_tasks([self._task, *self._background])

    async def _loop(self) -> None:
        last_poll = 0.0
        while True:
            await wait_event(self._wake, self.list_interval_s)
            self._wake.clear()
            try:
                await self.evaluate_pending()
                loop_now = asyncio.get_running_loop().time()
                if loop_now - last_poll >= self.list_interval_s:
                    last_poll = loop_now
                    await self.poll_lists()
                    await self.enforcer.delete_quarantined(due_only=True)
            except Exception:  # keep the node serving; the next round retries
                log.exception("moderation round failed")

    # --- notices ------------------------------------------------------------------------------

    async def file_notice(
        self, key: SigningKey, fields: dict[str, Any], submitter: Submitter
    ) -> dict[str, Any]:
        """Sign a notice with the claimant's key (an account's key) and submit it."""
        body = notice_body(fields, key.did)
        try:
            schemas.check_notice(body)
        except CivitasError as exc:
            raise BadRequest(exc.message) from None
        return await self.submit_notice(sign_record(key, schemas.NOTICE, body), submitter)

    async def submit_raw(self, raw: bytes, submitter: Submitter) -> dict[str, Any]:
        """A notice (or counter-notice) signed elsewhere, e.g. by `civitas takedown sign`."""
        record = verify_record(raw)
        if record.type == schemas.COUNTER:
            return await self.submit_counter(record, submitter)
        if record.type != schemas.NOTICE:
            raise BadRequest(f"expected a {schemas.NOTICE} record, got {record.type}")
        return await self.submit_notice(record, submitter)

    async def submit_notice(self, record: Record, submitter: Submitter) -> dict[str, Any]:
        self.log.types.check_body(record)
        if mismatch := schemas.notice_claimant_mismatch(record.author, record.body):
            async with self.db.write() as conn:
                await audit(conn, _actor(submitter), "notice_refused", None, mismatch)
            raise Forbidden(mismatch)
        await self._check_rate(record.author, submitter)
        appended = (await self.log.accept_verified([record]))[0]
        async with self.db.write() as conn:
            known = await conn.scalar(
                sa.select(notice_contacts.c.notice_id).where(
                    notice_contacts.c.notice_id == record.id
                )
            )
            if known is None:
                await conn.execute(
                    notice_contacts.insert().values(
                        notice_id=record.id,
                        contact=submitter.contact[:2000],
                        account=submitter.account,
                        address=submitter.address,
                        submitted=now_ms(),
                    )
                )
            await queue_review(conn, "notice", record.id, "takedown notice to decide")
            await audit(conn, _actor(submitter), "notice_filed", f"notice:{record.id.hex()}", "")
        urls = record.body.get("proof_urls", [])
        if urls and appended.new:
            self._spawn(self._check_proof(record.id, urls, record.author))
        return await self.notice(record.id)

    async def _check_rate(self, did: str, submitter: Submitter) -> None:
        since = now_ms() - DAY_MS
        limit = self.notices_per_day
        async with self.db.read() as conn:
            by_key = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(records)
                .where(
                    records.c.type == schemas.NOTICE,
                    records.c.author == did,
                    records.c.received >= since,
                )
            )
            checks = [("key", did, int(by_key or 0))]
            # An account's quota is its own: others behind the same address (a NAT, a
            # proxy, an anonymous flood) cannot use it up. The address counts only
            # for submitters without an account.
            by_account = submitter.account is not None
            for column, value in (
                (notice_contacts.c.account, submitter.account),
                (notice_contacts.c.address, None if by_account else submitter.address),
            ):
                if value:
                    count = await conn.scalar(
                        sa.select(sa.func.count())
                        .select_from(notice_contacts)
                        .where(column == value, notice_contacts.c.submitted >= since)
                    )
                    checks.append((column.name, value, int(count or 0)))
        for what, who, used in checks:
            if used >= limit:
                raise TooManyNotices(
                    f"this {what} ({who}) filed {used} notices in the last day, the most "
                    f"this node takes is {limit}; try again tomorrow"
                )

    async def _check_proof(self, notice_id: bytes, urls: list[str], did: str) -> None:
        results = await proof.check_all(urls, did, allow_private=self.proof_allow_private)
        async with self.db.write() as conn:
            await conn.execute(
                notice_contacts.update()
                .where(notice_contacts.c.notice_id == notice_id)
                .values(proof=json.dumps([r.public() for r in results]))
            )

    async def check_proof_now(self, notice_id: bytes) -> list[dict[str, Any]]:
        """Run (again) the proof URL check of a notice and return its results."""
        entry = await self.log.get(notice_id)
        if entry is None or entry.type != schemas.NOTICE or entry.raw is None:
            raise NotFound("no such takedown notice here")
        record = verify_record(entry.raw)
        await self._ensure_contact_row(notice_id)
        await self._check_proof(notice_id, record.body.get("proof_urls", []), record.author)
        return (await self.notice(notice_id))["proof"] or []

    async def _ensure_contact_row(self, notice_id: bytes) -> None:
        async with self.db.write() as conn:
            known = await conn.scalar(
                sa.select(notice_contacts.c.notice_id).where(
                    notice_contacts.c.notice_id == notice_id
                )
            )
            if known is None:
                await conn.execute(
                    notice_contacts.insert().values(
                        notice_id=notice_id, contact="", submitted=now_ms()
                    )
                )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def notice(self, notice_id: bytes, *, moderator: bool = False) -> dict[str, Any]:
        """A notice with its status: decisions (and what each did here), counter-notices."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(takedown_notices, notice_contacts.c.contact, notice_contacts.c.proof)
                    .outerjoin(
                        notice_contacts, notice_contacts.c.notice_id == takedown_notices.c.id
                    )
                    .where(takedown_notices.c.id == notice_id)
                )
            ).first()
            if row is None:
                raise NotFound("no such takedown notice here")
            decisions = (
                await conn.execute(
                    sa.select(
                        takedown_decisions,
                        decision_outcomes.c.outcome,
                        decision_outcomes.c.reason.label("outcome_reason"),
                    )
                    .outerjoin(
                        decision_outcomes,
                        decision_outcomes.c.decision_id == takedown_decisions.c.id,
                    )
                    .where(takedown_decisions.c.notice_id == notice_id)
                    .order_by(takedown_decisions.c.created, takedown_decisions.c.id)
                )
            ).all()
            counters = (
                await conn.execute(
                    sa.select(counter_notices)
                    .where(counter_notices.c.notice_id == notice_id)
                    .order_by(counter_notices.c.created)
                )
            ).all()
        body = json.loads(row.body)
        out = {
            "id": row.id.hex(),
            "claimant": {"name": row.claimant, "did": row.author},
            "created": row.created,
            "reason": row.reason,
            "action": row.action,
            "works": body.get("works"),
            "targets": body.get("targets", []),
            "names": body.get("names", []),
            "proof_urls": body.get("proof_urls", []),
            "proof": json.loads(row.proof) if row.proof else None,
            "invalid": row.invalid,
            "decisions": [_decision(d) for d in decisions],
            "counter_notices": [
                {
                    "id": c.id.hex(),
                    "author": c.author,
                    "created": c.created,
                    "statement": c.statement,
                }
                for c in counters
            ],
        }
        own = [d for d in out["decisions"] if d["node"] == self.key.did]
        out["status"] = own[-1]["verdict"] if own else "pending"
        if moderator:
            out["contact"] = row.contact
        return out

    # --- decisions -------------------------------------------------------------------------------

    async def decide(
        self,
        moderator: str,
        notice_id: bytes,
        verdict: str,
        targets: Sequence[Target] | None = None,
        note: str = "",
    ) -> dict[str, Any]:
        """A moderator's decision: a ``takedown_decision`` signed by this node's key."""
        if verdict not in schemas.VERDICTS:
            raise BadRequest(f"verdict must be one of {', '.join(schemas.VERDICTS)}")
        async with self.db.read() as conn:
            notice = (
                await conn.execute(
                    sa.select(takedown_notices).where(takedown_notices.c.id == notice_id)
                )
            ).first()
            named = await _named(conn, notice_id)
        if notice is None:
            raise NotFound("no such takedown notice here")
        if notice.invalid and verdict != "reject":
            raise BadRequest(f"this notice cannot be honored: {notice.invalid}")
        chosen: list[Target] = []
        if verdict != "reject":
            chosen = sorted(targets) if targets else [Target.parse(k) for k in sorted(named)]
            extra = [t.key for t in chosen if t.key not in named]
            if extra:
                raise BadRequest(
                    f"a decision can only target what its notice names; not named: {extra[0]}"
                )
            if not chosen:
                raise BadRequest("name at least one target to honor")
            if verdict == "honor" and len(chosen) < len(named):
                verdict = "partial"
        body: dict[str, Any] = {
            "notice": notice_id,
            "verdict": verdict,
            "targets": [t.body() for t in chosen],
            "reason": notice.reason,
            "action": notice.action,
            "moderator": moderator[:100],
        }
        if note:
            body["note"] = note[:4000]
        record = sign_record(self.key, schemas.DECISION, body)
        await self.log.accept_verified([record])
        async with self.db.write() as conn:
            await conn.execute(
                review_queue.update()
                .where(
                    review_queue.c.kind.in_(("notice", "counter")),
                    review_queue.c.ref.in_([notice_id]),
                )
                .values(status="closed", closed=now_ms(), closed_by=moderator)
            )
        await self.evaluate_pending()
        return await self.notice(notice_id, moderator=True)

    async def evaluate_pending(self) -> int:
        """Decide what every newly arrived decision does here; returns how many."""
        async with self._evaluating:
            await self._queue_new_notices()
            async with self.db.read() as conn:
                pending = (
                    await conn.execute(
                        sa.select(takedown_decisions)
                        .outerjoin(
                            decision_outcomes,
                            decision_outcomes.c.decision_id == takedown_decisions.c.id,
                        )
                        .where(decision_outcomes.c.decision_id.is_(None))
                        .order_by(takedown_decisions.c.created, takedown_decisions.c.id)
                    )
                ).all()
            done = 0
            for row in pending:
                if await self._evaluate(row):
                    done += 1
            return done

    async def _queue_new_notices(self) -> None:
        async with self.db.read() as conn:  # most rounds find nothing: no write then
            if (await conn.execute(_UNQUEUED_NOTICES.limit(1))).first() is None and (
                await conn.execute(_UNQUEUED_COUNTERS.limit(1))
            ).first() is None:
                return
        async with self.db.write() as conn:
            fresh = (await conn.execute(_UNQUEUED_NOTICES)).all()
            for row in fresh:
                if row.invalid:
                    await audit(
                        conn, "system", "notice_invalid", f"notice:{row.id.hex()}", row.invalid
                    )
                    await conn.execute(
                        review_queue.insert().values(
                            kind="notice",
                            ref=row.id,
                            detail=row.invalid,
                            status="closed",
                            created=now_ms(),
                            closed=now_ms(),
                            closed_by="system",
                        )
                    )
                else:
                    await queue_review(conn, "notice", row.id, "takedown notice to decide")
            counters = (await conn.execute(_UNQUEUED_COUNTERS)).all()
            for row in counters:
                await queue_review(
                    conn, "counter", row.notice_id, f"counter-notice {row.id.hex()} filed"
                )

    async def _outcome(self, decision_id: bytes, outcome: str, reason: str, actor: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                decision_outcomes.delete().where(decision_outcomes.c.decision_id == decision_id)
            )
            await conn.execute(
                decision_outcomes.insert().values(
                    decision_id=decision_id, outcome=outcome, reason=reason[:4000], at=now_ms()
                )
            )
            await audit(conn, actor, f"decision_{outcome}", f"decision:{decision_id.hex()}", reason)

    async def _evaluate(self, row: Any) -> bool:
        own = row.node == self.key.did
        async with self.db.read() as conn:
            notice = (
                await conn.execute(
                    sa.select(takedown_notices).where(takedown_notices.c.id == row.notice_id)
                )
            ).first()
            named = await _named(conn, row.notice_id)
            sub = (
                await conn.execute(sa.select(subscriptions).where(subscriptions.c.did == row.node))
            ).first()
            is_node = (
                await conn.scalar(sa.select(nodes.c.did).where(nodes.c.did == row.node))
                or await conn.scalar(sa.select(peers.c.did).where(peers.c.did == row.node))
            ) is not None
            newer = (
                await conn.execute(
                    sa.select(takedown_decisions.c.id)
                    .where(
                        takedown_decisions.c.node == row.node,
                        takedown_decisions.c.notice_id == row.notice_id,
                    )
                    .order_by(takedown_decisions.c.created.desc(), takedown_decisions.c.id.desc())
                    .limit(1)
                )
            ).scalar_one()
            earlier = (
                await conn.execute(
                    sa.select(takedown_decisions.c.id, decision_outcomes.c.outcome)
                    .join(
                        decision_outcomes,
                        decision_outcomes.c.decision_id == takedown_decisions.c.id,
                    )
                    .where(
                        takedown_decisions.c.node == row.node,
                        takedown_decisions.c.notice_id == row.notice_id,
                        takedown_decisions.c.id != row.id,
                        decision_outcomes.c.outcome.in_(("applied", "queued")),
                    )
                )
            ).all()
        actor = row.node if not own else f"{row.moderator} (this node)"
        if not own and sub is None:
            why = (
                f"node {row.node} is not subscribed here"
                if is_node
                else f"{row.node} is not a node this node trusts: decisions count only when "
                "signed by this node's key or a subscribed node's"
            )
            await self._outcome(row.id, "no_effect", why, actor)
            return True
        if notice is None:
            if row.created < now_ms() - DAY_MS:
                await self._outcome(row.id, "no_effect", "its notice never arrived", actor)
                return True
            return False  # wait for the notice
        if notice.invalid:
            await self._outcome(row.id, "no_effect", f"invalid notice: {notice.invalid}", actor)
            return True
        if newer != row.id:
            await self._outcome(row.id, "superseded", "a later decision replaces it", actor)
            return True
        replaced = f"replaced by decision {row.id.hex()}"
        for before in earlier:  # this decision replaces an earlier one: undo or drop it
            if before.outcome == "applied":
                await self.enforcer.reverse(before.id, actor, replaced)
                await self._outcome(before.id, "reversed", replaced, actor)
            else:
                await self._outcome(before.id, "superseded", replaced, actor)
                await self._close_review("decision", before.id, actor)
        decided = [Target.parse(k) for k in json.loads(row.targets)]
        valid = [t for t in decided if t.key in named]
        ignored = [t.key for t in decided if t.key not in named]
        note = (
            f"; ignored targets its notice does not name: {', '.join(ignored)}" if ignored else ""
        )
        if row.verdict == "reject":
            await self._outcome(row.id, "rejected", "the notice was rejected" + note, actor)
            return True
        if not valid:
            await self._outcome(
                row.id, "no_effect", "it names nothing its notice names" + note, actor
            )
            return True
        if not own:
            assert sub is not None
            if sub.policy == "review":
                await self._queue_decision(row.id, f"from {row.node} (review policy)" + note)
                await self._outcome(row.id, "queued", "review policy" + note, actor)
                return True
            if await self._first_published_here(valid):
                why = "covers content first published on this node: it goes to review" + note
                await self._queue_decision(row.id, why)
                await self._outcome(row.id, "queued", why, actor)
                return True
        counts = await self.enforcer.apply(row.id, valid, row.action, row.reason, actor)
        await self._outcome(row.id, "applied", json.dumps(counts) + note, actor)
        return True

    async def _close_review(self, kind: str, ref: bytes, by: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.kind == kind, review_queue.c.ref == ref)
                .values(status="closed", closed=now_ms(), closed_by=by)
            )

    async def _queue_decision(self, decision_id: bytes, why: str) -> None:
        async with self.db.write() as conn:
            await queue_review(conn, "decision", decision_id, why)

    async def _first_published_here(self, targets: Sequence[Target]) -> bool:
        async with self.db.read() as conn:
            found = await resolve(conn, targets)
            if not found.record_ids:
                return False
            local = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(records)
                .where(records.c.id.in_(found.record_ids), records.c.source.is_(None))
            )
        return bool(local)

    async def review_decision(self, moderator: str, decision_id: bytes, honor: bool) -> str:
        """A moderator settles another node's queued decision: honor it here, or not."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(takedown_decisions, decision_outcomes.c.outcome)
                    .join(
                        decision_outcomes,
                        decision_outcomes.c.decision_id == takedown_decisions.c.id,
                    )
                    .where(takedown_decisions.c.id == decision_id)
                )
            ).first()
            named = await _named(conn, row.notice_id) if row is not None else set()
        if row is None:
            raise NotFound("no such decision here")
        if row.outcome != "queued":
            raise Conflict(f"that decision is {row.outcome}, not waiting for review")
        if honor:
            valid = [
                t for t in (Target.parse(k) for k in json.loads(row.targets)) if t.key in named
            ]
            counts = await self.enforcer.apply(row.id, valid, row.action, row.reason, moderator)
            await self._outcome(
                row.id, "applied", f"honored on review: {json.dumps(counts)}", moderator
            )
            result = "applied"
        else:
            await self._outcome(row.id, "no_effect", "dismissed on review", moderator)
            result = "no_effect"
        async with self.db.write() as conn:
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.kind == "decision", review_queue.c.ref == decision_id)
                .values(status="closed", closed=now_ms(), closed_by=moderator)
            )
        return result

    # --- counter-notices ---------------------------------------------------------------------

    async def file_counter(
        self, key: SigningKey, notice_id: bytes, statement: str, submitter: Submitter
    ) -> dict[str, Any]:
        body = {"notice": notice_id, "statement": statement, "good_faith": True}
        try:
            schemas.check_counter(body)
        except CivitasError as exc:
            raise BadRequest(exc.message) from None
        return await self.submit_counter(sign_record(key, schemas.COUNTER, body), submitter)

    async def submit_counter(self, record: Record, submitter: Submitter) -> dict[str, Any]:
        self.log.types.check_body(record)
        notice_id = record.body["notice"]
        async with self.db.read() as conn:
            exists = await conn.scalar(
                sa.select(takedown_notices.c.id).where(takedown_notices.c.id == notice_id)
            )
        if exists is None:
            raise NotFound("no such takedown notice here")
        if not await self._authored_target(record.author, notice_id):
            raise Forbidden(
                "only the creator of the content a notice names may answer it, and this node "
                "knows no content of yours that this notice names"
            )
        await self.log.accept_verified([record])
        async with self.db.write() as conn:
            await queue_review(conn, "counter", notice_id, f"counter-notice {record.id.hex()}")
            await audit(
                conn,
                _actor(submitter),
                "counter_filed",
                f"notice:{notice_id.hex()}",
                record.id.hex(),
            )
        return await self.notice(notice_id)

    async def _authored_target(self, did: str, notice_id: bytes) -> bool:
        """Whether ``did`` (or another key of its identity) signed something the notice
        names, directly or as taken down by a decision on it."""
        async with self.db.read() as conn:
            direct = [
                Target.parse(k).value
                for k in await _named(conn, notice_id)
                if k.split(":")[0] in ("model", "version", "image")
            ]
            taken = sa.select(enforced_records.c.record_id).where(
                enforced_records.c.decision_id.in_(
                    sa.select(takedown_decisions.c.id).where(
                        takedown_decisions.c.notice_id == notice_id
                    )
                )
            )
            authors = set(
                (
                    await conn.execute(
                        sa.select(records.c.author)
                        .where(sa.or_(records.c.id.in_(direct), records.c.id.in_(taken)))
                        .distinct()
                    )
                ).scalars()
            )
            mine = await identity_of(conn, did)
            return any([await identity_of(conn, a) == mine for a in authors])

    # --- subscriptions and lists -----------------------------------------------------------------

    async def subscribe(self, did_or_url: str, policy: str) -> dict[str, Any]:
        if policy not in POLICIES:
            raise BadRequest(f"policy must be one of {', '.join(POLICIES)}")
        url: str | None = None
        if did_or_url.startswith(("http://", "https://")):
            url = did_or_url.rstrip("/")
            try:
                info = json.loads(await get_capped(f"{url}/.well-known/civitas", 64 * 1024))
                did = str(info["did"])
            except (PeerError, ValueError, KeyError, TypeError) as exc:
                raise BadRequest(f"{url} does not look like a Civitas node: {exc}") from None
        else:
            did = did_or_url
        try:
            public_key_from_did(did)
        except CivitasError:
            raise BadRequest(f"{did!r} is neither a node URL nor a did:key") from None
        if did == self.key.did:
            raise BadRequest("this node's own decisions always apply")
        async with self.db.write() as conn:
            existing = await conn.scalar(
                sa.select(subscriptions.c.did).where(subscriptions.c.did == did)
            )
            if existing is None:
                await conn.execute(
                    subscriptions.insert().values(did=did, url=url, policy=policy, added=now_ms())
                )
            else:
                values: dict[str, Any] = {"policy": policy}
                if url:
                    values["url"] = url
                await conn.execute(
                    subscriptions.update().where(subscriptions.c.did == did).values(values)
                )
            await audit(conn, "operator", "subscribed", did, policy)
            # Decisions of that node that had no effect for want of a subscription count now.
            await conn.execute(
                decision_outcomes.delete().where(
                    decision_outcomes.c.decision_id.in_(
                        sa.select(takedown_decisions.c.id).where(takedown_decisions.c.node == did)
                    ),
                    decision_outcomes.c.outcome == "no_effect",
                )
            )
        self._wake.set()
        if url:
            await self.poll_list(did)
        return next(s for s in await self.list_subscriptions() if s["did"] == did)

    async def unsubscribe(self, did: str) -> None:
        async with self.db.write() as conn:
            gone = await conn.execute(subscriptions.delete().where(subscriptions.c.did == did))
            if not gone.rowcount:
                raise NotFound(f"not subscribed to {did}")
            await audit(conn, "operator", "unsubscribed", did, "")

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(subscriptions).order_by(subscriptions.c.added))
            return [
                {
                    "did": r.did,
                    "url": r.url,
                    "policy": r.policy,
                    "added": r.added,
                    "cursor": r.cursor,
                    "last_error": r.last_error,
                }
                for r in rows
            ]

    async def takedown_list(self, after: int, limit: int) -> dict[str, Any]:
        """This node's decisions, with the notices they answer, in log order (paged)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(records.c.seq, records.c.raw, takedown_decisions.c.notice_id)
                    .join(takedown_decisions, takedown_decisions.c.id == records.c.id)
                    .where(
                        records.c.type == schemas.DECISION,
                        records.c.author == self.key.did,
                        records.c.seq > after,
                        records.c.state == "visible",
                    )
                    .order_by(records.c.seq)
                    .limit(limit + 1)
                )
            ).all()
            notice_raw = {
                r.id: r.raw
                for r in await conn.execute(
                    sa.select(records.c.id, records.c.raw).where(
                        records.c.id.in_({row.notice_id for row in rows})
                    )
                )
            }
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "node": self.key.did,
            "entries": [
                {
                    "seq": r.seq,
                    "decision": r.raw.hex(),
                    "notice": notice_raw[r.notice_id].hex()
                    if notice_raw.get(r.notice_id)
                    else None,
                }
                for r in rows
            ],
            "next": rows[-1].seq if rows and more else None,
        }

    async def poll_lists(self) -> None:
        async with self.db.read() as conn:
            dids = list(
                (
                    await conn.execute(
                        sa.select(subscriptions.c.did).where(subscriptions.c.url.is_not(None))
                    )
                ).scalars()
            )
        for did in dids:
            await self.poll_list(did)

    async def poll_list(self, did: str) -> int:
        """Read a subscribed node's takedown list from where we left off; returns how many
        decisions were new. Records are verified like any others; the decisions must be
        signed by the subscribed node itself."""
        async with self.db.read() as conn:
            sub = (
                await conn.execute(sa.select(subscriptions).where(subscriptions.c.did == did))
            ).first()
        if sub is None or not sub.url:
            return 0
        cursor, new, skipped = sub.cursor, 0, []
        try:
            for _ in range(MAX_LIST_PAGES):  # the rest next poll
                page = read_list_page(
                    json.loads(
                        await get_capped(
                            f"{sub.url}/moderation/v1/takedowns?after={cursor}&limit={LIST_PAGE}",
                            MAX_LIST_BYTES,
                        )
                    ),
                    did,
                    sub.url,
                    cursor,
                )
                for why in page.skipped:
                    log.warning("takedown list entry left out", extra={"node": did, "why": why})
                skipped += page.skipped
                if page.records:
                    appended = await self.log.accept_verified(page.records, source=did)
                    new += sum(1 for a in appended if a.new and a.record.type == schemas.DECISION)
                cursor = page.cursor
                async with self.db.write() as conn:
                    await conn.execute(
                        subscriptions.update()
                        .where(subscriptions.c.did == did)
                        .values(cursor=cursor, last_error=skipped[-1][:2000] if skipped else None)
                    )
                if not page.more:
                    break
        except (CivitasError, ValueError, KeyError, TypeError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            async with self.db.write() as conn:
                await conn.execute(
                    subscriptions.update()
                    .where(subscriptions.c.did == did)
                    .values(last_error=message[:2000])
                )
            log.info("takedown list not read", extra={"node": did, "why": message})
        if new:
            await self.evaluate_pending()
        return new

    # --- queue, reports, audit ---------------------------------------------------------------

    async def queue(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(review_queue)
                    .where(review_queue.c.status == status)
                    .order_by(review_queue.c.created.desc())
                    .limit(limit)
                )
            ).all()
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "ref": _hex(r.ref),
                "detail": r.detail,
                "status": r.status,
                "created": r.created,
                "closed_by": r.closed_by,
            }
            for r in rows
        ]

    async def close_item(self, moderator: str, item_id: int, note: str = "") -> None:
        """Dismiss a queue item (a report handled, say) without a decision."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(sa.select(review_queue).where(review_queue.c.id == item_id))
            ).first()
            if row is None:
                raise NotFound(f"no queue item {item_id}")
            if row.status == "closed":
                raise Conflict(f"queue item {item_id} is closed already")
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.id == item_id)
                .values(status="closed", closed=now_ms(), closed_by=moderator)
            )
            if row.kind == "report" and row.ref is not None:
                await conn.execute(
                    reports.update()
                    .where(reports.c.target.like(f"%:{row.ref.hex()}"), reports.c.status == "open")
                    .values(status="closed")
                )
            target = row.ref.hex() if row.ref is not None else None
            await audit(conn, moderator, f"{row.kind}_closed", target, note[:2000])

    async def release_held(self, moderator: str, record_id: bytes) -> None:
        await self.enforcer.release_held(record_id, moderator)
        async with self.db.write() as conn:
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.kind == "held", review_queue.c.ref == record_id)
                .values(status="closed", closed=now_ms(), closed_by=moderator)
            )

    async def rerate(self, moderator: str, root: bytes, changes: dict[str, Any]) -> None:
        """A moderator re-rates a model (by root) or an image, or flags a model (real
        person, minor safety), on this node only."""
        fields: dict[str, Any] = {}
        if "rating" in changes:
            if changes["rating"] not in (*RATINGS, None):
                raise BadRequest(f"rating must be one of {', '.join(RATINGS)} (or null)")
            fields["rating"] = changes["rating"]
        for flag in ("poi", "minor"):
            if flag in changes:
                if not isinstance(changes[flag], bool) and changes[flag] is not None:
                    raise BadRequest(f"{flag} must be true, false or null")
                fields[flag] = bool(changes[flag]) if flag == "minor" else changes[flag]
        if not fields:
            raise BadRequest("say rating, poi or minor")
        async with self.db.write() as conn:
            await set_override(conn, root, **fields)
            await refresh_roots(conn, {root}, {root})  # a model's root, or an image
            await audit(conn, moderator, "rerated", root.hex(), json.dumps(fields))

    async def confirm_delete(self, moderator: str, decision_id: bytes) -> int:
        return await self.enforcer.delete_quarantined(decision_id=decision_id, actor=moderator)

    async def report(
        self, target: Target, reason: str, comment: str, reporter: str | None, address: str | None
    ) -> dict[str, Any]:
        if reason not in REPORT_REASONS:
            raise BadRequest(f"reason must be one of {', '.join(REPORT_REASONS)}")
        since = now_ms() - DAY_MS
        async with self.db.write() as conn:
            # Per account where there is one, else per address (see _check_rate).
            who = reports.c.reporter == reporter if reporter else reports.c.address == address
            if reporter or address:
                count = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(reports)
                    .where(who, reports.c.created >= since)
                )
                if int(count or 0) >= self.notices_per_day * 5:
                    what = "account" if reporter else "address"
                    raise TooManyNotices(f"too many reports from this {what} today")
            result = await conn.execute(
                reports.insert()
                .values(
                    target=target.key,
                    reason=reason,
                    comment=comment[:4000],
                    reporter=reporter,
                    address=address,
                    created=now_ms(),
                )
                .returning(reports.c.id)
            )
            report_id = int(result.scalar_one())
            await queue_review(
                conn, "report", target.value, f"{target.key} reported: {reason}: {comment[:500]}"
            )
            await audit(conn, reporter or "anonymous", "reported", target.key, reason)
        return {"id": report_id, "target": target.public(), "reason": reason}

    async def audit_entries(
        self, limit: int = 100, before: int | None = None
    ) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
            if before is not None:
                query = query.where(audit_log.c.id < before)
            rows = (await conn.execute(query)).all()
        return [
            {
                "id": r.id,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "detail": r.detail,
            }
            for r in rows
        ]

    async def notices(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            ids = list(
                (
                    await conn.execute(
                        sa.select(takedown_notices.c.id)
                        .order_by(takedown_notices.c.created.desc())
                        .limit(limit)
                    )
                ).scalars()
            )
        return [await self.notice(i) for i in ids]


async def _named(conn: AsyncConnection, notice_id: bytes) -> set[str]:
    """The targets (``kind:hex``) a notice names: all a decision on it may act on."""
    rows = await conn.execute(
        sa.select(notice_targets.c.target).where(notice_targets.c.notice_id == notice_id)
    )
    return set(rows.scalars())


def _decision(d: Any) -> dict[str, Any]:
    return {
        "id": d.id.hex(),
        "node": d.node,
        "created": d.created,
        "verdict": d.verdict,
        "moderator": d.moderator,
        "targets": [Target.parse(k).public() for k in json.loads(d.targets)],
        "note": d.note,
        "outcome": d.outcome or "pending",
        "outcome_reason": d.outcome_reason or "",
    }


def _no_keys(did: str) -> SigningKey:
    raise BadRequest("this node holds no author keys")


def _actor(submitter: Submitter) -> str:
    return submitter.account or submitter.peer or submitter.address or "anonymous"


def notice_body(fields: dict[str, Any], did: str) -> dict[str, Any]:
    """A notice body from a form or API request (targets as ``kind:hex`` strings)."""
    try:
        targets = [Target.parse(str(t)) for t in fields.get("targets") or []]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    body: dict[str, Any] = {
        "claimant": {"name": str(fields.get("claimant_name") or ""), "did": did},
        "works": str(fields.get("works") or ""),
        "targets": [t.body() for t in targets],
        "reason": fields.get("reason"),
        "action": fields.get("action") or "remove",
        "names": [str(n) for n in fields.get("names") or []],
        "good_faith": fields.get("good_faith") is True,
        "accurate": fields.get("accurate") is True,
        "proof_urls": [str(u) for u in fields.get("proof_urls") or []],
    }
    if fields.get("statement"):
        body["statement"] = str(fields["statement"])
    return body
