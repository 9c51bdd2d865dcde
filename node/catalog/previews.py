"""Resized image previews for ``/images/<sha>/width=N/…`` URLs: made once, kept in a
bounded cache.

Only the widths of ``images.PREVIEW_WIDTHS`` are ever made (the route rounds), at most
``concurrency`` at a time, in the node's decode processes, and one request makes a given
preview while others asking for it wait for that one. At most ``max_pending`` previews
are being made or waiting to be: a request for one more is answered 503 with
``Retry-After`` at once, so a flood of requests for previews not yet made queues no
unbounded work (cached previews and originals are still served). The cache holds at
most ``max_bytes``; the least recently used previews are deleted first (the order
survives a restart by file time).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from node.catalog.ingest_limits import ImageDecodes
from node.errors import CivitasError

PREVIEW_CACHE_BYTES = 256 * 1024 * 1024
PREVIEW_CONCURRENCY = 2
PREVIEW_PENDING = 32  # previews being made or waiting for a slot; one more is 503
PREVIEW_RETRY_AFTER_S = 5


class PreviewsBusy(CivitasError):
    """As many previews as the node queues are already being made."""

    code = "previews_busy"
    status = 503
    retry_after_s = PREVIEW_RETRY_AFTER_S


class PreviewCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int = PREVIEW_CACHE_BYTES,
        concurrency: int = PREVIEW_CONCURRENCY,
        decodes: ImageDecodes | None = None,
        max_pending: int = PREVIEW_PENDING,
    ) -> None:
        self.decodes = decodes or ImageDecodes()  # the node's pool: at most a few decodes
        self.root = root
        self.max_bytes = max_bytes
        self.max_pending = max_pending
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
        if len(self._making) >= self.max_pending:
            raise PreviewsBusy(
                f"this node is already making {self.max_pending} previews: "
                f"retry in {PREVIEW_RETRY_AFTER_S} s, or ask for the original"
            )
        made: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._making[name] = made
        temp = self.root / f".{uuid.uuid4().hex}.tmp"
        try:
            async with self._slots:
                data = await self.decodes.run(
                    _make, self.root / name, temp, original, width, resize
                )
            await self._keep(name, len(data))
            made.set_result(data)
            return data
        except BaseException as exc:
            temp.unlink(missing_ok=True)  # a decode that failed (its process died) left it
            made.set_exception(exc)
            made.exception()  # waiters (if any) get it; none: not an unretrieved error
            raise
        finally:
            del self._making[name]

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


def _make(
    path: Path, temp: Path, original: Path, width: int, resize: Callable[[bytes, int], bytes]
) -> bytes:
    """Make one preview and store it at ``path`` by way of ``temp`` (in a decode process:
    a module-level function, ``resize`` too)."""
    data = resize(original.read_bytes(), width)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(data)
    os.replace(temp, path)
    return data


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
