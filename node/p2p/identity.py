"""Author identities: the ``profile`` record type and its projection into ``authors``.

A profile names its author (display name, bio) and commits to the SHA-256 of the
author's *next* public key (pre-rotation): a later ``key_rotation`` signed by the
current key must reveal a key matching that commitment. The newest profile of an author
wins, by ``created`` and then by the higher record id, whatever order they arrive in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import RecordRejected
from node.p2p import schema
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record
from node.p2p.tables import authors

PROFILE = "profile"
MAX_NAME = 64
MAX_BIO = 4000


def check_profile(body: Mapping[str, Any]) -> None:
    name = schema.text(body, "name", max_len=MAX_NAME)
    assert name is not None
    if name != name.strip() or not name.isprintable():
        raise RecordRejected(
            "body.name must not start or end with spaces or hold control characters"
        )
    schema.text(body, "bio", max_len=MAX_BIO, required=False, min_len=0)
    schema.digest(body, "next_key", required=False)


def _newer(created: int, record_id: bytes, than_created: int, than_id: bytes) -> bool:
    return (created, record_id) > (than_created, than_id)


async def apply_profile(conn: AsyncConnection, record: Record) -> None:
    current = (
        await conn.execute(
            sa.select(authors.c.profile_created, authors.c.profile_id).where(
                authors.c.did == record.author
            )
        )
    ).first()
    values = {
        "name": record.body["name"],
        "bio": record.body.get("bio", ""),
        "next_key": record.body.get("next_key"),
        "profile_id": record.id,
        "profile_created": record.created,
    }
    if current is None:
        await conn.execute(authors.insert().values(did=record.author, **values))
    elif _newer(record.created, record.id, current.profile_created, current.profile_id):
        await conn.execute(authors.update().where(authors.c.did == record.author).values(values))


LOOKUP_CHUNK = 500


async def apply_profiles(conn: AsyncConnection, batch: Sequence[Record]) -> None:
    """:func:`apply_profile` for a page at once: the newest profile per author in the page
    against the authors' current rows (one lookup per 500 authors), then one multi-row
    insert for new authors and one executemany update for those the page renews."""
    newest: dict[str, Record] = {}
    for record in batch:
        seen = newest.get(record.author)
        if seen is None or _newer(record.created, record.id, seen.created, seen.id):
            newest[record.author] = record
    dids = list(newest)
    current: dict[str, tuple[int, bytes]] = {}
    for start in range(0, len(dids), LOOKUP_CHUNK):
        rows = await conn.execute(
            sa.select(authors.c.did, authors.c.profile_created, authors.c.profile_id).where(
                authors.c.did.in_(dids[start : start + LOOKUP_CHUNK])
            )
        )
        current.update({row.did: (row.profile_created, row.profile_id) for row in rows})

    def values(record: Record) -> dict[str, Any]:
        return {
            "name": record.body["name"],
            "bio": record.body.get("bio", ""),
            "next_key": record.body.get("next_key"),
            "profile_id": record.id,
            "profile_created": record.created,
        }

    fresh = [{"did": did, **values(r)} for did, r in newest.items() if did not in current]
    renewed = [
        {"b_did": did, **values(r)}
        for did, r in newest.items()
        if did in current and _newer(r.created, r.id, *current[did])
    ]
    if fresh:
        await conn.execute(authors.insert(), fresh)
    if renewed:
        await conn.execute(authors.update().where(authors.c.did == sa.bindparam("b_did")), renewed)


def register(types: RecordTypes) -> None:
    types.register_rule(PROFILE, check_profile)
    types.register_projection(
        Projection(
            "authors",
            frozenset({PROFILE}),
            (authors,),
            apply_profile,
            phase=0,
            apply_many=apply_profiles,
        )
    )


async def author_name(conn: AsyncConnection, did: str) -> str | None:
    return await conn.scalar(sa.select(authors.c.name).where(authors.c.did == did))
