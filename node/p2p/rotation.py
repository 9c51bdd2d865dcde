"""Key rotation with pre-rotation: the ``key_rotation`` record type and author identities.

A ``profile`` commits to the SHA-256 of its author's next public key. A ``key_rotation``
signed by the current key reveals that next key (``new_key``), commits to the one after
(``next_key``), and carries the new key's countersignature over both keys and the new
commitment — so nobody can claim a stranger's key as their own next one. A rotation
counts when its countersignature verifies and the new key matches a commitment its old
key made (in a profile, or in the rotation that introduced the old key).

An **identity** is a chain of keys linked by valid rotations, named by its first key. The
catalog attributes records to identities, so records signed with a new key are the same
author's. Two valid rotations from one key to different new keys **freeze** the identity:
what it published stays visible, flagged, and nothing new from any of its keys is
accepted until an operator keeps one of the rotations (``civitas author unfreeze``).

Identity tables are derived from the set of ``profile`` and ``key_rotation`` records (and
the operator's verdicts), recomputed whole when one arrives: rotations are rare.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import CivitasError, RecordRejected
from node.p2p import schema
from node.p2p.keys import public_key_commitment, public_key_from_did, verify_signature
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record
from node.p2p.tables import identities, key_commitments, key_rotations, rotation_verdicts

KEY_ROTATION = "key_rotation"
PROFILE = "profile"
COUNTERSIGN_CONTEXT = b"civitas/key-rotation/v1\0"


def countersigned_bytes(old_did: str, new_did: str, next_key: bytes) -> bytes:
    """What the new key signs: both keys and the commitment to the key after."""
    return COUNTERSIGN_CONTEXT + old_did.encode() + b"\0" + new_did.encode() + b"\0" + next_key


def check_rotation(body: Mapping[str, Any]) -> None:
    new_key = schema.text(body, "new_key", max_len=64)
    assert new_key is not None
    try:
        public_key_from_did(new_key)
    except CivitasError:
        raise RecordRejected("body.new_key must be a did:key") from None
    schema.digest(body, "next_key")
    schema.digest(body, "countersig", size=64)


def _countersig_ok(record: Record) -> bool:
    body = record.body
    if body["new_key"] == record.author:
        return False
    try:
        verify_signature(
            body["new_key"],
            body["countersig"],
            countersigned_bytes(record.author, body["new_key"], body["next_key"]),
        )
    except CivitasError:
        return False
    return True


async def apply(conn: AsyncConnection, record: Record) -> None:
    if record.type == PROFILE:
        if isinstance(record.body.get("next_key"), bytes):
            await conn.execute(
                key_commitments.insert().values(
                    record_id=record.id, did=record.author, commitment=record.body["next_key"]
                )
            )
            if await conn.scalar(
                sa.select(key_rotations.c.id).where(key_rotations.c.old_did == record.author)
            ):
                await recompute(conn)
        return
    countersigned = _countersig_ok(record)
    await conn.execute(
        key_rotations.insert().values(
            id=record.id,
            old_did=record.author,
            new_did=record.body["new_key"],
            created=record.created,
            countersigned=countersigned,
        )
    )
    if countersigned:
        await conn.execute(
            key_commitments.insert().values(
                record_id=record.id, did=record.body["new_key"], commitment=record.body["next_key"]
            )
        )
    await recompute(conn)


LOOKUP_CHUNK = 500


async def apply_many(conn: AsyncConnection, batch: Sequence[Record]) -> None:
    """:func:`apply` for a page at once: its commitments and rotations in two multi-row
    inserts, then one recompute where a rotation arrived or a profile's author had rotated
    (a handful of statements, not three per profile)."""
    rotations = [r for r in batch if r.type == KEY_ROTATION]
    commitments = [
        {"record_id": r.id, "did": r.author, "commitment": r.body["next_key"]}
        for r in batch
        if r.type == PROFILE and isinstance(r.body.get("next_key"), bytes)
    ]
    rotation_rows = []
    for record in rotations:
        countersigned = _countersig_ok(record)
        rotation_rows.append(
            {
                "id": record.id,
                "old_did": record.author,
                "new_did": record.body["new_key"],
                "created": record.created,
                "countersigned": countersigned,
            }
        )
        if countersigned:
            commitments.append(
                {
                    "record_id": record.id,
                    "did": record.body["new_key"],
                    "commitment": record.body["next_key"],
                }
            )
    if rotation_rows:
        await conn.execute(key_rotations.insert(), rotation_rows)
    if commitments:
        await conn.execute(key_commitments.insert(), commitments)
    if rotation_rows:
        await recompute(conn)
        return
    committed = list({c["did"] for c in commitments})
    for start in range(0, len(committed), LOOKUP_CHUNK):
        rotated = await conn.scalar(
            sa.select(key_rotations.c.id)
            .where(key_rotations.c.old_did.in_(committed[start : start + LOOKUP_CHUNK]))
            .limit(1)
        )
        if rotated is not None:
            await recompute(conn)
            return


async def recompute(conn: AsyncConnection) -> None:
    """Re-derive which rotations count and every identity, from all of them."""
    commitments: dict[str, set[bytes]] = defaultdict(set)
    for row in await conn.execute(sa.select(key_commitments.c.did, key_commitments.c.commitment)):
        commitments[row.did].add(row.commitment)
    rejected = set(
        (
            await conn.execute(
                sa.select(rotation_verdicts.c.rotation_id).where(~rotation_verdicts.c.keep)
            )
        ).scalars()
    )
    rows = (await conn.execute(sa.select(key_rotations).order_by(key_rotations.c.created))).all()
    valid: dict[str, set[str]] = defaultdict(set)  # old did -> new dids
    changed = []
    for row in rows:
        ok = bool(
            row.countersigned
            and row.id not in rejected
            and public_key_commitment(public_key_from_did(row.new_did)) in commitments[row.old_did]
        )
        if ok != bool(row.valid):
            changed.append({"b_id": row.id, "valid": ok})
        if ok:
            valid[row.old_did].add(row.new_did)
    if changed:
        await conn.execute(
            key_rotations.update().where(key_rotations.c.id == sa.bindparam("b_id")), changed
        )
    # Identities: follow valid rotations from keys nobody rotated into.
    parents: dict[str, str] = {}
    for old, news in valid.items():
        for new in news:
            parents.setdefault(new, old)
    await conn.execute(identities.delete())
    members: dict[str, set[str]] = defaultdict(set)
    for did in set(valid) | set(parents):
        root, seen = did, {did}
        while root in parents and parents[root] not in seen:
            root = parents[root]
            seen.add(root)
        members[root].add(did)
    rows_out = []
    for root, dids in members.items():
        frozen = any(len(valid.get(d, ())) > 1 for d in dids)
        rows_out += [{"did": d, "identity": root, "frozen": frozen} for d in sorted(dids)]
    if rows_out:
        await conn.execute(identities.insert(), rows_out)


async def identity_of(conn: AsyncConnection, did: str) -> str:
    """The identity (its first key) that ``did`` belongs to; itself if it never rotated."""
    found = await conn.scalar(sa.select(identities.c.identity).where(identities.c.did == did))
    return found or did


async def keys_of(conn: AsyncConnection, identity: str) -> list[str]:
    found = list(
        (
            await conn.execute(sa.select(identities.c.did).where(identities.c.identity == identity))
        ).scalars()
    )
    return found or [identity]


async def frozen_among(conn: AsyncConnection, dids: Iterable[str]) -> set[str]:
    wanted = list(set(dids))
    if not wanted:
        return set()
    rows = await conn.execute(
        sa.select(identities.c.did).where(identities.c.did.in_(wanted), identities.c.frozen)
    )
    return set(rows.scalars())


def register(types: RecordTypes) -> None:
    types.register_rule(KEY_ROTATION, check_rotation)
    types.register_projection(
        Projection(
            "identities",
            frozenset({PROFILE, KEY_ROTATION}),
            (key_commitments, key_rotations, identities),
            apply,
            phase=0,
            apply_many=apply_many,
        )
    )
