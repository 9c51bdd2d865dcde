"""A job's outputs are the requester's to publish, and only theirs.

A finished job's outputs stay in its folder, private: the requester (and an admin) can
see them (``GET /api/jobs/{id}/outputs/{sha256}``), nobody else. Nothing is signed with
the requester's author key until the requester publishes an output (an image with
``POST /api/jobs/{id}/outputs/{sha256}/publish``, a LoRA with ``POST
/api/jobs/{id}/publish``); not even an admin can publish it for them. A published record
carries the worker's attestation (its did and its signature over the output's SHA256),
and goes through the same path an upload does (:meth:`Publisher.publish_image`,
:meth:`Publisher.publish_file`): takedown list, blocked authors, the rating rule and the
moderation gate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from node.catalog import schemas
from node.catalog.publish import ModelFields, Publisher, VersionFields
from node.catalog.tables import images as image_rows
from node.catalog.tables import model_versions, models
from node.compute.queue import JobQueue
from node.compute.results import ResultDesk, check_sha256
from node.compute.tables import compute_jobs
from node.errors import BadRequest, Conflict, Forbidden, NotFound
from node.http import Principal
from node.p2p.keys import SigningKey


def _unb64(sig: str) -> bytes:
    return base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class OutputPublisher:
    def __init__(
        self,
        queue: JobQueue,
        desk: ResultDesk,
        publisher: Publisher,
        author_key: Callable[[str], SigningKey],
    ) -> None:
        self.queue = queue
        self.desk = desk
        self.publisher = publisher
        self.author_key = author_key
        self._lock = asyncio.Lock()  # one publish at a time: never twice the same output

    async def _finished(self, job_id: int, who: Principal, kind: str) -> Any:
        async with self.queue.db.read() as conn:
            row = await self.queue.visible_row(conn, job_id, who)
        if who.user is None or who.user.id != row.requester_id:
            raise Forbidden(f"only the requester of job {job_id} may publish its outputs")
        if row.kind != kind or row.state != "done":
            raise Conflict(f"job {job_id} is not a finished {kind} job")
        return row

    async def output_file(self, job_id: int, who: Principal, sha256: str) -> tuple[Path, str]:
        """A finished job's output and its media type, for its requester (or an admin)."""
        sha256 = check_sha256(sha256)
        async with self.queue.db.read() as conn:
            row = await self.queue.visible_row(conn, job_id, who)
        if not any(r["sha256"] == sha256 for r in json.loads(row.results)):
            raise NotFound(f"job {job_id} has no output {sha256}")
        path = self.desk.staged(job_id, sha256)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"output {sha256[:12]}… of job {job_id} is gone from the node")
        return path, "image/png" if row.kind == "generate" else "application/octet-stream"

    async def publish_image(
        self, job_id: int, who: Principal, sha256: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish one generated image: an ``image`` record authored by the requester."""
        sha256 = check_sha256(sha256)
        rating = data.get("rating")
        if rating is not None and not isinstance(rating, str):
            raise BadRequest(f"'rating' must be one of {', '.join(schemas.RATINGS)}")
        async with self._lock:
            row = await self._finished(job_id, who, "generate")
            item = next((r for r in json.loads(row.results) if r["sha256"] == sha256), None)
            if item is None:
                raise NotFound(f"job {job_id} has no output {sha256}")
            if item.get("published"):
                raise Conflict(f"output {sha256[:12]}… of job {job_id} is published already")
            blob = await asyncio.to_thread(_read, self.desk.staged(job_id, sha256))
            if blob is None or hashlib.sha256(blob).hexdigest().upper() != sha256:
                raise NotFound(f"output {sha256[:12]}… of job {job_id} is gone from the node")
            attestation = {"worker": row.worker, "sig": _unb64(item["sig"])}
            record, _ = await self.publisher.publish_image(
                self.author_key(row.requester_did),
                blob,
                row.version_id,
                rating=rating,
                extra={"attestation": attestation},
            )
            async with self.queue.db.read() as conn:
                image_id = await conn.scalar(
                    sa.select(image_rows.c.int_id).where(image_rows.c.id == record.id)
                )
            published = {
                "image_id": image_id,
                "record_id": record.id.hex(),
                "rating": record.body["rating"],
                "url": f"/images/{sha256}/original=true/{image_id}.png",
            }
            await self._mark_published(job_id, sha256, published)
        return published

    async def publish_lora(
        self, job_id: int, who: Principal, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish a finished training job's LoRA as a new model, authored by its requester."""
        async with self._lock:
            row = await self._finished(job_id, who, "train")
            lora = json.loads(row.results)[0]
            if lora.get("published"):
                raise Conflict(f"job {job_id}'s LoRA is published already")
            params_ = json.loads(row.params)
            base = json.loads(row.files)[0]
            name = data.get("name", params_["name"])
            if not isinstance(name, str) or not name.strip() or len(name) > 200:
                raise BadRequest("'name' must be a string of 1 to 200 characters")
            description = data.get("description", "")
            if not isinstance(description, str) or len(description) > schemas.MAX_DESCRIPTION:
                raise BadRequest("'description' must be a string")
            rating = data.get("rating", "PG")
            if rating not in schemas.RATINGS:
                raise BadRequest(f"'rating' must be one of {', '.join(schemas.RATINGS)}")
            path = self.desk.staged(job_id, lora["sha256"])
            if not await asyncio.to_thread(path.is_file):
                raise NotFound("the LoRA file of this job is gone from the node")
            fields = ModelFields(
                name=name.strip(), type="LORA", description=description, rating=rating
            )
            trained = [params_["trigger_word"]] if params_["trigger_word"] else []
            version = VersionFields(
                base_model=base["base_model"],
                trained_words=trained,
                description=f"Trained on {base['model_name']} ({base['version_name']}).",
                extra={"attestation": {"worker": row.worker, "sig": _unb64(lora["sig"])}},
            )
            staged_copy = path.with_name(f"{_file_name(name)}.safetensors")
            await asyncio.to_thread(shutil.copyfile, path, staged_copy)
            try:
                done = await self.publisher.publish_file(
                    self.author_key(row.requester_did), staged_copy, fields, version
                )
            finally:
                await asyncio.to_thread(staged_copy.unlink, missing_ok=True)
            async with self.queue.db.read() as conn:
                model_int = await conn.scalar(
                    sa.select(models.c.int_id).where(models.c.root_id == done.model_root)
                )
                version_int = await conn.scalar(
                    sa.select(model_versions.c.int_id).where(model_versions.c.id == done.version_id)
                )
            published = {"model_id": model_int, "model_version_id": version_int}
            await self._mark_published(job_id, lora["sha256"], published)
        return published

    async def _mark_published(self, job_id: int, sha256: str, published: dict[str, Any]) -> None:
        async with self.queue.db.write() as conn:
            raw = await conn.scalar(
                sa.select(compute_jobs.c.results).where(compute_jobs.c.id == job_id)
            )
            results = json.loads(raw or "[]")
            for item in results:
                if item["sha256"] == sha256:
                    item["published"] = published
            await conn.execute(
                compute_jobs.update()
                .where(compute_jobs.c.id == job_id)
                .values(results=json.dumps(results))
            )
        self.queue.events.notify(job_id)


def _file_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return keep[:100] or "lora"
