"""Moderators' local overrides of a model: rating, flags and hidden terms (by root).

The catalog projection applies them (see :func:`node.catalog.projection.override`); the
moderation package sets them, then re-derives the catalog tables.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.tables import model_overrides

_UNSET: Any = object()


async def set_override(
    conn: AsyncConnection,
    root_id: bytes,
    *,
    rating: str | None = _UNSET,
    poi: bool | None = _UNSET,
    minor: bool = _UNSET,
    hidden_terms: list[str] = _UNSET,
) -> None:
    """Change some of a model's overrides (None clears a rating or poi override)."""
    values: dict[str, Any] = {}
    if rating is not _UNSET:
        values["rating"] = rating
    if poi is not _UNSET:
        values["poi"] = poi
    if minor is not _UNSET:
        values["minor"] = minor
    if hidden_terms is not _UNSET:
        values["hidden_terms"] = json.dumps(hidden_terms)
    exists = await conn.scalar(
        sa.select(model_overrides.c.root_id).where(model_overrides.c.root_id == root_id)
    )
    if exists is None:
        await conn.execute(model_overrides.insert().values(root_id=root_id, **values))
    else:
        await conn.execute(
            model_overrides.update().where(model_overrides.c.root_id == root_id).values(values)
        )
