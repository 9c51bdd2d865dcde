"""Live progress of long requests (uploads now), told to watchers as Server-Sent Events.

A client picks a random id, sends it with its upload (``POST /api/models?upload=ID``)
and watches ``GET /api/uploads/{ID}/events``. The route that does the work keeps a
:class:`Progress` up to date; :func:`sse_events` turns its changes into an event stream,
at most a few events a second, with a heartbeat comment while nothing changes. Entries
live in memory on this node only, and are forgotten a few minutes after they finish.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from node.errors import BadRequest, CivitasError, Conflict, Forbidden, NotFound
from node.tasks import wait_event

# "checking" covers everything after the last byte: hashing, the header check, signing
# and storing (Publisher.publish_stream has no finer hook).
Stage = Literal["receiving", "checking", "done", "failed"]
FINISHED: frozenset[Stage] = frozenset({"done", "failed"})
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
KEEP_S = 300.0  # how long a finished entry can still be watched
APPEAR_S = 5.0  # how long a watcher waits for an upload that has not reached the node yet
MAX_ENTRIES = 1024
EVENT_INTERVAL_S = 0.25  # at most ~4 events a second
HEARTBEAT_S = 15.0


class Progress:
    """One upload's state: its stage, bytes received, the total when known, the outcome."""

    def __init__(self, upload_id: str, owner: str | None, total: int | None) -> None:
        self.id = upload_id
        self.owner = owner  # the did that may watch it (besides admins)
        self.stage: Stage = "receiving"
        self.received = 0
        self.total = total
        self.error: str | None = None
        self.result: dict[str, Any] = {}
        self.finished_at: float | None = None
        self.version = 0  # bumped on every change
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.stage in FINISHED

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "received": self.received,
            "total": self.total,
            "error": self.error,
            **self.result,
        }

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def receive(self, received: int) -> None:
        """Bytes received so far (of the whole request body, like ``total``)."""
        if self.finished or received == self.received:
            return
        self.received = received
        self._notify()

    def set_stage(self, stage: Stage) -> None:
        if self.finished or stage == self.stage:
            return
        self.stage = stage
        self._notify()

    def done(self, **result: Any) -> None:
        if self.finished:
            return
        self.stage, self.result, self.finished_at = "done", result, time.monotonic()
        self._notify()

    def fail(self, message: str) -> None:
        if self.finished:
            return
        self.stage, self.error, self.finished_at = "failed", message, time.monotonic()
        self._notify()

    @contextmanager
    def failing(self) -> Iterator[Progress]:
        """Mark the entry failed when the block raises (the error still propagates)."""
        try:
            yield self
        except CivitasError as exc:
            self.fail(exc.message)
            raise
        except Exception:
            self.fail("internal error; see the node's log")
            raise
        except BaseException:
            self.fail("the upload was interrupted")
            raise

    async def changed(self, seen: int, wait_s: float) -> bool:
        """Wait until the entry differs from version ``seen``; False after ``wait_s``."""
        event = self._changed
        if self.version != seen:
            return True
        return await wait_event(event, wait_s)


def check_upload_id(upload_id: str) -> str:
    if not UPLOAD_ID.fullmatch(upload_id):
        raise BadRequest("an upload id is 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
    return upload_id


class UploadProgress:
    """In-memory registry of uploads by client-chosen id, bounded, expiring finished ones."""

    def __init__(
        self,
        *,
        keep_s: float = KEEP_S,
        max_entries: int = MAX_ENTRIES,
        appear_s: float = APPEAR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.appear_s = appear_s
        self.clock = clock
        self._entries: dict[str, Progress] = {}
        self._added = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def start(self, upload_id: str | None, owner: str | None, total: int | None) -> Progress:
        """A new entry; with no id, a detached one that nobody can watch (no ``?upload=``)."""
        if upload_id is None:
            return Progress("", owner, total)
        check_upload_id(upload_id)
        self._prune()
        if upload_id in self._entries:
            raise Conflict("this upload id is in use: pick a new random one")
        while len(self._entries) >= self.max_entries:
            self._evict_one()
        entry = Progress(upload_id, owner, total)
        self._entries[upload_id] = entry
        self._added.set()
        self._added = asyncio.Event()
        return entry

    def get(self, upload_id: str) -> Progress | None:
        self._prune()
        return self._entries.get(upload_id)

    async def watch(self, upload_id: str, did: str | None, *, admin: bool) -> Progress:
        """The entry ``did`` (or an admin) may watch, or the error that says why not.

        A watcher may ask before its upload's request reaches the node (a browser opens
        both at once): an unknown id gets ``appear_s`` seconds to show up before a 404.
        """
        check_upload_id(upload_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.appear_s
        while (entry := self.get(upload_id)) is None:
            added = self._added
            left = deadline - loop.time()
            if left <= 0:
                raise NotFound("no such upload on this node (or it finished a while ago)")
            await wait_event(added, left)
        if not admin and (did is None or did != entry.owner):
            raise Forbidden("only the user who started an upload may watch it")
        return entry

    def _prune(self) -> None:
        cutoff = self.clock() - self.keep_s
        for key, entry in list(self._entries.items()):
            if entry.finished_at is not None and entry.finished_at < cutoff:
                del self._entries[key]

    def _evict_one(self) -> None:
        """Make room: the oldest finished entry, else the oldest of all."""
        victim = next((k for k, e in self._entries.items() if e.finished), None)
        del self._entries[victim if victim is not None else next(iter(self._entries))]


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def sse_events(
    entry: Progress, *, interval: float = EVENT_INTERVAL_S, heartbeat: float = HEARTBEAT_S
) -> AsyncIterator[bytes]:
    """The entry's state now, then on every change (coalesced to one per ``interval``),
    with a ``:`` comment after ``heartbeat`` seconds of quiet; it ends once finished."""
    loop = asyncio.get_running_loop()
    seen = -1
    last_sent = -interval
    while True:
        if entry.version != seen:
            wait = interval - (loop.time() - last_sent)
            if wait > 0 and not entry.finished:
                await asyncio.sleep(wait)  # changes meanwhile fold into the next event
            seen, last_sent, finished = entry.version, loop.time(), entry.finished
            yield sse(entry.snapshot())
            if finished:
                return
        elif not await entry.changed(seen, heartbeat):
            yield b": keep-alive\n\n"
