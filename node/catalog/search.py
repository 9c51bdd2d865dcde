"""Model search: full text plus filters, sorts and cursor pagination.

Full text uses SQLite FTS5 (an external-content index over ``models``) or PostgreSQL's
full-text search over the same columns, with the same tokenisation rule on both sides
(lower-cased word prefixes, all of which must match), so both give the same result
sets. A query also matches a model whose creator's name equals it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from node.catalog.names import dids_named
from node.catalog.schemas import MODEL_TYPES, RATINGS
from node.catalog.tables import model_tags, model_versions, models
from node.db import Database
from node.errors import BadRequest
from node.p2p.tables import authors

Sort = Literal["newest", "most_downloaded", "name"]
SORTS: tuple[Sort, ...] = ("newest", "most_downloaded", "name")
MAX_LIMIT = 100
MAX_TERMS = 8


@dataclass
class SearchQuery:
    text: str | None = None
    types: list[str] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)
    ratings: list[str] = field(default_factory=list)  # empty: all
    username: str | None = None
    tag: str | None = None
    sort: Sort = "newest"
    limit: int = 20
    cursor: str | None = None
    offset: int = 0  # page-style access, when no cursor is given

    def check(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}")
        if self.sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        bad = [t for t in self.types if t not in MODEL_TYPES]
        if bad:
            raise BadRequest(f"unknown model type {bad[0]!r}; known: {', '.join(MODEL_TYPES)}")
        bad = [r for r in self.ratings if r not in RATINGS]
        if bad:
            raise BadRequest(f"unknown rating {bad[0]!r}; known: {', '.join(RATINGS)}")


def terms(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())[:MAX_TERMS]


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        raise BadRequest("cursor is not one this node gave out") from None
    if not isinstance(values, list) or len(values) != 2:
        raise BadRequest("cursor is not one this node gave out")
    return values


class ModelSearch:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _creators(self, text: str) -> list[str]:
        """Authors whose name is the query: looked up first, so full text keeps its index."""
        async with self.db.read() as conn:
            found = await conn.execute(
                sa.select(authors.c.did).where(
                    sa.func.lower(authors.c.name) == text.strip().lower()
                )
            )
            return list(found.scalars())

    def _text_clause(self, text: str) -> sa.ColumnElement[bool] | sa.TextClause | None:
        words = terms(text)
        if not words:
            return None
        fts: sa.ColumnElement[bool] | sa.TextClause
        if self.db.is_sqlite:
            match = " AND ".join(f'"{w}"*' for w in words)
            fts = models.c.seq.in_(
                sa.text("SELECT rowid FROM models_fts WHERE models_fts MATCH :match").bindparams(
                    match=match
                )
            )
        else:
            query = " & ".join(f"{w}:*" for w in words)
            fts = sa.text(
                "to_tsvector('simple', models.name || ' ' || models.search_text) "
                "@@ to_tsquery('simple', :tsq)"
            ).bindparams(tsq=query)
        return fts

    async def search(self, q: SearchQuery) -> tuple[list[bytes], str | None]:
        """Root ids of the matching models, in order, and the cursor of the next page."""
        q.check()
        stmt = sa.select(
            models.c.root_id, models.c.seq, models.c.created, models.c.name, models.c.downloads
        )
        if q.text and (clause := self._text_clause(q.text)) is not None:
            creators = await self._creators(q.text)
            stmt = stmt.where(sa.or_(clause, models.c.author.in_(creators)) if creators else clause)
        if q.types:
            stmt = stmt.where(models.c.type.in_(q.types))
        if q.ratings:
            stmt = stmt.where(models.c.rating.in_(q.ratings))
        if q.tag:
            stmt = stmt.where(
                models.c.root_id.in_(
                    sa.select(model_tags.c.root_id).where(model_tags.c.tag == q.tag.lower())
                )
            )
        if q.base_models:
            stmt = stmt.where(
                sa.exists().where(
                    model_versions.c.model_root == models.c.root_id,
                    model_versions.c.author == models.c.author,
                    model_versions.c.base_model.in_(q.base_models),
                )
            )
        if q.username:  # a local name, or name@node for another node's author
            async with self.db.read() as conn:
                stmt = stmt.where(models.c.author.in_(await dids_named(conn, q.username)))
        key: Any
        if q.sort == "newest":
            key, order = models.c.created, "desc"
        elif q.sort == "most_downloaded":
            key, order = models.c.downloads, "desc"
        else:
            key, order = models.c.name, "asc"
        if q.cursor:
            value, seq = _decode_cursor(q.cursor)
            if order == "desc":
                stmt = stmt.where(sa.or_(key < value, sa.and_(key == value, models.c.seq < seq)))
            else:
                stmt = stmt.where(sa.or_(key > value, sa.and_(key == value, models.c.seq > seq)))
        if order == "desc":
            stmt = stmt.order_by(key.desc(), models.c.seq.desc())
        else:
            stmt = stmt.order_by(key.asc(), models.c.seq.asc())
        stmt = stmt.limit(q.limit + 1).offset(0 if q.cursor else q.offset)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = None
        if more:
            last = rows[-1]
            sort_value = {
                "newest": last.created,
                "most_downloaded": int(last.downloads),
                "name": last.name,
            }[q.sort]
            cursor = _encode_cursor([sort_value, last.seq])
        return [row.root_id for row in rows], cursor
