"""Resized image previews for ``/images/<sha>/width=N/…`` URLs: made once, kept in a
bounded cache.

Only the widths of ``images.PREVIEW_WIDTHS`` are ever made (the route rounds), at most
``concurrency`` at a time, and one request makes a given preview while others asking
for it wait for that one. The cache holds at most ``max_bytes``; the least recently
used previews are deleted first (the order survives a restart by file time).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from node.catalog.ingest_limits import ImageDecodes

PREVIEW_CACHE_BYTES = 256 * 1024 * 1024
PREVIEW_CONCURRENCY = 2


class PreviewCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int = PREVIEW_CACHE_BYTES,
        concurrency: int = PREVIEW_CONCURRENCY,
        decodes: ImageDecodes | None = None,
    ) -> None:
        self.decodes = decodes or ImageDecodes()  # the node's pool: at most a few decodes
        self.root = root
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] | None = None  # least recently used first
        self._total = 0
        self._making: dict[str, asyncio.Future[bytes]] = {}
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def total_bytes(self) -> int:
        return self._total

    async def get(
        self, sha256: str, original: Path, width: int, resize: Callable[[bytes, int], bytes]
    ) -> bytes:
        name = f"{sha256}_{width}"
        sizes = await self._index()
        if name in sizes:
            sizes.move_to_end(name)
            try:
                return await asyncio.to_thread((self.root / name).read_bytes)
            except FileNotFoundError:  # deleted behind our back: make it again
                self._total -= sizes.pop(name)
        if name in self._making:
            return await asyncio.shield(self._making[name])
        made: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._making[name] = made
        try:
            async with self._slots:
                data = await self.decodes.run(self._make, name, original, width, resize)
            await self._keep(name, len(data))
            made.set_result(data)
            return data
        except BaseException as exc:
            made.set_exception(exc)
            made.exception()  # waiters (if any) get it; none: not an unretrieved error
            raise
        finally:
            del self._making[name]

    def _make(
        self, name: str, original: Path, width: int, resize: Callable[[bytes, int], bytes]
    ) -> bytes:
        data = resize(original.read_bytes(), width)
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{uuid.uuid4().hex}.tmp"
        temp.write_bytes(data)
        os.replace(temp, self.root / name)
        return data

    async def _keep(self, name: str, size: int) -> None:
        sizes = await self._index()
        sizes[name] = size
        self._total += size
        doomed = []
        while self._total > self.max_bytes and len(sizes) > 1:
            old, old_size = sizes.popitem(last=False)
            self._total -= old_size
            doomed.append(self.root / old)
        if doomed:
            await asyncio.to_thread(_unlink_all, doomed)

    async def _index(self) -> OrderedDict[str, int]:
        if self._sizes is None:
            found = await asyncio.to_thread(_scan, self.root)
            if self._sizes is None:
                self._sizes = OrderedDict(found)
                self._total = sum(self._sizes.values())
        return self._sizes


def _scan(root: Path) -> list[tuple[str, int]]:
    """The cached previews, least recently written first; stray temp files removed."""
    if not root.is_dir():
        return []
    entries = []
    for path in root.iterdir():
        if path.name.startswith("."):
            path.unlink(missing_ok=True)
            continue
        stat = path.stat()
        entries.append((stat.st_mtime_ns, path.name, stat.st_size))
    return [(name, size) for _, name, size in sorted(entries)]


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
