"""The content-addressed file store: files known by their SHA256.

A new file is written to ``HOME/files/tmp/``, fsynced, renamed to
``HOME/files/AB/CD/<SHA256>``, and only then is its row committed (by the caller's
transaction), so a crash leaves at worst a stored file without a row. At start,
:meth:`FileStore.clean` removes unfinished temp files, **adopts** a rowless file that a
download or a wanted file is waiting for (its SHA256 verified first: the node died
between the rename and the commit), and removes the other orphans.

A file may also be kept **in place** (an operator's existing models folder): its row
then points at the original path and the store never moves or deletes it. Such a file
can change behind the node's back, so each serve checks its size (against the row) and
its mtime (against the state it was last verified in); a changed mtime is re-verified by
SHA256. A file that no longer matches is not served again, its torrent is stopped
(``on_changed``), and the reason is logged once and kept in :attr:`FileStore.changed`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.db import Database
from node.errors import InsufficientStorage, StorageUnavailable
from node.p2p.records import now_ms
from node.p2p.tables import blobs, downloads, wanted_files

log = logging.getLogger("civitas.files")
HASH_BLOCK = 4 * 1024 * 1024


class PublicFiles(Protocol):
    """Which stored files a visible record needs (the catalog implements it; app.py wires
    it): only those are handed to anyone who asks, never a private file (training inputs)."""

    async def shown_among(self, sha256s: Sequence[str]) -> set[str]: ...


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    path: Path
    in_place: bool


def sha256_of(path: Path) -> str:
    """The file's SHA256, uppercase hex (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest().upper()


