"""The content-addressed file store: files known by their SHA256.

A new file is written to ``HOME/files/tmp/``, fsynced, renamed to
``HOME/files/AB/CD/<SHA256>``, and only then is its row committed (by the caller's
transaction), so a crash leaves at worst an orphan that :meth:`FileStore.clean` removes
at start. A file may also be kept **in place** (an operator's existing models folder):
its row then points at the original path and the store never moves or deletes it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.db import Database
from node.p2p.tables import blobs


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    path: Path
    in_place: bool


class FileStore:
    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        sha256 = sha256.upper()
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def temp_path(self) -> Path:
        self.prepare()
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def commit_temp(self, temp: Path, sha256: str) -> Path:
        """fsync and move a finished temp file to its content address (blocking)."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        return final

    async def add_row(
        self, conn: AsyncConnection, sha256: str, size: int, path: Path, *, in_place: bool
    ) -> StoredFile:
        """Record a stored file inside the caller's write transaction (idempotent)."""
        sha256 = sha256.upper()
        existing = await conn.scalar(sa.select(blobs.c.sha256).where(blobs.c.sha256 == sha256))
        if existing is None:
            await conn.execute(
                blobs.insert().values(sha256=sha256, size=size, path=str(path), in_place=in_place)
            )
        return StoredFile(sha256, size, path, in_place)

    async def get(self, sha256: str) -> StoredFile | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(blobs).where(blobs.c.sha256 == sha256.upper()))
            ).first()
        if row is None:
            return None
        return StoredFile(row.sha256, row.size, Path(row.path), row.in_place)

    async def local_path(self, sha256: str) -> Path | None:
        """Where the file lies, if this node has it and it is still there."""
        stored = await self.get(sha256)
        if stored is None or not stored.path.is_file():
            return None
        return stored.path

    async def clean(self) -> int:
        """Remove unfinished temp files and stored files that no row claims."""
        removed = 0
        if self.tmp.exists():
            for leftover in self.tmp.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        async with self.db.read() as conn:
            known = set(
                (await conn.execute(sa.select(blobs.c.sha256).where(~blobs.c.in_place))).scalars()
            )
        for level in self.root.glob("[0-9A-F][0-9A-F]/[0-9A-F][0-9A-F]/*"):
            if level.is_file() and level.name not in known:
                level.unlink()
                removed += 1
        return removed

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)
