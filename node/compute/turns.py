"""Whose turn it is, asked of the database: the fair next job and queue positions.

The rules are :mod:`node.compute.fairness`'s round robin (the requester whose last job
was leased longest ago, or never, goes first with their oldest job; a worker's donor
first), but computed from one row per requester (their oldest fitting job, their count)
rather than from a window of queued rows: however many jobs one member queues, the next
fair job is found, and positions cost a few queries per page, not a full order per job.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.compute import fairness
from node.compute.tables import compute_jobs

_jobs = compute_jobs.c


async def last_leases(conn: AsyncConnection, requesters: Collection[int]) -> dict[int, int]:
    if not requesters:
        return {}
    rows = await conn.execute(
        sa.select(_jobs.requester_id, sa.func.max(_jobs.leased_at))
        .where(_jobs.requester_id.in_(list(requesters)), _jobs.leased_at.is_not(None))
        .group_by(_jobs.requester_id)
    )
    return {requester: int(when) for requester, when in rows}


def _fitting(
    caps: fairness.Capabilities, capped: Collection[int], owner: int | None
) -> list[sa.ColumnElement[bool]]:
    where = [
        _jobs.state == "queued",
        _jobs.kind.in_(sorted(caps.kinds)),
        _jobs.pixels <= caps.max_pixels,
    ]
    if capped:
        where.append(_jobs.requester_id.not_in(list(capped)))
    if owner is not None:
        where.append(_jobs.requester_id == owner)
    return where


async def next_job(
    conn: AsyncConnection,
    caps: fairness.Capabilities,
    capped: Collection[int],
    owner: int | None,
    donor: int | None,
) -> int | None:
    """The id of the job a worker should lease now (``owner``: it serves only theirs)."""
    where = _fitting(caps, capped, owner)
    heads = (
        await conn.execute(
            sa.select(_jobs.requester_id, sa.func.min(_jobs.created))
            .where(*where)
            .group_by(_jobs.requester_id)
        )
    ).all()
    if not heads:
        return None
    last = await last_leases(conn, [r for r, _ in heads])
    requester = min(
        heads, key=lambda h: (0 if h[0] == donor else 1, last.get(h[0], -1), h[1], h[0])
    )[0]
    return await conn.scalar(
        sa.select(_jobs.id)
        .where(*where, _jobs.requester_id == requester)
        .order_by(_jobs.created, _jobs.id)
        .limit(1)
    )


async def why_nothing(
    conn: AsyncConnection,
    caps: fairness.Capabilities,
    capped: Collection[int],
    owner: int | None,
) -> tuple[str, int]:
    """Why no queued job fits this worker, in words (see :func:`fairness.why_nothing`),
    from one row per (kind, requester, too big) group; and how many jobs are queued."""
    big = _jobs.pixels > caps.max_pixels
    query = sa.select(_jobs.kind, _jobs.requester_id, big, sa.func.count()).where(
        _jobs.state == "queued"
    )
    if owner is not None:
        query = query.where(_jobs.requester_id == owner)
    rows = await conn.execute(query.group_by(_jobs.kind, _jobs.requester_id, big))
    groups = [
        (fairness.Queued(0, requester, 0, kind, caps.max_pixels + int(bool(over))), int(n))
        for kind, requester, over, n in rows
    ]
    return fairness.why_nothing_counted(groups, caps, capped), sum(n for _, n in groups)


async def positions(conn: AsyncConnection, rows: Sequence[Any]) -> dict[int, int]:
    """1-based places of the queued ``rows`` in the round-robin order, if nothing else
    arrived. A requester's k-th job comes after every requester's first k-1 turns and
    the k-th turns of those ordered before them."""
    ids = [row.id for row in rows if row.state == "queued"]
    if not ids:
        return {}
    counts = {
        r: (int(n), int(first))
        for r, n, first in await conn.execute(
            sa.select(_jobs.requester_id, sa.func.count(), sa.func.min(_jobs.created))
            .where(_jobs.state == "queued")
            .group_by(_jobs.requester_id)
        )
    }
    last = await last_leases(conn, list(counts))
    order = {r: (last.get(r, -1), first, r) for r, (_, first) in counts.items()}
    rank = sa.func.row_number().over(
        partition_by=_jobs.requester_id, order_by=(_jobs.created, _jobs.id)
    )
    ranked = (
        sa.select(_jobs.id, _jobs.requester_id, rank.label("k"))
        .where(_jobs.state == "queued", _jobs.requester_id.in_({r.requester_id for r in rows}))
        .subquery()
    )
    found = await conn.execute(
        sa.select(ranked.c.id, ranked.c.requester_id, ranked.c.k).where(ranked.c.id.in_(ids))
    )
    out = {}
    for job_id, requester, k in found:
        before = sum(min(n, k - 1) for n, _ in counts.values())
        ahead = sum(1 for r, (n, _) in counts.items() if n >= k and order[r] < order[requester])
        out[job_id] = before + ahead + 1
    return out
