"""Compute as the app sees it: the queue, the result desk, worker auth, and the reaper.

:func:`build_compute` is called by ``node/app.py`` with what compute needs; the reaper is
one named background task that requeues jobs whose lease ran out and expires stale ones,
started and stopped by the app's ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.catalog.ingest_limits import ImageDecodes
from node.catalog.publish import Publisher
from node.compute.auth import WorkerAuth
from node.compute.publishing import OutputPublisher
from node.compute.queue import JobQueue
from node.compute.results import ResultDesk
from node.compute.uploads import OutputUploads
from node.compute.workers import TokenLive
from node.config import ComputeSection
from node.p2p.keys import SigningKey
from node.tasks import stop_tasks

log = logging.getLogger("civitas.compute")


@dataclass
class Compute:
    queue: JobQueue
    desk: ResultDesk
    auth: WorkerAuth
    uploads: OutputUploads
    outputs: OutputPublisher
    config: ComputeSection
    decodes: ImageDecodes  # the node's one image-decode pool (training inputs)
    _reaper: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        swept = await self.desk.sweep()
        if swept:
            log.info("removed the uploads of jobs no worker holds", extra={"jobs": swept})
        self._reaper = asyncio.create_task(self._reap_forever(), name="compute-reaper")

    async def stop(self) -> None:
        await stop_tasks([self._reaper])
        self._reaper = None

    async def _reap_forever(self) -> None:
        interval = max(0.5, min(self.config.lease_s / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await self.queue.reap()
            except Exception:
                log.exception("compute reaper failed; trying again")
                continue
            if changed:
                log.info("requeued or expired jobs", extra={"jobs": changed})


def build_compute(
    config: ComputeSection,
    publisher: Publisher,
    author_key: Callable[[str], SigningKey],
    outputs_dir: Path,
    node_did: str,
    *,
    token_live: TokenLive | None = None,
) -> Compute:
    """``token_live`` says whether an API token (by id) still works: a worker registered
    with one is refused once it does not (the accounts service answers)."""
    queue = JobQueue(publisher.db, publisher.store, config)
    queue.registry.token_live = token_live
    desk = ResultDesk(queue, publisher, author_key, outputs_dir, config.max_output_bytes)
    queue.on_released = desk.discard
    auth = WorkerAuth(node_did)
    outputs = OutputPublisher(queue, desk, publisher, author_key)
    uploads = OutputUploads(auth, desk, config)
    return Compute(queue, desk, auth, uploads, outputs, config, publisher.decodes)
