"""Which files the catalog's projected records need that the file store lacks.

The p2p layer's :class:`~node.p2p.federation.wanted.WantedFiles` asks this (wired in
``node/app.py``) when it reconciles its queue: every shown image whose file this node
does not hold is wanted, however it came to be missing (a crash mid-sync, a peer
outage, a full disk, a file deleted by hand).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from node.catalog.tables import images, model_versions, shown_versions, version_files
from node.db import Database
from node.p2p.federation.wanted import NeededFile
from node.p2p.tables import blobs

CHUNK = 500  # SHA256s per IN (...) query


class CatalogNeeds:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def missing(self, *, deep: bool = False) -> list[NeededFile]:
        """Image files with no row in the store; ``deep``: also those whose row remains
        but whose file is gone from the disk (one ``stat`` per image: at start only)."""
        query = (
            sa.select(images.c.sha256, sa.func.max(images.c.size), blobs.c.path)
            .select_from(images.outerjoin(blobs, blobs.c.sha256 == images.c.sha256))
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
        """Which of these files a shown image still needs (a withdrawn one does not)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(sha256s), CHUNK):
                chunk = list(sha256s[start : start + CHUNK])
                query = sa.select(images.c.sha256).where(images.c.sha256.in_(chunk)).distinct()
                found |= set((await conn.execute(query)).scalars())
        return found

    async def shown_among(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these files a visible record needs: a shown image or a shown version's
        file, its model not withdrawn (what ``/federation/v1/blobs``, ``/webseed`` and the
        tracker may serve)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(sha256s), CHUNK):
                chunk = list(sha256s[start : start + CHUNK])
                query = sa.select(images.c.sha256).where(images.c.sha256.in_(chunk))
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
