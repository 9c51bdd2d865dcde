"""Honoring takedown decisions: what a decision hides, stops, quarantines and deletes,
how new content already covered by one is held on arrival, and how a reversal restores.

A decision's targets resolve to records and files through the catalog: a model's root
covers the root, every revision, every version under it and their images; a version
covers itself and its images; a file (SHA256) covers the versions that carry it and the
images with that SHA256; an image covers itself. Records are set ``suppressed`` (kept,
neither shown nor relayed), or ``purged`` at once for non-consensual intimate imagery
and illegal content. Files stop seeding and move to ``HOME/quarantine/`` until a
moderator confirms or the grace period ends; urgent ones are deleted at once. Each
suppressed record is remembered with its decision, so a reversal puts back exactly what
that decision took (re-fetching from peers whatever was purged or deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.images import pdq_distance
from node.catalog.overrides import set_override
from node.catalog.projection import refresh_roots
from node.catalog.tables import images, model_revisions, model_versions, version_files
from node.db import Database
from node.errors import Forbidden
from node.moderation import schemas
from node.moderation.schemas import Target
from node.moderation.tables import (
    active_targets,
    audit_log,
    enforced_records,
    quarantine,
    review_queue,
    takedown_decisions,
    takedown_notices,
)
from node.p2p.filestore import FileStore
from node.p2p.log import RecordLog
from node.p2p.records import Record, decode_stored, now_ms
from node.p2p.tables import blobs, downloads, records, torrents

log = logging.getLogger("civitas.moderation")

PDQ_MAX_DISTANCE = 31
PDQ_MIN_QUALITY = 50


async def audit(
    conn: AsyncConnection, actor: str, action: str, target: str | None, detail: str
) -> None:
    await conn.execute(
        audit_log.insert().values(
            at=now_ms(), actor=actor[:100], action=action, target=target, detail=detail[:4000]
        )
    )


async def queue_review(conn: AsyncConnection, kind: str, ref: bytes | None, detail: str) -> None:
    """Open a review item, once per (kind, record)."""
    if ref is not None:
        open_already = await conn.scalar(
            sa.select(review_queue.c.id).where(
                review_queue.c.kind == kind, review_queue.c.ref == ref
            )
        )
        if open_already is not None:
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.id == open_already)
                .values(status="open", detail=detail[:4000], closed=None, closed_by=None)
            )
            return
    await conn.execute(
        review_queue.insert().values(kind=kind, ref=ref, detail=detail[:4000], created=now_ms())
    )


@dataclass
class Affected:
    """What a set of targets covers on this node."""

    record_ids: set[bytes] = field(default_factory=set)
    files: set[str] = field(default_factory=set)  # SHA256, uppercase hex
    held_images: dict[bytes, str] = field(default_factory=dict)  # near-duplicates: why
    pdqs: set[bytes] = field(default_factory=set)  # perceptual hashes of covered images


async def _ids(conn: AsyncConnection, query: Any) -> set[bytes]:
    return set((await conn.execute(query)).scalars())


async def resolve(conn: AsyncConnection, targets: Iterable[Target]) -> Affected:
    """The records and files ``targets`` cover, from the catalog as it stands."""
    out = Affected()
    roots = {t.value for t in targets if t.kind == "model"}
    versions = {t.value for t in targets if t.kind == "version"}
    image_ids = {t.value for t in targets if t.kind == "image"}
    shas = {t.value.hex().upper() for t in targets if t.kind == "file"}
    pdqs = {t.value for t in targets if t.kind == "pdq"}
    if roots:
        out.record_ids |= roots
        out.record_ids |= await _ids(
            conn, sa.select(model_revisions.c.id).where(model_revisions.c.root_id.in_(roots))
        )
        versions |= await _ids(
            conn, sa.select(model_versions.c.id).where(model_versions.c.model_root.in_(roots))
        )
    if shas:
        versions |= await _ids(
            conn, sa.select(version_files.c.version_id).where(version_files.c.sha256.in_(shas))
        )
        image_ids |= await _ids(conn, sa.select(images.c.id).where(images.c.sha256.in_(shas)))
        out.files |= shas
    if versions:
        out.record_ids |= versions
        out.files |= set(
            (
                await conn.execute(
                    sa.select(version_files.c.sha256).where(
                        version_files.c.version_id.in_(versions)
                    )
                )
            ).scalars()
        )
        image_ids |= await _ids(
            conn, sa.select(images.c.id).where(images.c.version_id.in_(versions))
        )
    if image_ids:
        out.record_ids |= image_ids
        rows = await conn.execute(
            sa.select(images.c.sha256, images.c.pdq, images.c.pdq_quality).where(
                images.c.id.in_(image_ids)
            )
        )
        for row in rows:
            out.files.add(row.sha256)
            if row.pdq is not None and (row.pdq_quality or 0) >= PDQ_MIN_QUALITY:
                out.pdqs.add(row.pdq)
    out.pdqs |= pdqs
    if out.pdqs:
        rows = await conn.execute(
            sa.select(images.c.id, images.c.pdq).where(
                images.c.pdq.is_not(None), images.c.pdq_quality >= PDQ_MIN_QUALITY
            )
        )
        for row in rows:
            if row.id in out.record_ids:
                continue
            near = min(pdq_distance(row.pdq, p) for p in out.pdqs)
            if near <= PDQ_MAX_DISTANCE:
                out.held_images[row.id] = f"perceptually near a listed image (distance {near})"
    return out


@dataclass(frozen=True)
class ActiveTarget:
    decision_id: bytes
    target: Target
    action: str
    reason: str


class Enforcer:
    """Applies and reverses decisions on this node's records, files and torrents."""

    def __init__(
        self,
        db: Database,
        log_: RecordLog,
        store: FileStore,
        quarantine_dir: Path,
        *,
        grace_s: int,
    ) -> None:
        self.db = db
        self.log = log_
        self.store = store
        self.quarantine_dir = quarantine_dir
        self.grace_ms = grace_s * 1000
        self.refuse_ratings: frozenset[str] = frozenset()  # the operator's policy
        self.refuse_poi = False
        self.notices_per_day = 1_000_000  # from one peer node; set from the config
        # Wired by app.py to the torrent engine and the fetcher (None: no BitTorrent).
        self.stop_torrent: Callable[[str], None] | None = None
        self.reseed: Callable[[str], Awaitable[None]] | None = None
        self.refetch_file: Callable[[str], Awaitable[None]] | None = None
        self.refetch_record: Callable[[bytes], Awaitable[bytes | None]] | None = None

    # --- the gates --------------------------------------------------------------------

    async def active(self, conn: AsyncConnection) -> list[ActiveTarget]:
        rows = await conn.execute(
            sa.select(active_targets).where(active_targets.c.action == "remove")
        )
        return [
            ActiveTarget(r.decision_id, Target(r.kind, r.value), r.action, r.reason) for r in rows
        ]

    async def refuse_file(self, sha256: str) -> str | None:
        """Catalog ingest asks before accepting a file: is it listed here?"""
        sha256 = sha256.upper()
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(active_targets.c.decision_id, active_targets.c.reason).where(
                        active_targets.c.target == f"file:{sha256.lower()}"
                    )
                )
            ).first()
            if row is None:
                row = (
                    await conn.execute(
                        sa.select(quarantine.c.decision_id, sa.literal("").label("reason")).where(
                            quarantine.c.sha256 == sha256
                        )
                    )
                ).first()
        if row is None:
            return None
        return (
            f"this file ({sha256[:12]}…) was taken down by takedown decision "
            f"{row.decision_id.hex()}: it cannot be published here"
        )

    def _refused_by_policy(self, record: Record) -> str | None:
        body = record.body
        if record.type not in ("model", "image"):
            return None
        if body.get("rating") in self.refuse_ratings:
            return f"this node's policy refuses {body['rating']}-rated content"
        if record.type == "model" and self.refuse_poi and body.get("poi") is True:
            return "this node's policy refuses models of real persons"
        return None

    async def screen(
        self, conn: AsyncConnection, batch: Sequence[Record], source: str | None
    ) -> set[bytes]:
        """Records arriving that an honored decision already covers are held (suppressed);
        so is content the operator's policy refuses (refused outright when published here)."""
        by_policy: set[bytes] = set()
        for record in batch:
            if (why := self._refused_by_policy(record)) is not None:
                if source is None:
                    raise Forbidden(why)
                by_policy.add(record.id)
                await audit(conn, source, "held_by_policy", f"record:{record.id.hex()}", why)
        if source is not None:
            by_policy |= await self._over_notice_rate(conn, batch, source)
        listed = await self.active(conn)
        if not listed:
            return by_policy
        by_key = {a.target.key: a for a in listed}
        # Only what this batch refers to: its models' roots and its images' versions.
        referred = [
            value
            for r in batch
            for value in (r.body.get("root"), r.body.get("model"), r.body.get("model_version"))
            if isinstance(value, bytes)
        ]
        suppressed_here = {
            row.record_id: row.decision_id
            for row in await conn.execute(
                sa.select(enforced_records.c.record_id, enforced_records.c.decision_id).where(
                    enforced_records.c.record_id.in_(referred)
                )
            )
        }
        with_pdq = any(r.type == "image" and isinstance(r.body.get("pdq"), bytes) for r in batch)
        pdqs = await self._listed_pdqs(conn, listed) if with_pdq else {}
        held: dict[bytes, bytes] = {}
        for record in batch:
            decision = self._covering(record, by_key, suppressed_here, held)
            if decision is not None:
                held[record.id] = decision
                continue
            if record.type == "image" and pdqs and isinstance(record.body.get("pdq"), bytes):
                if int(record.body.get("pdq_quality", 0)) >= PDQ_MIN_QUALITY:
                    near = min((pdq_distance(record.body["pdq"], p), d) for p, d in pdqs.items())
                    if near[0] <= PDQ_MAX_DISTANCE:
                        held[record.id] = near[1]
                        await queue_review(
                            conn,
                            "held",
                            record.id,
                            f"image perceptually near a listed one (distance {near[0]})",
                        )
        if held:
            await conn.execute(
                enforced_records.insert(),
                [{"decision_id": d, "record_id": r} for r, d in held.items()],
            )
            await audit(conn, "system", "held_on_arrival", None, f"{len(held)} record(s)")
        return set(held) | by_policy

    async def held_among(self, conn: AsyncConnection, record_ids: Sequence[bytes]) -> set[bytes]:
        held: set[bytes] = set()
        for start in range(0, len(record_ids), 500):
            chunk = list(record_ids[start : start + 500])
            held |= await _ids(
                conn,
                sa.select(enforced_records.c.record_id).where(
                    enforced_records.c.record_id.in_(chunk)
                ),
            )
        return held

    @staticmethod
    def _covering(
        record: Record,
        by_key: dict[str, ActiveTarget],
        suppressed: dict[bytes, bytes],
        held: dict[bytes, bytes],
    ) -> bytes | None:
        body = record.body

        def hit(kind: str, value: Any) -> bytes | None:
            if not isinstance(value, bytes):
                return None
            found = by_key.get(f"{kind}:{value.hex()}")
            if found is not None:
                return found.decision_id
            return suppressed.get(value) or held.get(value)

        if record.type == "model":
            return hit("model", body.get("root") or record.id)
        if record.type == "model_version":
            for sha in (f.get("sha256") for f in body.get("files", [])):
                if (d := hit("file", sha)) is not None:
                    return d
            return hit("version", record.id) or hit("model", body.get("model"))
        if record.type == "image":
            return (
                hit("image", record.id)
                or hit("file", body.get("sha256"))
                or hit("version", body.get("model_version"))
            )
        return None

    async def _listed_pdqs(
        self, conn: AsyncConnection, listed: Sequence[ActiveTarget]
    ) -> dict[bytes, bytes]:
        """Perceptual hashes to hold near copies of: listed ones, and those of images a
        decision took down."""
        out = {a.target.value: a.decision_id for a in listed if a.target.kind == "pdq"}
        rows = await conn.execute(
            sa.select(records.c.raw, records.c.id, enforced_records.c.decision_id)
            .join(enforced_records, enforced_records.c.record_id == records.c.id)
            .where(records.c.type == "image", records.c.raw.is_not(None))
        )
        for row in rows:
            body = decode_stored(row.raw, row.id).body
            if (
                isinstance(body.get("pdq"), bytes)
                and int(body.get("pdq_quality", 0)) >= PDQ_MIN_QUALITY
            ):
                out.setdefault(body["pdq"], row.decision_id)
        return out

    # --- applying ------------------------------------------------------------------------

    async def apply(
        self, decision_id: bytes, targets: Sequence[Target], action: str, reason: str, actor: str
    ) -> dict[str, int]:
        """Honor a decision here: hide what it covers, stop seeding, quarantine files."""
        urgent = reason in schemas.URGENT_REASONS
        moves: list[tuple[Path, Path]] = []
        stop: list[str] = []
        async with self.db.write() as conn:
            for target in targets:
                exists = await conn.scalar(
                    sa.select(active_targets.c.target).where(
                        active_targets.c.decision_id == decision_id,
                        active_targets.c.target == target.key,
                    )
                )
                if exists is None:
                    await conn.execute(
                        active_targets.insert().values(
                            decision_id=decision_id,
                            target=target.key,
                            kind=target.kind,
                            value=target.value,
                            action=action,
                            reason=reason,
                        )
                    )
            if action != "remove":
                roots = await self._roots_of(conn, targets)
                await self._refresh_terms(conn, roots)
                await audit(
                    conn,
                    actor,
                    "names_removed",
                    None,
                    f"decision {decision_id.hex()}: {len(roots)} model(s)",
                )
                return {"records": 0, "files": 0, "held": 0, "renamed": len(roots)}
            found = await resolve(conn, targets)
            covered = found.record_ids | set(found.held_images)
            already = await _ids(
                conn,
                sa.select(enforced_records.c.record_id).where(
                    enforced_records.c.decision_id == decision_id
                ),
            )
            fresh = covered - already
            if fresh:
                await conn.execute(
                    enforced_records.insert(),
                    [{"decision_id": decision_id, "record_id": r} for r in sorted(fresh)],
                )
            for image_id, why in found.held_images.items():
                await queue_review(conn, "held", image_id, why)
            await self.log.set_states_in(
                conn, sorted(found.record_ids), "purged" if urgent else "suppressed"
            )
            if found.held_images:
                await self.log.set_states_in(conn, sorted(found.held_images), "suppressed")
            for sha in sorted(found.files):
                moved = await self._quarantine(conn, sha, decision_id, urgent)
                if moved is not None:
                    moves.append(moved)
                stop += list(
                    (
                        await conn.execute(
                            sa.select(torrents.c.infohash).where(torrents.c.sha256 == sha)
                        )
                    ).scalars()
                )
            if stop:
                await conn.execute(
                    downloads.update()
                    .where(downloads.c.infohash.in_(stop), downloads.c.state == "downloading")
                    .values(state="failed", error="taken down on this node")
                )
            # Files move aside inside the transaction: if it fails, they are put back.
            try:
                for source, dest in moves:
                    await asyncio.to_thread(_move, source, dest)
            except BaseException:
                for source, dest in moves:
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(_move, dest, source)
                raise
            counts = {
                "records": len(found.record_ids),
                "files": len(moves),
                "held": len(found.held_images),
            }
            await audit(
                conn,
                actor,
                "takedown_applied",
                None,
                f"decision {decision_id.hex()}: {json.dumps(counts)}"
                + (" (purged at once)" if urgent else ""),
            )
        for infohash in stop:
            if self.stop_torrent is not None:
                self.stop_torrent(infohash)
        if urgent or self.grace_ms == 0:
            await self.delete_quarantined(decision_id=decision_id, actor=actor)
        return counts

    async def _over_notice_rate(
        self, conn: AsyncConnection, batch: Sequence[Record], source: str
    ) -> set[bytes]:
        """Notices relayed by one peer node past ``notices_per_day``: held, not acted on."""
        notices = [r for r in batch if r.type == schemas.NOTICE]
        if not notices:
            return set()
        since = now_ms() - 24 * 3600 * 1000
        used = int(
            await conn.scalar(
                sa.select(sa.func.count())
                .select_from(records)
                .where(
                    records.c.type == schemas.NOTICE,
                    records.c.source == source,
                    records.c.received >= since,
                )
            )
            or 0
        )
        over = {r.id for r in notices[max(0, self.notices_per_day - used) :]}
        if over:
            await audit(
                conn, source, "notices_over_rate", None, f"{len(over)} notice(s) held from {source}"
            )
        return over

    @staticmethod
    async def _roots_of(conn: AsyncConnection, targets: Iterable[Target]) -> set[bytes]:
        roots = {t.value for t in targets if t.kind == "model"}
        versions = [t.value for t in targets if t.kind == "version"]
        if versions:
            roots |= await _ids(
                conn,
                sa.select(model_versions.c.model_root).where(model_versions.c.id.in_(versions)),
            )
        return roots

    async def _refresh_terms(self, conn: AsyncConnection, roots: set[bytes]) -> None:
        """Recompute the terms hidden from these models' text: the names of every notice
        whose honored ``remove_name`` decision covers them; then re-derive the catalog."""
        if not roots:
            return
        rows = (
            await conn.execute(
                sa.select(active_targets.c.kind, active_targets.c.value, takedown_notices.c.body)
                .join(takedown_decisions, takedown_decisions.c.id == active_targets.c.decision_id)
                .join(takedown_notices, takedown_notices.c.id == takedown_decisions.c.notice_id)
                .where(active_targets.c.action == "remove_name")
            )
        ).all()
        terms: dict[bytes, set[str]] = {root: set() for root in roots}
        for row in rows:
            covered = await self._roots_of(conn, [Target(row.kind, row.value)])
            for root in covered & roots:
                terms[root] |= set(json.loads(row.body).get("names", []))
        for root, names in terms.items():
            await set_override(conn, root, hidden_terms=sorted(names))
        await refresh_roots(conn, roots)

    async def _quarantine(
        self, conn: AsyncConnection, sha: str, decision_id: bytes, urgent: bool
    ) -> tuple[Path, Path] | None:
        row = (await conn.execute(sa.select(blobs).where(blobs.c.sha256 == sha))).first()
        if row is None:
            return None
        already = await conn.scalar(
            sa.select(quarantine.c.sha256).where(quarantine.c.sha256 == sha)
        )
        infohash = await conn.scalar(
            sa.select(torrents.c.infohash).where(torrents.c.sha256 == sha).limit(1)
        )
        # A file seeded in place stays where the operator keeps it: it is only let go.
        dest = None if row.in_place else self.quarantine_dir / sha
        if already is None:
            now = now_ms()
            await conn.execute(
                quarantine.insert().values(
                    sha256=sha,
                    decision_id=decision_id,
                    infohash=infohash,
                    size=row.size,
                    in_place=row.in_place,
                    path=str(dest) if dest is not None else row.path,
                    since=now,
                    delete_after=now if urgent else now + self.grace_ms,
                )
            )
        await conn.execute(blobs.delete().where(blobs.c.sha256 == sha))
        if dest is None:
            return None
        return Path(row.path), dest

    async def delete_quarantined(
        self, *, decision_id: bytes | None = None, due_only: bool = False, actor: str = "system"
    ) -> int:
        """Delete quarantined files: one decision's (a moderator's confirmation, or an
        urgent takedown), or every file whose grace period ended."""
        where: list[sa.ColumnElement[bool]] = [quarantine.c.deleted.is_(None)]
        if decision_id is not None:
            where.append(quarantine.c.decision_id == decision_id)
        if due_only:
            where.append(quarantine.c.delete_after <= now_ms())
        async with self.db.write() as conn:
            rows = (await conn.execute(sa.select(quarantine).where(*where))).all()
            for row in rows:
                if row.path and not row.in_place:
                    await asyncio.to_thread(Path(row.path).unlink, missing_ok=True)
                await conn.execute(
                    quarantine.update()
                    .where(quarantine.c.sha256 == row.sha256)
                    .values(deleted=now_ms(), path=None)
                )
                await audit(conn, actor, "file_deleted", f"file:{row.sha256.lower()}", "")
        return len(rows)

    # --- reversing -------------------------------------------------------------------------

    async def reverse(self, decision_id: bytes, actor: str, why: str) -> dict[str, int]:
        """Undo what ``decision_id`` did, except what another honored decision still covers."""
        restore_files: Sequence[Any] = []
        refetch: list[bytes] = []
        async with self.db.write() as conn:
            renamed = (
                await conn.execute(
                    sa.select(active_targets.c.kind, active_targets.c.value).where(
                        active_targets.c.decision_id == decision_id,
                        active_targets.c.action == "remove_name",
                    )
                )
            ).all()
            await conn.execute(
                active_targets.delete().where(active_targets.c.decision_id == decision_id)
            )
            if renamed:
                roots = await self._roots_of(conn, [Target(r.kind, r.value) for r in renamed])
                await self._refresh_terms(conn, roots)
            mine = await _ids(
                conn,
                sa.select(enforced_records.c.record_id).where(
                    enforced_records.c.decision_id == decision_id
                ),
            )
            await conn.execute(
                enforced_records.delete().where(enforced_records.c.decision_id == decision_id)
            )
            still = await _ids(
                conn,
                sa.select(enforced_records.c.record_id).where(
                    enforced_records.c.record_id.in_(mine)
                ),
            )
            free = sorted(mine - still)
            states = {
                row.id: row.state
                for row in await conn.execute(
                    sa.select(records.c.id, records.c.state).where(records.c.id.in_(free))
                )
            }
            visible_again = [r for r in free if states.get(r) == "suppressed"]
            refetch = [r for r in free if states.get(r) == "purged"]
            await self.log.set_states_in(conn, visible_again, "visible")
            await conn.execute(
                review_queue.update()
                .where(review_queue.c.kind == "held", review_queue.c.ref.in_(free))
                .values(status="closed", closed=now_ms(), closed_by=actor)
            )
            restore_files = (
                await conn.execute(
                    sa.select(quarantine).where(quarantine.c.decision_id == decision_id)
                )
            ).all()
            await conn.execute(quarantine.delete().where(quarantine.c.decision_id == decision_id))
            for row in restore_files:
                if row.deleted is None and row.path:
                    path = Path(row.path)
                    if not row.in_place:
                        path = await asyncio.to_thread(_move_back, path, self.store, row.sha256)
                    await self.store.add_row(
                        conn, row.sha256, row.size, path, in_place=row.in_place
                    )
            await audit(
                conn,
                actor,
                "takedown_reversed",
                None,
                f"decision {decision_id.hex()}: {why}; {len(visible_again)} shown again, "
                f"{len(refetch)} to fetch again",
            )
        refetched = 0
        for record_id in refetch:
            if self.refetch_record is not None and await self.refetch_record(record_id):
                refetched += 1
        for row in restore_files:
            if row.deleted is None and row.path:
                if self.reseed is not None:
                    await self.reseed(row.sha256)
            elif self.refetch_file is not None:
                try:
                    await self.refetch_file(row.sha256)
                except Exception as exc:  # a peer may no longer have it: say so, go on
                    log.warning(
                        "file not fetched again", extra={"sha256": row.sha256, "why": str(exc)}
                    )
        return {
            "records": len(visible_again) + refetched,
            "files": len(restore_files),
        }

    async def release_held(self, record_id: bytes, actor: str) -> None:
        """A moderator lets an image held as a near copy be shown."""
        async with self.db.write() as conn:
            await conn.execute(
                enforced_records.delete().where(enforced_records.c.record_id == record_id)
            )
            state = await conn.scalar(sa.select(records.c.state).where(records.c.id == record_id))
            if state == "suppressed":
                await self.log.set_states_in(conn, [record_id], "visible")
            await audit(conn, actor, "held_released", f"image:{record_id.hex()}", "")


def _move(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)


def _move_back(path: Path, store: FileStore, sha256: str) -> Path:
    final = store.path_for(sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, final)
    return final
