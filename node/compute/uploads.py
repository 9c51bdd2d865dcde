"""Output uploads: who may send, how much, how many at once and for how long, all decided
before a byte of the body is read.

In order: the worker's signature over the SHA-256 in the path (401, with a replay
cache); the lease (the worker holds this job: 403 if another worker does, 409 if nobody
does) and the job's room (no more distinct outputs than the job makes, 409); the declared
``Content-Length`` against the per-output cap (413: a generated image at most the image
cap, a LoRA ``compute.max_output_bytes``); a free upload slot of that worker
(``compute.max_worker_uploads``, else 429 with ``Retry-After``). Only then is the body
streamed to a temp file, within ``compute.upload_timeout_s`` (408), counted against the
cap whatever the header said; the temp file is removed on every failure path, a client
that disconnects mid-body included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from node.compute.auth import WorkerAuth, remove_now, spool
from node.compute.results import ResultDesk, check_sha256
from node.config import ComputeSection
from node.errors import CivitasError, PayloadTooLarge

BUSY_RETRY_S = 5


class UploadsBusy(CivitasError):
    """A worker already sends as many outputs as it may at once."""

    code = "uploads_busy"
    status = 429
    retry_after_s = BUSY_RETRY_S


class UploadTimeout(CivitasError):
    code = "upload_timeout"
    status = 408


class OutputUploads:
    def __init__(self, auth: WorkerAuth, desk: ResultDesk, config: ComputeSection) -> None:
        self.auth = auth
        self.desk = desk
        self.config = config
        self.active: Counter[str] = Counter()  # uploads in progress, by worker did

    @contextlib.contextmanager
    def _slot(self, did: str) -> Iterator[None]:
        limit = self.config.max_worker_uploads
        if self.active[did] >= limit:
            raise UploadsBusy(
                f"this worker already sends {limit} output(s) at once "
                f"(compute.max_worker_uploads): retry in {BUSY_RETRY_S} s"
            )
        self.active[did] += 1
        try:
            yield
        finally:
            self.active[did] -= 1
            if self.active[did] <= 0:
                del self.active[did]

    async def receive(self, request: web.Request, job_id: int, sha256: str) -> dict[str, Any]:
        """Authenticate, authorize and size the upload, then take its bytes."""
        sha256 = check_sha256(sha256)
        did = self.auth.verify_digest(request, sha256.lower())
        cap = await self.desk.upload_cap(job_id, did, sha256)
        declared = request.content_length
        if declared is not None and declared > cap:
            raise PayloadTooLarge(f"this output may be at most {cap:,} bytes; {declared:,} sent")
        with self._slot(did):
            temp = self.desk.temp_path()
            try:
                async with asyncio.timeout(self.config.upload_timeout_s):
                    digest, size = await spool(request.content, temp, cap)
                await self.desk.stage(job_id, did, temp, sha256, digest)
            except TimeoutError:
                raise UploadTimeout(
                    f"the upload took longer than {self.config.upload_timeout_s} s "
                    "(compute.upload_timeout_s)"
                ) from None
            finally:
                remove_now(temp)
        return {"sha256": sha256, "size": size}
