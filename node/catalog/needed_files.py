"""Which files the catalog's projected records need that the file store lacks.

The p2p layer's :class:`~node.p2p.federation.wanted.WantedFiles` asks this (wired in
``node/app.py``) when it reconciles its queue: every shown image whose file this node
does not hold is wanted, however it came to be missing (a crash mid-sync, a peer
outage, a full disk, a file deleted by hand).

It also says which files may be served to anyone (:meth:`CatalogNeeds.shown_among`). A
file that is some version's counts only through a shown version: an ``image`` record,
which any author may sign naming any SHA256, never makes a model file public, wanted or
seeded (issue 13: a peer's image naming a withdrawn model's file reopened it). An image
is shown unless its author withdrew it, or the version or model it was published with
(:func:`image_shown`): a withdrawn model's previews go with it, while the same file
stays served where another shown image uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from node.catalog.tables import images, model_versions, shown_versions, tombstones, version_files
from node.db import Database
from node.p2p.federation.wanted import NeededFile
from node.p2p.tables import blobs

CHUNK = 500  # SHA256s per IN (...) query


def image_shown() -> sa.ColumnElement[bool]:
    """An image row shown to readers, whose file it makes needed (wanted, served): its
    author withdrew neither the version it names nor that version's model (an image's
    own tombstone removes its row; another author's image made with a withdrawn model
    is their record, and stays), and its SHA256 is no version's file (shown or not)."""
    version_root = (
        sa.select(model_versions.c.model_root)
        .where(model_versions.c.id == images.c.version_id)
        .correlate(images)
        .scalar_subquery()
    )
    withdrawn = sa.exists().where(
        tombstones.c.author == images.c.author,
        sa.or_(tombstones.c.target == images.c.version_id, tombstones.c.target == version_root),
    )
    model_file = sa.exists().where(version_files.c.sha256 == images.c.sha256)
    return sa.and_(~withdrawn, ~model_file)


class CatalogNeeds:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def missing(self, *, deep: bool = False) -> list[NeededFile]:
        """Image files with no row in the store; ``deep``: also those whose row remains
        but whose file is gone from the disk (one ``stat`` per image: at start only)."""
        query = (
            sa.select(images.c.sha256, sa.func.max(images.c.size), blobs.c.path)
            .select_from(images.outerjoin(blobs, blobs.c.sha256 == images.c.sha256))
            .where(image_shown())
            .group_by(images.c.sha256, blobs.c.path)
        )
        if not deep:
            query = query.where(blobs.c.sha256.is_(None))
        async with self.db.read() as conn:
            rows = [(sha, int(size), path) for sha, size, path in await conn.execute(query)]

        def gone(path: str | None) -> bool:
            return path is None or not Path(path).is_file()

        return await asyncio.to_thread(
            lambda: [NeededFile(sha, size) for sha, size, path in rows if gone(path)]
        )

    async def needed_among(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these files a shown image still needs (a withdrawn one does not, nor
        one withdrawn with its model or version)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(sha256s), CHUNK):
                chunk = list(sha256s[start : start + CHUNK])
                query = (
                    sa.select(images.c.sha256)
                    .where(images.c.sha256.in_(chunk), image_shown())
                    .distinct()
                )
                found |= set((await conn.execute(query)).scalars())
        return found

    async def shown_among(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these files a visible record needs: a shown version's file, its model
        not withdrawn, or a shown image's file that is no version's (what
        ``/federation/v1/blobs``, ``/webseed``, ``/images`` and the tracker may serve)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(sha256s), CHUNK):
                chunk = list(sha256s[start : start + CHUNK])
                query = sa.select(images.c.sha256).where(images.c.sha256.in_(chunk), image_shown())
                found |= set((await conn.execute(query.distinct())).scalars())
                query = (
                    sa.select(version_files.c.sha256)
                    .select_from(
                        version_files.join(
                            shown_versions, model_versions.c.id == version_files.c.version_id
                        )
                    )
                    .where(version_files.c.sha256.in_(chunk))
                )
                found |= set((await conn.execute(query.distinct())).scalars())
        return found
