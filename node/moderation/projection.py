"""How ``takedown_notice``, ``takedown_decision`` and ``counter_notice`` records become rows.

Each record projects into its own row, whatever order they arrive in. Which decisions
this node *honors* is not a projection: it depends on the operator's subscriptions, and
is decided by :mod:`node.moderation.enforcement`.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from node.moderation import schemas
from node.moderation.tables import (
    counter_notices,
    notice_targets,
    takedown_decisions,
    takedown_notices,
)
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record


def _jsonable(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["targets"] = [t.public() for t in schemas.targets_of(body)]
    return out


async def apply(conn: AsyncConnection, record: Record) -> None:
    body = record.body
    if record.type == schemas.NOTICE:
        await conn.execute(
            takedown_notices.insert().values(
                id=record.id,
                author=record.author,
                created=record.created,
                claimant=body["claimant"]["name"],
                reason=body["reason"],
                action=body["action"],
                body=json.dumps(_jsonable(body)),
                invalid=schemas.notice_claimant_mismatch(record.author, body),
            )
        )
        keys = sorted({t.key for t in schemas.targets_of(body)})
        await conn.execute(
            notice_targets.insert(), [{"notice_id": record.id, "target": k} for k in keys]
        )
    elif record.type == schemas.DECISION:
        await conn.execute(
            takedown_decisions.insert().values(
                id=record.id,
                node=record.author,
                notice_id=body["notice"],
                created=record.created,
                verdict=body["verdict"],
                reason=body["reason"],
                action=body["action"],
                moderator=body["moderator"],
                targets=json.dumps(sorted(t.key for t in schemas.targets_of(body))),
                note=body.get("note", ""),
            )
        )
    elif record.type == schemas.COUNTER:
        await conn.execute(
            counter_notices.insert().values(
                id=record.id,
                notice_id=body["notice"],
                author=record.author,
                created=record.created,
                statement=body["statement"],
            )
        )


def register(types: RecordTypes) -> None:
    types.register_rule(schemas.NOTICE, schemas.check_notice)
    types.register_rule(schemas.DECISION, schemas.check_decision)
    types.register_rule(schemas.COUNTER, schemas.check_counter)
    types.register_projection(
        Projection(
            name="moderation",
            record_types=frozenset({schemas.NOTICE, schemas.DECISION, schemas.COUNTER}),
            tables=(takedown_notices, notice_targets, takedown_decisions, counter_notices),
            apply=apply,
        )
    )
