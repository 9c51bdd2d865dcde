"""Results: outputs a worker uploads, verified before anything is kept, kept private.

A worker uploads each output by its SHA256 while it holds the job's lease
(:meth:`ResultDesk.stage`, through :mod:`node.compute.uploads`), then submits the result:
the list of outputs, each with its attestation (the worker key's signature over the
output's SHA256). Checked in order — the lease, the outputs' count, hashes and sizes,
the attestations, then the content: each image decodes and carries exactly the
``parameters`` text the job implies; a LoRA's safetensors header and key set match its
base (torch-free). The outputs then stay in the job's folder, private to the requester:
nothing is signed with the requester's key until they publish an output themselves
(:mod:`node.compute.publishing`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog import schemas
from node.catalog.images import MAX_IMAGE_BYTES, ImageInfo, inspect_image
from node.catalog.publish import Publisher
from node.compute.queue import ACTIVE, JobQueue
from node.compute.requests import expected_parameters
from node.compute.tables import compute_jobs, compute_workers
from node.errors import (
    BadRequest,
    BadSignature,
    CivitasError,
    Conflict,
    Forbidden,
)
from node.p2p.keys import SigningKey, verify_signature

SHA256_HEX = frozenset("0123456789ABCDEF")


@dataclass(frozen=True)
class Output:
    sha256: str  # uppercase hex
    size: int
    sig: bytes


def check_sha256(value: str) -> str:
    value = value.upper()
    if len(value) != 64 or not set(value) <= SHA256_HEX:
        raise BadRequest("a SHA256 is 64 hex digits")
    return value


def _outputs(data: dict[str, Any]) -> list[Output]:
    raw = data.get("outputs")
    if not isinstance(raw, list) or not raw or len(raw) > 64:
        raise BadRequest("'outputs' must list 1 to 64 outputs")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest(f"outputs[{i}] must be an object with sha256, size and sig")
        sha, size, sig = item.get("sha256"), item.get("size"), item.get("sig")
        if not isinstance(sha, str) or not isinstance(size, int) or not isinstance(sig, str):
            raise BadRequest(f"outputs[{i}] needs sha256 (hex), size (bytes) and sig (base64)")
        try:
            raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest(f"outputs[{i}].sig is not base64") from None
        out.append(Output(check_sha256(sha), size, raw_sig))
    return out


def _b64(sig: bytes) -> str:
    return base64.urlsafe_b64encode(sig).decode().rstrip("=")


def _outputs_made(row: Any) -> int:
    return int(json.loads(row.params).get("count", 1)) if row.kind == "generate" else 1


def _listing(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        return set()


def _parameters_text(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as image:
        text = getattr(image, "text", {}).get("parameters")
    return str(text) if text is not None else None


def _check_image(data: bytes, want_text: str, width: int, height: int, i: int) -> ImageInfo:
    """Decode the image (refusing anything malformed) and compare what it says it is."""
    info = inspect_image(data)
    if info.mime != "image/png":
        raise BadRequest(f"output {i} is {info.mime}; generation results are PNG")
    if (info.width, info.height) != (width, height):
        raise BadRequest(
            f"output {i} is {info.width}x{info.height}; the job asked for {width}x{height}"
        )
    text = _parameters_text(data)
    if text is None:
        raise BadRequest(f"output {i} has no 'parameters' chunk")
    if text != want_text:
        raise BadRequest(f"output {i}'s 'parameters' do not match the job (seed, prompt, model)")
    return info


class ResultDesk:
    def __init__(
        self,
        queue: JobQueue,
        publisher: Publisher,
        author_key: Callable[[str], SigningKey],
        outputs_dir: Path,
        max_output_bytes: int,
    ) -> None:
        self.queue = queue
        self.publisher = publisher
        self.author_key = author_key
        self.outputs_dir = outputs_dir
        self.max_output_bytes = max_output_bytes

    def job_dir(self, job_id: int) -> Path:
        return self.outputs_dir / str(job_id)

    async def discard(self, job_id: int) -> None:
        """Forget what a worker uploaded for a job it no longer holds."""
        await asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), True)

    async def sweep(self) -> int:
        """Remove the uploads of jobs no worker holds (at start): a node killed between a
        job's requeue or end (committed) and the removal of its folder left them, and they
        would fill the room of the job's next attempt (409 to its worker). The folders of
        held jobs (their worker may upload more) and of done jobs (their outputs) stay."""
        names = await asyncio.to_thread(_listing, self.outputs_dir)
        ids = sorted(int(n) for n in names if n.isdigit())
        keep: set[int] = set()
        async with self.queue.db.read() as conn:
            for i in range(0, len(ids), 500):
                keep.update(
                    (
                        await conn.execute(
                            sa.select(compute_jobs.c.id).where(
                                compute_jobs.c.id.in_(ids[i : i + 500]),
                                compute_jobs.c.state.in_((*ACTIVE, "done")),
                            )
                        )
                    ).scalars()
                )
        stale = [job_id for job_id in ids if job_id not in keep]
        for job_id in stale:
            await self.discard(job_id)
        return len(stale)

    def staged(self, job_id: int, sha256: str) -> Path:
        return self.job_dir(job_id) / sha256.upper()

    def temp_path(self) -> Path:
        return self.publisher.store.temp_path()

    async def upload_cap(self, job_id: int, did: str, sha256: str) -> int:
        """The most bytes ``did`` may upload as ``sha256`` for this job, or why it may not.

        The worker must hold the job, and a job takes no more distinct uploads than it
        makes outputs (a refused result clears them, so a worker can try again).
        """
        async with self.queue.db.read() as conn:
            row = await self.queue.held(conn, job_id, did)
        await self._check_room(row, sha256)
        if row.kind == "generate":
            return min(MAX_IMAGE_BYTES, self.max_output_bytes)
        return self.max_output_bytes

    async def _check_room(self, row: Any, sha256: str) -> None:
        want = _outputs_made(row)
        staged = await asyncio.to_thread(_listing, self.job_dir(row.id))
        if sha256 not in staged and len(staged) >= want:
            raise Conflict(
                f"job {row.id} makes {want} output(s) and {len(staged)} are uploaded already; "
                "submit the result (a refused result clears them)"
            )

    async def stage(self, job_id: int, did: str, temp: Path, sha256: str, digest: str) -> None:
        """Keep an uploaded output (already in ``temp``) if its bytes hash to ``sha256``."""
        sha256 = check_sha256(sha256)
        async with self.queue.db.read() as conn:
            row = await self.queue.held(conn, job_id, did)
        if digest.upper() != sha256:
            raise BadRequest("the uploaded bytes do not hash to the SHA256 in the path")
        await self._check_room(row, sha256)  # again: another upload may have landed since
        target = self.staged(job_id, sha256)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.move, temp, target)

    async def submit(self, job_id: int, did: str, data: dict[str, Any]) -> dict[str, Any]:
        """Verify a worker's result and publish it; the job is done when this returns.

        A refused result clears the job's uploads: they were wrong, or are sent again.
        """
        async with self.queue.db.read() as conn:
            await self.queue.held(conn, job_id, did)  # a stranger's call clears nothing
        try:
            return await self._submit(job_id, did, data)
        except CivitasError:
            await self.discard(job_id)
            raise

    async def _submit(self, job_id: int, did: str, data: dict[str, Any]) -> dict[str, Any]:
        outputs = _outputs(data)
        async with self.queue.db.read() as conn:
            row = await self.queue.held(conn, job_id, did)
        lease = {"params": json.loads(row.params), "files": json.loads(row.files)}
        want = lease["params"].get("count", 1) if row.kind == "generate" else 1
        if len(outputs) != want:
            raise BadRequest(f"job {job_id} makes {want} output(s); {len(outputs)} were sent")
        blobs = []
        for i, out in enumerate(outputs):
            path = self.staged(job_id, out.sha256)
            if not await asyncio.to_thread(path.is_file):
                raise BadRequest(f"output {i} ({out.sha256[:12]}…) was not uploaded first")
            size = (await asyncio.to_thread(path.stat)).st_size
            if size != out.size:
                raise BadRequest(f"output {i} is {size} bytes; the result declares {out.size}")
            try:
                verify_signature(
                    did, out.sig, schemas.attestation_message(bytes.fromhex(out.sha256))
                )
            except BadSignature:
                raise Forbidden(
                    f"output {i}'s attestation is not {did}'s signature of its SHA256"
                ) from None
            blobs.append(path)
        if row.kind == "generate":
            results = await self._check_images(row, lease, outputs, blobs)
        else:
            results = await self._check_lora(lease, outputs[0], blobs[0])
        # One transaction: the lease is still ours, the job is done. Nothing is published:
        # the outputs stay private to the requester until they publish them.
        async with self.queue.db.write() as conn:
            await self.queue.held(conn, job_id, did)
            await self._mark_done(conn, row, did, len(outputs), results)
        self.queue.events.notify(job_id)
        await self.queue.inputs.release([job_id])  # its training images are not needed now
        return {"state": "done", "results": results}

    async def _check_images(
        self, row: Any, lease: dict[str, Any], outputs: list[Output], blobs: list[Path]
    ) -> list[dict[str, Any]]:
        """Each image decodes and carries exactly the ``parameters`` the job implies."""
        p = lease["params"]
        texts = expected_parameters(lease)
        results = []
        for i, (out, path) in enumerate(zip(outputs, blobs, strict=True)):
            data = await asyncio.to_thread(path.read_bytes)
            if hashlib.sha256(data).hexdigest().upper() != out.sha256:
                raise BadRequest(f"output {i}'s bytes do not hash to its SHA256")
            await self.publisher.decodes.run(
                _check_image, data, texts[i], p["width"], p["height"], i
            )
            results.append(
                {
                    "kind": "image",
                    "sha256": out.sha256,
                    "size": out.size,
                    "seed": p["seed"] + i,
                    "sig": _b64(out.sig),
                    "url": f"/api/jobs/{row.id}/outputs/{out.sha256}",
                    "published": None,
                }
            )
        return results

    async def _check_lora(
        self, lease: dict[str, Any], out: Output, path: Path
    ) -> list[dict[str, Any]]:
        from node.compute.lora_check import check_lora

        base = lease["files"][0]
        base_path = await self.publisher.store.local_path(base["sha256"])
        if base_path is None:
            raise Conflict(
                "this node does not hold the base checkpoint, so it cannot check the LoRA's "
                "keys against it; fetch the base model to this node first"
            )
        await asyncio.to_thread(check_lora, path, base_path, base["sha256"])
        return [
            {
                "kind": "lora",
                "sha256": out.sha256,
                "size": out.size,
                "sig": _b64(out.sig),
                "published": None,
            }
        ]

    async def _mark_done(
        self, conn: AsyncConnection, row: Any, did: str, outputs: int, results: list[Any]
    ) -> None:
        now = self.queue.clock()
        await conn.execute(
            compute_jobs.update()
            .where(compute_jobs.c.id == row.id)
            .values(
                state="done",
                results=json.dumps(results),
                worker=did,
                error=None,
                updated=now,
                finished=now,
                lease_worker=None,
                lease_until=None,
            )
        )
        await conn.execute(
            compute_workers.update()
            .where(compute_workers.c.did == did)
            .values(
                jobs_done=compute_workers.c.jobs_done + 1,
                outputs=compute_workers.c.outputs + outputs,
                busy_ms=compute_workers.c.busy_ms + max(0, now - (row.leased_at or now)),
                last_seen=now,
            )
        )
