"""Which images ``GET /api/v1/images`` lists: Civitai's filters, sorts and paging.

Filters: a model, a version, a post (see :func:`node.catalog.civitai.post_id`), a
username, an ``nsfw`` level (images rated at most that: None=PG, Soft=PG13, Mature=R,
X=X) or boolean (as Civitai reads it: ``true`` only the images with a mature rating, R
and X; ``false`` only the public ones, PG) and a ``period`` on when the image was
published. Sorts: Newest and Oldest; Most Reactions and Most Comments are
accepted and, while images have no reactions or comments, list newest first. Paging by
``page`` or by ``cursor`` (the next page's position, as Civitai switched to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from node.catalog.civitai import image_columns, with_version
from node.catalog.search import _decode_cursor, _encode_cursor
from node.catalog.tables import images, model_versions, models
from node.errors import BadRequest

NSFW_LEVELS = {
    "None": ("PG",),
    "Soft": ("PG", "PG13"),
    "Mature": ("PG", "PG13", "R"),
    "X": ("PG", "PG13", "R", "X"),
    "false": ("PG",),
    "true": ("R", "X"),
}
ImageSort = Literal["newest", "oldest"]
IMAGE_SORTS: dict[str, ImageSort] = {
    "Newest": "newest",
    "Oldest": "oldest",
    # No reactions or comments exist yet: these order as Newest until they do.
    "Most Reactions": "newest",
    "Most Comments": "newest",
}


@dataclass
class ImageQuery:
    version_int: int | None = None
    model_int: int | None = None
    post_id: int | None = None
    authors: list[str] | None = None  # dids; None: anyone
    ratings: tuple[str, ...] = ()  # empty: all
    created_since: int | None = None
    sort: ImageSort = "newest"
    limit: int = 100
    page: int = 1
    cursor: str | None = None


def nsfw_ratings(raw: str | None) -> tuple[str, ...]:
    """The image ratings an ``nsfw`` value keeps; () for all."""
    if raw is None or raw == "":
        return ()
    key = raw.lower() if raw.lower() in ("true", "false") else raw
    if key not in NSFW_LEVELS:
        raise BadRequest("nsfw must be None, Soft, Mature, X, true or false")
    return NSFW_LEVELS[key]


def image_statement(q: ImageQuery) -> sa.Select[Any]:
    """Rows (see :func:`image_columns`) of one page and one more, to tell if more follow."""
    stmt = with_version(sa.select(*image_columns()))
    if q.version_int is not None:
        stmt = stmt.where(model_versions.c.int_id == q.version_int)
    elif q.model_int is not None:
        root = sa.select(models.c.root_id).where(models.c.int_id == q.model_int)
        stmt = stmt.where(model_versions.c.model_root == root.scalar_subquery())
    if q.post_id is not None:
        own = model_versions.c.author == images.c.author
        stmt = stmt.where(
            sa.or_(
                sa.and_(model_versions.c.int_id == q.post_id, own),
                sa.and_(images.c.int_id == q.post_id, sa.or_(model_versions.c.id.is_(None), ~own)),
            )
        )
    if q.authors is not None:
        stmt = stmt.where(images.c.author.in_(q.authors))
    if q.ratings:
        stmt = stmt.where(images.c.rating.in_(q.ratings))
    if q.created_since is not None:
        stmt = stmt.where(images.c.created >= q.created_since)
    newest = q.sort == "newest"
    if q.cursor:
        created, id_hex = _decode_cursor(q.cursor)
        try:
            last = bytes.fromhex(id_hex) if isinstance(id_hex, str) else None
        except ValueError:
            last = None
        if not isinstance(created, int) or last is None:
            raise BadRequest("cursor is not one this node gave out")
        if newest:
            after = sa.or_(
                images.c.created < created, sa.and_(images.c.created == created, images.c.id < last)
            )
        else:
            after = sa.or_(
                images.c.created > created, sa.and_(images.c.created == created, images.c.id > last)
            )
        stmt = stmt.where(after)
    if newest:
        stmt = stmt.order_by(images.c.created.desc(), images.c.id.desc())
    else:
        stmt = stmt.order_by(images.c.created.asc(), images.c.id.asc())
    offset = 0 if q.cursor else (q.page - 1) * q.limit
    return stmt.limit(q.limit + 1).offset(offset)


def next_cursor(row: Any) -> str:
    return _encode_cursor([int(row.created), row.id.hex()])
