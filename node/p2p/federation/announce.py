"""``node`` records: each node announces itself (URL, name, software), signed by its key.

Peers relay announcements like any record, so a node hears of nodes it is not peered
with; an operator may let it connect to them (``federation.auto_connect``, off by
default). The newest announcement of a node wins, whatever order they arrive in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import RecordRejected
from node.p2p import schema
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record
from node.p2p.tables import nodes

NODE = "node"


def check_node(body: Mapping[str, Any]) -> None:
    url = schema.text(body, "url", max_len=500)
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise RecordRejected("body.url must be an http:// or https:// URL")
    schema.text(body, "name", max_len=200)
    schema.text(body, "software", max_len=64)


async def apply_node(conn: AsyncConnection, record: Record) -> None:
    current = (
        await conn.execute(
            sa.select(nodes.c.created, nodes.c.record_id).where(nodes.c.did == record.author)
        )
    ).first()
    values = {
        "url": record.body["url"].rstrip("/"),
        "name": record.body["name"],
        "software": record.body["software"],
        "record_id": record.id,
        "created": record.created,
    }
    if current is None:
        await conn.execute(nodes.insert().values(did=record.author, **values))
    elif (record.created, record.id) > (current.created, current.record_id):
        await conn.execute(nodes.update().where(nodes.c.did == record.author).values(values))


def register(types: RecordTypes) -> None:
    types.register_rule(NODE, check_node)
    types.register_projection(Projection("p2p.nodes", frozenset({NODE}), (nodes,), apply_node))
