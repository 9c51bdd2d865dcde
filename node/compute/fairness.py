"""Who goes next, without a currency (pure functions over queued jobs).

Round-robin across requesters: the requester whose last job was leased longest ago (or
never) goes first, with their oldest job; then they go to the back. A worker serves its
donor's own requests before anyone else's. A requester already at the concurrency cap
waits. When nothing fits a worker, :func:`why_nothing` says why, in words.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Queued:
    id: int
    requester: int
    created: int
    kind: str
    pixels: int


@dataclass(frozen=True)
class Capabilities:
    kinds: frozenset[str]
    max_pixels: int


def round_robin(
    jobs: Sequence[Queued], last_lease: Mapping[int, int], donor: int | None = None
) -> list[Queued]:
    """The order in which ``jobs`` would be leased if nothing else arrived."""
    by_requester: dict[int, list[Queued]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (j.created, j.id)):
        by_requester[job.requester].append(job)
    # heap of (donor first, last lease, oldest job's created, requester)
    heap = [
        (0 if r == donor else 1, last_lease.get(r, -1), queue[0].created, r)
        for r, queue in by_requester.items()
    ]
    heapq.heapify(heap)
    turn = max([*last_lease.values(), 0]) + 1  # later than every real lease
    out: list[Queued] = []
    while heap:
        first, _, _, requester = heapq.heappop(heap)
        queue = by_requester[requester]
        out.append(queue.pop(0))
        if queue:
            heapq.heappush(heap, (first, turn, queue[0].created, requester))
            turn += 1
    return out


def fits(job: Queued, caps: Capabilities) -> bool:
    return job.kind in caps.kinds and job.pixels <= caps.max_pixels


def pick(
    jobs: Sequence[Queued],
    caps: Capabilities,
    last_lease: Mapping[int, int],
    capped: Collection[int],
    donor: int | None,
) -> Queued | None:
    """The job this worker should lease now, if any."""
    eligible = [j for j in jobs if fits(j, caps) and j.requester not in capped]
    order = round_robin(eligible, last_lease, donor)
    return order[0] if order else None


def why_nothing(jobs: Sequence[Queued], caps: Capabilities, capped: Collection[int]) -> str:
    """Why none of the queued ``jobs`` fits this worker, e.g. "3 queued jobs: 2 need …"."""
    return why_nothing_counted([(job, 1) for job in jobs], caps, capped)


def why_nothing_counted(
    groups: Sequence[tuple[Queued, int]], caps: Capabilities, capped: Collection[int]
) -> str:
    """:func:`why_nothing` over groups of alike jobs: a job standing for ``n`` of them."""
    total = sum(n for _, n in groups)
    if not total:
        return "the queue is empty"
    kinds: dict[str, int] = defaultdict(int)
    too_big = waiting = 0
    for job, n in groups:
        if job.kind not in caps.kinds:
            kinds[job.kind] += n
        elif job.pixels > caps.max_pixels:
            too_big += n
        elif job.requester in capped:
            waiting += n
    runs = ", ".join(sorted(caps.kinds)) or "nothing"
    parts = [
        f"{n} is a {kind} job and you only run {runs}"
        if n == 1
        else f"{n} are {kind} jobs and you only run {runs}"
        for kind, n in sorted(kinds.items())
    ]
    if too_big:
        verb = "needs" if too_big == 1 else "need"
        parts.append(f"{too_big} {verb} more than your max pixels ({caps.max_pixels:,})")
    if waiting:
        parts.append(
            f"{waiting} {'waits' if waiting == 1 else 'wait'} until their requester's running "
            "jobs finish (compute.per_requester_running)"
        )
    return f"{total} queued job{'' if total == 1 else 's'}: {', '.join(parts)}"
