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
from node.catalog.schemas import COMMERCIAL_USES, MODEL_TYPES, RATINGS
from node.catalog.tables import model_tags, model_versions, models
from node.db import Database
from node.errors import BadRequest
from node.p2p.tables import authors

Sort = Literal["newest", "most_downloaded", "highest_rated", "name"]
SORTS: tuple[Sort, ...] = ("newest", "most_downloaded", "highest_rated", "name")
MAX_LIMIT = 100
MAX_TERMS = 8
MAX_IDS = 100
# Civitai's ``period``, as the age (ms) of what it keeps; AllTime keeps everything.
PERIODS = {
    "AllTime": None,
    "Year": 365 * 86_400_000,
    "Month": 30 * 86_400_000,
    "Week": 7 * 86_400_000,
    "Day": 86_400_000,
}
# Civitai's allowCommercialUse values; "None" is a model that grants none of them.
COMMERCIAL_FILTERS = ("None", *COMMERCIAL_USES)
# What Civitas nodes' generation services run (compute.resources): these types, when
# the creator grants RentCivit ("run on Civitas nodes' generation services").
GENERATION_TYPES = ("Checkpoint", "LORA", "LoCon", "DoRA")
GENERATION_PERMISSION = "RentCivit"


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
    ids: list[int] = field(default_factory=list)  # Civitai integer ids; empty: any
    # Civitai's star rating: models reviewed at least this well (0-5; 0: any). There
    # are no reviews yet, so every model rates 0 and none passes 1 (see ``stars``).
    min_stars: int | None = None
    # unix ms: ``period``, as Civitai reads it: a version of the model was published since
    # (its latest version, Civitai's lastVersionAt), however old the model itself is.
    published_since: int | None = None
    favorites_of: str | None = None  # a did: only models that user favorited
    hidden_by: str | None = None  # a did: only models that user hid
    supports_generation: bool | None = None
    allow_no_credit: bool | None = None
    allow_derivatives: bool | None = None
    allow_different_license: bool | None = None
    commercial_uses: list[str] = field(default_factory=list)  # any of these; empty: any

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
        if len(self.ids) > MAX_IDS:
            raise BadRequest(f"ids takes at most {MAX_IDS} model ids")
        if self.min_stars is not None and not 0 <= self.min_stars <= 5:
            raise BadRequest("rating (stars) must be from 0 to 5")
        bad = [u for u in self.commercial_uses if u not in COMMERCIAL_FILTERS]
        if bad:
            raise BadRequest(
                f"unknown allowCommercialUse {bad[0]!r}; known: {', '.join(COMMERCIAL_FILTERS)}"
            )


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

    async def _filtered(self, q: SearchQuery, columns: list[Any]) -> sa.Select[Any]:
        """``columns`` of the models that match ``q``'s filters (no order, no paging)."""
        stmt = sa.select(*columns).select_from(models)
        if q.text and (clause := self._text_clause(q.text)) is not None:
            creators = await self._creators(q.text)
            stmt = stmt.where(sa.or_(clause, models.c.author.in_(creators)) if creators else clause)
        if q.ids:
            stmt = stmt.where(models.c.int_id.in_(q.ids))
        if q.types:
            stmt = stmt.where(models.c.type.in_(q.types))
        if q.ratings:
            stmt = stmt.where(models.c.rating.in_(q.ratings))
        if q.min_stars is not None:
            stmt = stmt.where(stars() >= q.min_stars)
        if q.published_since is not None:
            stmt = stmt.where(
                sa.exists().where(
                    model_versions.c.model_root == models.c.root_id,
                    model_versions.c.author == models.c.author,  # a shown version
                    model_versions.c.created >= q.published_since,
                )
            )
        if q.favorites_of is not None or q.hidden_by is not None:
            # Nobody can favorite or hide a model yet (the social records come later):
            # a user's favorites and hidden models are empty lists.
            stmt = stmt.where(sa.false())
        for column, wanted in (
            (models.c.allow_no_credit, q.allow_no_credit),
            (models.c.allow_derivatives, q.allow_derivatives),
            (models.c.allow_different_license, q.allow_different_license),
        ):
            if wanted is not None:
                stmt = stmt.where(column.is_(sa.true()) if wanted else column.is_(sa.false()))
        if q.commercial_uses:
            stmt = stmt.where(sa.or_(*(grants(u) for u in q.commercial_uses)))
        if q.supports_generation is not None:
            runs = sa.and_(models.c.type.in_(GENERATION_TYPES), grants(GENERATION_PERMISSION))
            stmt = stmt.where(runs if q.supports_generation else sa.not_(runs))
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
        return stmt

    async def count(self, q: SearchQuery) -> int:
        """How many models match ``q`` (Civitai's ``totalItems`` for page-based paging)."""
        q.check()
        stmt = await self._filtered(q, [sa.func.count().label("n")])
        async with self.db.read() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def search(self, q: SearchQuery) -> tuple[list[bytes], str | None]:
        """Root ids of the matching models, in order, and the cursor of the next page."""
        q.check()
        stmt = await self._filtered(
            q, [models.c.root_id, models.c.seq, models.c.created, models.c.name, models.c.downloads]
        )
        key: Any
        if q.sort == "newest":
            key, order = models.c.created, "desc"
        elif q.sort in ("most_downloaded", "highest_rated"):
            # Highest rated is by reviews, then downloads; with no reviews yet every
            # model's rating is equal, so it walks the downloads index.
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
                "highest_rated": int(last.downloads),
                "name": last.name,
            }[q.sort]
            cursor = _encode_cursor([sort_value, last.seq])
        return [row.root_id for row in rows], cursor


def stars() -> sa.ColumnElement[int]:
    """A model's star rating from reviews: 0 (unrated) for every model until reviews exist.
    The one place a review-based rating column replaces."""
    return sa.literal(0)


def grants(use: str) -> sa.ColumnElement[bool]:
    """The model grants commercial use ``use`` ("None": grants none). The column is a
    comma-separated list; commas around it keep "Rent" from matching "RentCivit"."""
    if use == "None":
        return models.c.allow_commercial_use == ""
    listed = sa.literal(",") + models.c.allow_commercial_use + sa.literal(",")
    return listed.like(f"%,{use},%")