class FileStore:
    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db
        self.tmp = root / "tmp"
        self.stamps: dict[str, tuple[int, int]] = {}  # in place: (size, mtime_ns) verified
        self.changed: dict[str, str] = {}  # in place: SHA256 -> why it is no longer served
        self.on_changed: Callable[[str], Awaitable[None]] | None = None  # stop its torrent
        self.public: PublicFiles | None = None  # None: every stored file is public

    def prepare(self) -> None:
        """Make the temp folder and prove it writable, or say which folder and why not."""
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            probe = self.tmp / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"civitas")
            probe.unlink()
        except OSError as exc:
            raise store_error(exc, self.tmp, "the file store's temp folder") from None

    def path_for(self, sha256: str) -> Path:
        sha256 = sha256.upper()
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def temp_path(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
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

    def stamp(self, sha256: str, size: int, mtime_ns: int) -> None:
        """An in-place file was verified in this state (at publish, or re-verified)."""
        self.stamps[sha256.upper()] = (size, mtime_ns)
        self.changed.pop(sha256.upper(), None)

    async def get(self, sha256: str) -> StoredFile | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(blobs).where(blobs.c.sha256 == sha256.upper()))
            ).first()
        return None if row is None else _stored(row)

    async def public_path(self, sha256: str) -> Path | None:
        """Where the file lies, if it may be served to anyone: a visible record needs it."""
        if self.public is not None and not await self.public.shown_among([sha256.upper()]):
            return None
        return await self.local_path(sha256)

    async def local_path(self, sha256: str) -> Path | None:
        """Where the file lies, if this node has it, it is still there and (in place)
        still the file that was published."""
        stored = await self.get(sha256)
        if stored is None:
            return None
        if not stored.in_place:
            return stored.path if await asyncio.to_thread(stored.path.is_file) else None
        if stored.sha256 in self.changed:
            return None
        why = await self._in_place_change(stored)
        if why is None:
            return stored.path
        self.changed[stored.sha256] = why
        log.warning(
            "in-place file changed: no longer served or seeded",
            extra={"sha256": stored.sha256, "path": str(stored.path), "why": why},
        )
        if self.on_changed is not None:
            await self.on_changed(stored.sha256)
        return None

    async def _in_place_change(self, stored: StoredFile) -> str | None:
        """Why an in-place file is no longer the one published, or None."""
        try:
            st = await asyncio.to_thread(os.stat, stored.path)
        except OSError as exc:
            return f"{stored.path} cannot be read: {exc.strerror or exc}"
        if st.st_size != stored.size:
            return (
                f"{stored.path} is {st.st_size} bytes, it was {stored.size} bytes when "
                "published; publish it again once it is complete"
            )
        now = (st.st_size, st.st_mtime_ns)
        seen = self.stamps.get(stored.sha256)
        if seen is None or seen == now:
            # First sight since start (the size matches): taken as published; libtorrent
            # checks every piece it serves from a seed-mode torrent anyway.
            self.stamps[stored.sha256] = now
            return None
        try:
            digest = await asyncio.to_thread(sha256_of, stored.path)
        except OSError as exc:
            return f"{stored.path} cannot be read: {exc.strerror or exc}"
        if digest != stored.sha256:
            return (
                f"{stored.path} was rewritten: its SHA256 is now {digest}, not the "
                f"published {stored.sha256}; publish it again"
            )
        self.stamps[stored.sha256] = now  # touched, not changed
        return None

    async def clean(self) -> int:
        """Remove unfinished temp files and stored files that no row claims, except those a
        download or a wanted file waits for: those are verified and adopted."""
        removed = 0
        if self.tmp.exists():
            for leftover in self.tmp.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        async with self.db.read() as conn:
            known = set(
                (await conn.execute(sa.select(blobs.c.sha256).where(~blobs.c.in_place))).scalars()
            )
        orphans = [
            level
            for level in self.root.glob("[0-9A-F][0-9A-F]/[0-9A-F][0-9A-F]/*")
            if level.is_file() and level.name not in known
        ]
        adopted = await self._adopt(orphans)
        for orphan in orphans:
            if orphan.name not in adopted:
                orphan.unlink()
                removed += 1
        return removed

    async def _adopt(self, orphans: list[Path]) -> set[str]:
        """Orphans whose SHA256 a download or wanted file waits for, verified and recorded."""
        if not orphans:
            return set()
        names = [p.name for p in orphans]
        async with self.db.read() as conn:
            waited = set(
                (
                    await conn.execute(
                        sa.select(downloads.c.sha256).where(
                            downloads.c.sha256.in_(names), downloads.c.state == "downloading"
                        )
                    )
                ).scalars()
            ) | set(
                (
                    await conn.execute(
                        sa.select(wanted_files.c.sha256).where(wanted_files.c.sha256.in_(names))
                    )
                ).scalars()
            )
        adopted: set[str] = set()
        for path in orphans:
            if path.name not in waited:
                continue
            if await asyncio.to_thread(sha256_of, path) != path.name:
                continue  # not what its name says: removed with the other orphans
            size = (await asyncio.to_thread(path.stat)).st_size
            async with self.db.write() as conn:
                await self.add_row(conn, path.name, size, path, in_place=False)
                await conn.execute(
                    downloads.update()
                    .where(downloads.c.sha256 == path.name, downloads.c.state == "downloading")
                    .values(state="complete", finished=now_ms(), resume=None, error=None)
                )
                await conn.execute(wanted_files.delete().where(wanted_files.c.sha256 == path.name))
            adopted.add(path.name)
            log.info("stored file adopted at start", extra={"sha256": path.name})
        return adopted

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)


def store_error(exc: OSError, where: Path, what: str) -> InsufficientStorage | StorageUnavailable:
    """One line for a failed write to the store: which folder, why, what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"{what} {where} is on a full disk ({reason}): free space")
    if exc.errno == errno.EROFS:
        return StorageUnavailable(
            f"{what} {where} is on a read-only filesystem ({reason}): remount it read-write"
        )
    return StorageUnavailable(
        f"{what} {where} cannot be written ({reason}): check that it is a folder the node's "
        "user may write"
    )


def _stored(row: Any) -> StoredFile:
    """A ``blobs`` row as the file it names."""
    return StoredFile(row.sha256, row.size, Path(row.path), row.in_place)
