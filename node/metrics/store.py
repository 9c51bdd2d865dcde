"""The counts a scrape reads from the database, in one read transaction.

This is monitoring's one read-only view across packages: a handful of ``GROUP BY``
counts over tables that p2p, compute and moderation own, so that a scrape costs one
hop to the database whatever the node holds. It never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.compute.tables import compute_jobs, compute_workers
from node.db import Database
from node.moderation.tables import decision_outcomes, enforced_records
from node.p2p.tables import downloads, records

WORKER_ACTIVE_MS = 5 * 60 * 1000  # a worker seen within this long counts as active


@dataclass
class Counts:
    records: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, state)
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, state)
    workers: int = 0
    workers_active: int = 0
    decisions: dict[str, int] = field(default_factory=dict)  # outcome
    enforced_records: int = 0
    downloads: dict[str, int] = field(default_factory=dict)  # state


async def _grouped(conn: AsyncConnection, *columns: Any) -> dict[Any, int]:
    rows = await conn.execute(sa.select(*columns, sa.func.count()).group_by(*columns))
    return {(tuple(row[:-1]) if len(columns) > 1 else row[0]): int(row[-1]) for row in rows}


async def read_counts(db: Database, now_ms: int) -> Counts:
    async with db.read() as conn:
        workers = await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count().filter(compute_workers.c.last_seen >= now_ms - WORKER_ACTIVE_MS),
            ).select_from(compute_workers)
        )
        total, active = workers.one()
        return Counts(
            records=await _grouped(conn, records.c.type, records.c.state),
            jobs=await _grouped(conn, compute_jobs.c.kind, compute_jobs.c.state),
            workers=int(total or 0),
            workers_active=int(active or 0),
            decisions=await _grouped(conn, decision_outcomes.c.outcome),
            enforced_records=int(
                await conn.scalar(sa.select(sa.func.count()).select_from(enforced_records)) or 0
            ),
            downloads=await _grouped(conn, downloads.c.state),
        )
