"""Training inputs in the file store: private to their job, counted against the member's
quota, and deleted when no job needs them any more.

A training image is stored by SHA256 like any file, but no record names it: it is not
served by ``/federation/v1/blobs`` or ``/webseed`` (the store serves only what a visible
record needs), only to the worker holding the job. Images are kept only for a job that
passed its checks (:class:`Pending`); when a job ends (done, failed, cancelled, expired)
or was refused after its images were kept, each of its files that no other job's inputs
and no visible record need is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.compute.tables import compute_job_inputs, compute_jobs
from node.config import ComputeSection
from node.db import Database
from node.errors import PayloadTooLarge
from node.p2p.filestore import FileStore
from node.p2p.tables import blobs

if TYPE_CHECKING:
    from node.compute.queue import TrainImage

FINISHED = ("done", "failed", "cancelled", "expired")


@dataclass(frozen=True)
class Pending:
    """Training images received but not kept yet: ``keep`` decodes and stores them, and is
    called only once the job's parameters, base model and the member's quota passed."""

    count: int
    size: int  # bytes, as received
    keep: Callable[[], Awaitable[list[TrainImage]]]


class InputFiles:
    def __init__(self, db: Database, store: FileStore, config: ComputeSection) -> None:
        self.db = db
        self.store = store
        self.config = config

    async def check_quota(self, conn: AsyncConnection, user_id: int, adding: int) -> None:
        """Refuse (413) inputs that would take the member's stored inputs past the quota."""
        theirs = (
            sa.select(compute_job_inputs.c.sha256)
            .join(compute_jobs, compute_jobs.c.id == compute_job_inputs.c.job_id)
            .where(compute_jobs.c.requester_id == user_id, compute_jobs.c.state.not_in(FINISHED))
        )
        held = int(
            await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0)).where(
                    blobs.c.sha256.in_(theirs)
                )
            )
            or 0
        )
        quota = self.config.max_input_bytes_per_account
        if held + adding > quota:
            raise PayloadTooLarge(
                f"your unfinished training jobs hold {held:,} bytes of images; {adding:,} more "
                f"would pass your quota of {quota:,} (compute.max_input_bytes_per_account): "
                "cancel a job or wait until one ends"
            )

    async def release(self, job_ids: Sequence[int]) -> None:
        """Delete the inputs of those of ``job_ids`` that have finished."""
        if not job_ids:
            return
        async with self.db.write() as conn:
            finished = (
                sa.select(compute_jobs.c.id)
                .where(compute_jobs.c.id.in_(list(job_ids)))
                .where(compute_jobs.c.state.in_(FINISHED))
            )
            rows = await conn.execute(
                sa.select(compute_job_inputs.c.sha256).where(
                    compute_job_inputs.c.job_id.in_(finished)
                )
            )
            sha256s = set(rows.scalars())
            await conn.execute(
                compute_job_inputs.delete().where(compute_job_inputs.c.job_id.in_(finished))
            )
        await self.forget(sha256s)

    async def forget(self, sha256s: Collection[str]) -> None:
        """Delete these stored files unless a job's inputs or a visible record need them."""
        if not sha256s:
            return
        wanted = list(sha256s)
        shown = await self.store.public.shown_among(wanted) if self.store.public else set()
        doomed: list[Path] = []
        async with self.db.write() as conn:
            used = set(
                (
                    await conn.execute(
                        sa.select(compute_job_inputs.c.sha256)
                        .where(compute_job_inputs.c.sha256.in_(wanted))
                        .distinct()
                    )
                ).scalars()
            )
            free = [s for s in wanted if s not in used and s not in shown]
            if not free:
                return
            rows = await conn.execute(
                sa.select(blobs.c.sha256, blobs.c.path).where(
                    blobs.c.sha256.in_(free), blobs.c.in_place.is_(False)
                )
            )
            found = rows.all()
            doomed = [Path(path) for _, path in found]
            await conn.execute(blobs.delete().where(blobs.c.sha256.in_([s for s, _ in found])))
        await asyncio.to_thread(_unlink_all, doomed)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
