"""Which wanted file to ask which peer for next, so that no peer and no source starves
the others (pure: the I/O is in :mod:`.wanted`).

A *job* is one wanted file with the peers still to ask, in order of preference (the
peer that sent its record first). At most ``concurrency`` requests run at once, and at
most ``per_peer`` to any one peer: a peer that stalls holds one slot, never all of
them. A job whose preferred peer is busy asks the next one meanwhile. Among the jobs
that could start, the one whose *source* (the peer that sent its record; None: found
missing by a reconciliation) started least recently goes first, then first tries
before retries, then the oldest: one source's backlog, however long, takes turns with
every other source's files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class WantedItem(Protocol):
    @property
    def sha256(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def added(self) -> int: ...


Item = TypeVar("Item", bound=WantedItem)


@dataclass
class Job(Generic[Item]):
    item: Item
    peers: list[str]  # dids still to ask, preferred first
    errors: list[str] = field(default_factory=list)


class FetchPlan(Generic[Item]):
    def __init__(self, concurrency: int, per_peer: int = 1) -> None:
        self.concurrency = max(1, concurrency)
        self.per_peer = max(1, per_peer)
        self.jobs: dict[str, Job[Item]] = {}  # waiting or running, by SHA256
        self.running: dict[str, str] = {}  # SHA256 -> the peer asked
        self.busy: Counter[str] = Counter()  # requests running, by peer
        self._last_start: dict[str | None, int] = {}  # by source: when it last had a turn
        self._tick = 0

    def loaded_from(self, source: str | None) -> int:
        """How many of ``source``'s files the plan holds (waiting or running)."""
        return sum(1 for job in self.jobs.values() if job.item.source == source)

    def add(self, job: Job[Item]) -> None:
        self.jobs.setdefault(job.item.sha256, job)

    def next_starts(self) -> list[tuple[Job[Item], str]]:
        """The requests to start now: (job, peer did), within the slots."""
        starts: list[tuple[Job[Item], str]] = []
        while len(self.running) < self.concurrency:
            ready = [
                job
                for sha, job in self.jobs.items()
                if sha not in self.running and any(self._free(p) for p in job.peers)
            ]
            if not ready:
                break
            job = min(ready, key=self._priority)
            peer = next(p for p in job.peers if self._free(p))
            job.peers.remove(peer)
            self.busy[peer] += 1
            self.running[job.item.sha256] = peer
            self._tick += 1
            self._last_start[job.item.source] = self._tick
            starts.append((job, peer))
        return starts

    def finished(self, sha256: str, *, done: bool) -> None:
        """A request for ``sha256`` ended; ``done``: the job too (stored, or failed for
        good), else it may ask its next peer."""
        peer = self.running.pop(sha256, None)
        if peer is not None:
            self.busy[peer] -= 1
            if self.busy[peer] <= 0:
                del self.busy[peer]
        if done:
            self.jobs.pop(sha256, None)

    def exhausted(self) -> list[Job[Item]]:
        """Jobs with no request running and no peer left to ask (removed from the plan)."""
        out = [job for sha, job in self.jobs.items() if sha not in self.running and not job.peers]
        for job in out:
            del self.jobs[job.item.sha256]
        return out

    def _free(self, peer: str) -> bool:
        return self.busy[peer] < self.per_peer

    def _priority(self, job: Job[Item]) -> tuple[int, int, int]:
        item = job.item
        return (self._last_start.get(item.source, 0), item.attempts, item.added)
