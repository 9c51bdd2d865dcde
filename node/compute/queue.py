"""The job queue: submission, fair leasing to workers, progress, expiry, cancellation.

Jobs are node-local rows (never records). A job moves queued → leased (a worker popped
it) → running (its first progress report) → done | failed | cancelled | expired. Each
lease lasts ``compute.lease_s`` from the last report; a lease that runs out puts the job
back in the queue, and after ``compute.max_failures`` failures or lost leases it fails
for good. A job queued longer than ``compute.queue_timeout_hours`` expires. Every write
goes through the node's one writer, so two pops never lease the same job.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.compute import fairness, params, resources, turns
from node.compute.input_files import InputFiles, Pending
from node.compute.samplers import SAMPLERS
from node.compute.tables import JOB_KINDS, compute_job_inputs, compute_jobs, compute_workers
from node.compute.workers import WorkerRegistry, check_kinds
from node.config import ComputeSection
from node.db import Database
from node.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests
from node.http import Principal
from node.p2p.filestore import FileStore
from node.p2p.records import now_ms
from node.tasks import wait_event

ACTIVE = ("leased", "running")
FINISHED = ("done", "failed", "cancelled", "expired")
MAX_WORKER_NAME = 64
QUEUE_FULL_RETRY_S = 60


@dataclass(frozen=True)
class TrainImage:
    name: str
    sha256: str  # already in the file store
    caption: str


class JobEvents:
    """Wakes whoever watches a job (its live progress stream) when the job changes."""

    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}

    def notify(self, job_id: int) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait(self, job_id: int, wait_s: float) -> bool:
        event = self._events.setdefault(job_id, asyncio.Event())
        return await wait_event(event, wait_s)


def _described(row: Any, position: int | None) -> dict[str, Any]:
    """A job as its requester sees it; ``position``: its place in the queue, if queued."""
    files = json.loads(row.files)
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "position": position,
        "params": json.loads(row.params),
        "model_version_id": files[0]["model_version_id"],
        "loras": [
            {"model_version_id": f["model_version_id"], "weight": f["weight"]}
            for f in files
            if f["role"] == "lora"
        ],
        "progress": json.loads(row.progress),
        "attempts": row.attempts,
        "failures": row.failures,
        "error": row.error,
        "results": json.loads(row.results),
        "worker": row.worker,
        "created": row.created,
        "updated": row.updated,
        "finished": row.finished,
    }


class JobQueue:
    def __init__(
        self,
        db: Database,
        store: FileStore,
        config: ComputeSection,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.store = store
        self.config = config
        self.clock = clock
        self.events = JobEvents()
        self.registry = WorkerRegistry(db, lambda: self.clock())
        self.inputs = InputFiles(db, store, config)
        self.on_released: Callable[[int], Awaitable[None]] | None = None

    # --- submission ------------------------------------------------------------------

    async def submit(
        self,
        user: Any,
        data: dict[str, Any],
        images: Sequence[TrainImage] = (),
        *,
        pending: Pending | None = None,
    ) -> dict[str, Any]:
        """Check and queue a job for ``user`` (a local account); returns its description.

        ``pending`` training images are kept only once everything else passed (the
        parameters, the base model, the member's quota); if the job is refused after
        that, the files kept for it are deleted again."""
        if pending is None:
            return await self._submit(user, data, images)
        spec = self._spec(data, pending.count)
        async with self.db.read() as conn:
            await self._resolve(conn, data.get("kind", "generate"), spec)
            await self._check_queued(conn, user.id)
            await self.inputs.check_quota(conn, user.id, pending.size)
        kept = await pending.keep()
        try:
            return await self._submit(user, data, kept)
        except BaseException:
            await asyncio.shield(self.inputs.forget({image.sha256 for image in kept}))
            raise

    async def check_training(self, user: Any, data: dict[str, Any]) -> None:
        """A training job's parameters, base model and the member's queue room, checked
        before any of its images is received (their count is checked with them)."""
        if data.get("kind") != "train":
            raise BadRequest("only training jobs take images: set kind to train")
        spec = self._spec(data, 1)
        async with self.db.read() as conn:
            await self._resolve(conn, "train", spec)
            await self._check_queued(conn, user.id)

    def _spec(self, data: dict[str, Any], images: int) -> params.JobSpec:
        if not self.config.enabled:
            raise Forbidden("this node does not run compute jobs (compute.enabled is false)")
        kind = data.get("kind", "generate")
        fresh = secrets.randbelow(2**32)
        if kind == "generate":
            if images:
                raise BadRequest("a generation job takes no images")
            return params.check_generate(
                data, samplers=SAMPLERS, max_pixels=self.config.max_pixels, fresh_seed=fresh
            )
        if kind == "train":
            return params.check_train(
                data, images=images, max_images=self.config.max_train_images, fresh_seed=fresh
            )
        raise BadRequest(f"'kind' must be one of {', '.join(JOB_KINDS)}")

    async def _check_queued(self, conn: AsyncConnection, user_id: int) -> None:
        """A member may have at most ``compute.max_queued_per_account`` jobs waiting."""
        cap = self.config.max_queued_per_account
        waiting = await conn.scalar(
            sa.select(sa.func.count()).where(
                compute_jobs.c.requester_id == user_id, compute_jobs.c.state == "queued"
            )
        )
        if (waiting or 0) >= cap:
            raise TooManyRequests(
                f"you have {waiting} jobs waiting, the most one member may queue "
                f"(compute.max_queued_per_account = {cap}): wait until one is taken or "
                "cancel one",
                retry_after=QUEUE_FULL_RETRY_S,
            )

    async def _resolve(
        self, conn: AsyncConnection, kind: str, spec: params.JobSpec
    ) -> tuple[Any, list[dict[str, Any]]]:
        """The base model version and the files a worker fetches, or why not."""
        base = await resources.resolve(conn, spec.version, "model_version_id")
        files = [base.file_entry("checkpoint")]
        if kind == "generate":
            resources.check_generation(base, "checkpoint")
            for lora in spec.loras:
                found = await resources.resolve(conn, lora.version, "loras")
                resources.check_generation(found, "lora")
                files.append(found.file_entry("lora", lora.weight))
        else:
            resources.check_training(base)
        return base, files

    async def _submit(
        self, user: Any, data: dict[str, Any], images: Sequence[TrainImage]
    ) -> dict[str, Any]:
        kind = data.get("kind", "generate")
        spec = self._spec(data, len(images))
        now = self.clock()
        async with self.db.write() as conn:
            base, files = await self._resolve(conn, kind, spec)
            await self._check_queued(conn, user.id)
            job_id = await conn.scalar(
                compute_jobs.insert()
                .values(
                    kind=kind,
                    requester_id=user.id,
                    requester_did=user.did,
                    state="queued",
                    params=json.dumps(spec.params),
                    version_id=base.version_id,
                    files=json.dumps(files),
                    pixels=spec.pixels,
                    created=now,
                    updated=now,
                )
                .returning(compute_jobs.c.id)
            )
            assert job_id is not None
            if images:
                await conn.execute(
                    compute_job_inputs.insert(),
                    [
                        {"job_id": job_id, "position": i, **_input_row(image)}
                        for i, image in enumerate(images)
                    ],
                )
            return await self._describe(conn, await self._row(conn, job_id))

    # --- reading ---------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, job_id: int) -> Any:
        row = (
            await conn.execute(sa.select(compute_jobs).where(compute_jobs.c.id == job_id))
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id} on this node")
        return row

    async def visible_row(self, conn: AsyncConnection, job_id: int, who: Principal) -> Any:
        row = await self._row(conn, job_id)
        if not who.is_admin and (who.user is None or who.user.id != row.requester_id):
            raise NotFound(f"no job {job_id} of yours on this node")
        return row

    async def get(self, job_id: int, who: Principal) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await self._describe(conn, await self.visible_row(conn, job_id, who))

    async def mine(self, who: Principal, limit: int = 50) -> list[dict[str, Any]]:
        query = sa.select(compute_jobs).order_by(compute_jobs.c.id.desc()).limit(limit)
        if who.user is not None:
            query = query.where(compute_jobs.c.requester_id == who.user.id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
            places = await turns.positions(conn, rows)
        return [_described(row, places.get(row.id)) for row in rows]

    async def _describe(self, conn: AsyncConnection, row: Any) -> dict[str, Any]:
        return _described(row, (await turns.positions(conn, [row])).get(row.id))

    # --- cancelling --------------------------------------------------------------------

    async def cancel(self, job_id: int, who: Principal) -> dict[str, Any]:
        async with self.db.write() as conn:
            row = await self.visible_row(conn, job_id, who)
            if row.state in FINISHED:
                raise Conflict(f"job {job_id} is {row.state} already")
            await self._finish(conn, job_id, "cancelled", error="cancelled by its requester")
            described = await self._describe(conn, await self._row(conn, job_id))
        await self._released([job_id])
        return described

    async def _finish(
        self, conn: AsyncConnection, job_id: int, state: str, *, error: str | None = None
    ) -> None:
        now = self.clock()
        await conn.execute(
            compute_jobs.update()
            .where(compute_jobs.c.id == job_id)
            .values(
                state=state,
                error=error,
                updated=now,
                finished=now,
                lease_worker=None,
                lease_until=None,
            )
        )

    # --- leasing ---------------------------------------------------------------------

    async def pop(self, did: str, data: dict[str, Any]) -> dict[str, Any]:
        """Lease the next job this worker can run, or say why nothing fits."""
        await self.reap()
        async with self.db.write() as conn:
            worker = await self.registry.get(conn, did)
            kinds = worker.kinds
            if "kinds" in data:
                kinds = kinds & check_kinds(data["kinds"])
            max_pixels = min(
                worker.max_pixels,
                params.int_field(data, "max_pixels", 1, 2**40, worker.max_pixels),
            )
            caps = fairness.Capabilities(kinds, max_pixels)
            now = self.clock()
            await conn.execute(
                compute_workers.update().where(compute_workers.c.did == did).values(last_seen=now)
            )
            owner = None if worker.serves_all else worker.owner_id  # a member's: theirs
            capped = await self._capped(conn)
            chosen = await turns.next_job(conn, caps, capped, owner, worker.owner_id)
            if chosen is None:
                return {"job": None, "reason": await self._why_nothing(conn, caps, capped, owner)}
            await conn.execute(
                compute_jobs.update()
                .where(compute_jobs.c.id == chosen, compute_jobs.c.state == "queued")
                .values(
                    state="leased",
                    lease_worker=did,
                    lease_until=now + self.config.lease_s * 1000,
                    leased_at=now,
                    attempts=compute_jobs.c.attempts + 1,
                    updated=now,
                    progress="{}",
                )
            )
            lease = await self._lease(conn, await self._row(conn, chosen))
        self.events.notify(chosen)
        return {"job": lease}

    async def _why_nothing(
        self,
        conn: AsyncConnection,
        caps: fairness.Capabilities,
        capped: set[int],
        owner: int | None,
    ) -> str:
        if owner is not None:
            theirs = await conn.scalar(
                sa.select(sa.func.count()).where(
                    compute_jobs.c.state == "queued", compute_jobs.c.requester_id == owner
                )
            )
            if not theirs:
                others = await conn.scalar(
                    sa.select(sa.func.count()).where(compute_jobs.c.state == "queued")
                )
                if others:
                    return (
                        f"{others} queued job{'' if others == 1 else 's'}, none of your own: "
                        "a member's worker serves only its owner's jobs until an admin makes "
                        "it a node worker"
                    )
        reason, _ = await turns.why_nothing(conn, caps, capped, owner)
        return reason

    async def _capped(self, conn: AsyncConnection) -> set[int]:
        rows = await conn.execute(
            sa.select(compute_jobs.c.requester_id, sa.func.count())
            .where(compute_jobs.c.state.in_(ACTIVE))
            .group_by(compute_jobs.c.requester_id)
        )
        cap = self.config.per_requester_running
        return {requester for requester, n in rows if n >= cap}

    async def _lease(self, conn: AsyncConnection, row: Any) -> dict[str, Any]:
        """What a worker needs to run the job: parameters, files, inputs, lease end."""
        inputs = (
            await conn.execute(
                sa.select(compute_job_inputs)
                .where(compute_job_inputs.c.job_id == row.id)
                .order_by(compute_job_inputs.c.position)
            )
        ).all()
        return {
            "id": row.id,
            "kind": row.kind,
            "params": json.loads(row.params),
            "files": json.loads(row.files),
            "inputs": [{"sha256": i.sha256, "name": i.name, "caption": i.caption} for i in inputs],
            "lease_until": row.lease_until,
            "lease_s": self.config.lease_s,
        }

    async def held(self, conn: AsyncConnection, job_id: int, did: str) -> Any:
        """The job's row if ``did`` holds its lease now; else the error that says why."""
        await self.registry.get(conn, did)
        row = (
            await conn.execute(sa.select(compute_jobs).where(compute_jobs.c.id == job_id))
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id} on this node")
        if row.state == "cancelled":
            raise Conflict(f"job {job_id} was cancelled by its requester: stop working on it")
        if row.state in ACTIVE and row.lease_worker != did:
            raise Forbidden(f"you do not hold job {job_id}: another worker does")
        if row.state not in ACTIVE:
            raise Conflict(f"you do not hold job {job_id} (it is {row.state})")
        if row.lease_until is not None and row.lease_until < self.clock():
            raise Conflict(f"your lease on job {job_id} ran out; it goes back to the queue")
        return row

    async def progress(self, job_id: int, did: str, data: dict[str, Any]) -> dict[str, Any]:
        """A worker's report: the job is running, here is how far; extends the lease."""
        report: dict[str, Any] = {}
        for key in ("step", "total", "image", "images"):
            if key in data:
                report[key] = params.int_field(data, key, 0, 10**9)
        for key in ("loss", "stage"):
            if key in data:
                value = data[key]
                if not isinstance(value, str | int | float) or isinstance(value, bool):
                    raise BadRequest(f"{key!r} must be a number or a short string")
                report[key] = value if not isinstance(value, str) else value[:64]
        now = self.clock()
        async with self.db.write() as conn:
            await self.held(conn, job_id, did)
            until = now + self.config.lease_s * 1000
            await conn.execute(
                compute_jobs.update()
                .where(compute_jobs.c.id == job_id)
                .values(
                    state="running", progress=json.dumps(report), lease_until=until, updated=now
                )
            )
            await conn.execute(
                compute_workers.update().where(compute_workers.c.did == did).values(last_seen=now)
            )
        self.events.notify(job_id)
        return {"lease_until": until}

    async def fail(self, job_id: int, did: str, data: dict[str, Any]) -> dict[str, Any]:
        """A worker gives up on a job: requeued, or failed after too many failures."""
        error = data.get("error", "the worker failed")
        if not isinstance(error, str):
            raise BadRequest("'error' must be a string")
        async with self.db.write() as conn:
            row = await self.held(conn, job_id, did)
            state = await self._requeue_or_fail(conn, row, f"worker {did[-8:]}: {error[:2000]}")
            await conn.execute(
                compute_workers.update()
                .where(compute_workers.c.did == did)
                .values(jobs_failed=compute_workers.c.jobs_failed + 1)
            )
        await self._released([job_id])
        return {"state": state}

    async def remove_worker(self, who: Principal, did: str) -> dict[str, Any]:
        """The owner (or an admin) removes worker ``did``: its key is refused from now on,
        and the jobs it held go back to the queue as a lost lease's do."""
        async with self.db.write() as conn:
            await self.registry.owned(conn, who, did)
            held = (
                await conn.execute(
                    sa.select(compute_jobs).where(
                        compute_jobs.c.state.in_(ACTIVE), compute_jobs.c.lease_worker == did
                    )
                )
            ).all()
            for row in held:
                await self._requeue_or_fail(conn, row, f"worker {did[-8:]} was removed")
            await conn.execute(compute_workers.delete().where(compute_workers.c.did == did))
        await self._released([row.id for row in held])
        return {"removed": did, "requeued": [row.id for row in held]}

    async def _requeue_or_fail(self, conn: AsyncConnection, row: Any, error: str) -> str:
        failures = row.failures + 1
        now = self.clock()
        state = "failed" if failures >= self.config.max_failures else "queued"
        await conn.execute(
            compute_jobs.update()
            .where(compute_jobs.c.id == row.id)
            .values(
                state=state,
                failures=failures,
                error=error,
                lease_worker=None,
                lease_until=None,
                updated=now,
                finished=now if state == "failed" else None,
            )
        )
        return state

    async def reap(self) -> int:
        """Requeue (or fail) jobs whose lease ran out; expire jobs queued too long."""
        now = self.clock()
        changed: list[int] = []
        async with self.db.write() as conn:
            lapsed = (
                await conn.execute(
                    sa.select(compute_jobs).where(
                        compute_jobs.c.state.in_(ACTIVE), compute_jobs.c.lease_until < now
                    )
                )
            ).all()
            for row in lapsed:
                await self._requeue_or_fail(
                    conn, row, f"worker {(row.lease_worker or '')[-8:]} stopped reporting"
                )
                changed.append(row.id)
            cutoff = now - self.config.queue_timeout_hours * 3600 * 1000
            stale = (
                (
                    await conn.execute(
                        sa.select(compute_jobs.c.id).where(
                            compute_jobs.c.state == "queued", compute_jobs.c.created < cutoff
                        )
                    )
                )
                .scalars()
                .all()
            )
            for job_id in stale:
                await self._finish(conn, job_id, "expired", error="no worker took it in time")
                changed.append(job_id)
        await self._released(changed)
        return len(changed)

    async def _released(self, job_ids: Sequence[int]) -> None:
        """No worker holds these jobs now: tell watchers, drop half-delivered outputs, and
        the training inputs of those that ended."""
        for job_id in job_ids:
            self.events.notify(job_id)
            if self.on_released is not None:
                await self.on_released(job_id)
        await self.inputs.release(job_ids)

    async def input_path(self, job_id: int, did: str, sha256: str) -> Any:
        """A training image of a job this worker holds."""
        async with self.db.read() as conn:
            await self.held(conn, job_id, did)
            found = await conn.scalar(
                sa.select(compute_job_inputs.c.sha256).where(
                    compute_job_inputs.c.job_id == job_id,
                    compute_job_inputs.c.sha256 == sha256.upper(),
                )
            )
        path = await self.store.local_path(sha256) if found else None
        if path is None:
            raise NotFound(f"job {job_id} has no input {sha256}")
        return path


def _input_row(image: TrainImage) -> dict[str, Any]:
    return {"sha256": image.sha256, "name": image.name[:255], "caption": image.caption}
