"""Acceptance rules that need the log: who may act on a record (docs/records.md).

A record that revises or withdraws another (a ``model`` with ``root``, a ``tombstone``)
may come only from that record's author, or from a key their identity rotated to. Where
the target is already known (in the log or in the same page) and another identity
signed it, the record is refused with ``not_author`` — unless the signing key may still be that
identity's next key (it matches a pre-rotation commitment, or the identity committed to
none this node knows): a rotation can arrive after the records its new key signed. Where
the target is not known yet (or a rotation may still link the keys), the record is
stored and relayed but stays inert: projections only ever count revisions and
tombstones whose author is the target's identity (see ``node.catalog.projection``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import NotAuthor
from node.p2p.keys import public_key_commitment, public_key_from_did
from node.p2p.projections import RecordTypes
from node.p2p.records import Record
from node.p2p.rotation import KEY_ROTATION
from node.p2p.tables import identities, key_commitments, records

LOOKUP_CHUNK = 500


async def not_authored(
    conn: AsyncConnection, types: RecordTypes, fresh: Sequence[Record]
) -> dict[bytes, NotAuthor]:
    """The records of ``fresh`` that act on a known record another identity signed."""
    targets = {r.id: t for r in fresh if (t := types.target_of(r)) is not None}
    if not targets or any(r.type == KEY_ROTATION for r in fresh):
        # A rotation in the same page may join the keys: let the projection decide.
        return {}
    author_of = {r.id: r.author for r in fresh}
    unknown = list({t for t in targets.values() if t not in author_of})
    for start in range(0, len(unknown), LOOKUP_CHUNK):
        found = await conn.execute(
            sa.select(records.c.id, records.c.author).where(
                records.c.id.in_(unknown[start : start + LOOKUP_CHUNK])
            )
        )
        author_of.update({row.id: row.author for row in found})
    pairs = [
        (record, author_of[targets[record.id]])
        for record in fresh
        if record.id in targets and targets[record.id] in author_of
    ]
    dids = list({d for record, target_author in pairs for d in (record.author, target_author)})
    identity = {
        row.did: row.identity
        for row in await conn.execute(
            sa.select(identities.c.did, identities.c.identity).where(identities.c.did.in_(dids))
        )
    }
    foreign = [
        (record, target_author)
        for record, target_author in pairs
        if identity.get(record.author, record.author) != identity.get(target_author, target_author)
    ]
    if not foreign:
        return {}
    pending = await _committed_next_keys(conn, {identity.get(t, t) for _, t in foreign})
    for record in fresh:  # commitments arriving in this very page count too
        next_key = record.body.get("next_key") if record.type == "profile" else None
        if isinstance(next_key, bytes):
            pending.setdefault(identity.get(record.author, record.author), set()).add(next_key)
    out = {}
    for record, target_author in foreign:
        committed = pending.get(identity.get(target_author, target_author), set())
        if not committed or _commitment(record.author) in committed:
            continue  # maybe the author's next key, its rotation not here yet: inert for now
        target = targets[record.id].hex()
        out[record.id] = NotAuthor(
            f"{record.type} {record.id_hex} acts on {target}, which {target_author} "
            f"signed: only its author may revise or withdraw it, not {record.author}"
        )
    return out


def _commitment(did: str) -> bytes:
    return public_key_commitment(public_key_from_did(did))


async def _committed_next_keys(conn: AsyncConnection, wanted: set[str]) -> dict[str, set[bytes]]:
    """For each identity, the next-key commitments its keys made (profiles, rotations)."""
    members = {did: did for did in wanted}
    rows = await conn.execute(
        sa.select(identities.c.did, identities.c.identity).where(
            identities.c.identity.in_(list(wanted))
        )
    )
    members.update({row.did: row.identity for row in rows})
    out: dict[str, set[bytes]] = {}
    for row in await conn.execute(
        sa.select(key_commitments.c.did, key_commitments.c.commitment).where(
            key_commitments.c.did.in_(list(members))
        )
    ):
        out.setdefault(members[row.did], set()).add(row.commitment)
    return out
