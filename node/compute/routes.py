"""Compute HTTP routes: users submit and follow jobs; workers pop, report and deliver.

User routes take the usual session or API token. Worker routes are signed with the
worker key (see :mod:`node.compute.auth`) and answer only registered worker dids.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import BodyPartReader, web

from node.accounts.routes import API_TOKEN_ID
from node.catalog.routes import CATALOG, int_id
from node.compute import inputs
from node.compute.input_files import Pending
from node.compute.queue import FINISHED
from node.compute.results import check_sha256
from node.compute.service import Compute
from node.errors import BadRequest, NotFound, PayloadTooLarge
from node.http import json_ok, parse_json, read_json, require_user

COMPUTE = web.AppKey("compute", Compute)
MAX_CONTROL_BYTES = 64 * 1024  # worker JSON requests (pop, progress, result)
MAX_PARAMS_BYTES = 1024 * 1024  # a training job's params part (with its captions)
HEARTBEAT_S = 15.0


def job_id_of(request: web.Request) -> int:
    """The job id in the path: ASCII digits, 53-bit like every id in URLs, else 404."""
    job_id = int_id(request.match_info["id"])
    if job_id is None:
        raise NotFound("no such job")
    return job_id


def _user(request: web.Request) -> Any:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("jobs belong to a user: log in or use the user's API token")
    return who.user


# --- users ----------------------------------------------------------------------------------


async def submit_job(request: web.Request) -> web.Response:
    """A JSON generation job, or multipart: ``params`` (JSON) first, then ``image`` parts
    or a ``zip``.

    A training upload takes one of its member's ingest slots before a byte of its body is
    read (429 past their share, 503 when the node's are all taken), and its whole body
    must keep up the minimum upload rate (408), as a model upload's
    (:meth:`~node.catalog.ingest_limits.IngestSlots.upload`). Its params are checked
    before any image is read. Training images are received to temp files, and kept only
    once the job passed every check (:class:`~node.compute.input_files.Pending`);
    whatever is refused, or cut off, leaves nothing.
    """
    user = _user(request)
    compute = request.app[COMPUTE]
    if not request.content_type.startswith("multipart/"):
        return json_ok(await compute.queue.submit(user, await read_json(request)), status=201)
    config = compute.config
    limits = inputs.InputLimits(
        config.max_train_images, config.max_train_bytes, config.max_zip_ratio
    )
    slots = request.app[CATALOG].publisher.slots
    received = inputs.TrainingInputs(compute.queue.store.tmp, limits)
    try:
        async with slots.upload(user.did, request.content):
            data = await _multipart_job(request, user, received)
            captions = inputs.captions_of(data)
            data.pop("captions", None)
            pending = Pending(
                count=len(received.uploads),
                size=sum(upload.size for upload in received.uploads),
                keep=lambda: received.keep(compute.queue.store, captions, compute.decodes),
            )
            job = await compute.queue.submit(user, data, pending=pending)
    finally:
        received.discard()  # synchronous: runs even when the request is cancelled
    return json_ok(job, status=201)


async def _multipart_job(
    request: web.Request, user: Any, received: inputs.TrainingInputs
) -> dict[str, Any]:
    """The job's params, checked before its images are read; then the images to temp."""
    reader = await request.multipart()
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "params":
        raise BadRequest("send the 'params' part (the job as JSON) first, then image… or zip")
    data = _params_part(await _read_part(part, MAX_PARAMS_BYTES))
    inputs.captions_of(data)
    await request.app[COMPUTE].queue.check_training(user, data)
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart is not supported")
        if part.name == "image":
            name = part.filename or f"image{len(received.uploads)}.png"
            await received.add_image_part(name, part.read_chunk)
        elif part.name == "zip":
            await received.add_zip_part(part.read_chunk)
        else:
            raise BadRequest(f"unexpected part {part.name!r}; send params, then image… or zip")
    return data


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"part {part.name!r} is larger than {limit} bytes")
        chunks.append(bytes(chunk))
    return b"".join(chunks)


def _params_part(raw: bytes) -> dict[str, Any]:
    data = parse_json(raw, "the params part")
    if not isinstance(data, dict):
        raise BadRequest("the params part must be a JSON object")
    return data


async def list_jobs(request: web.Request) -> web.Response:
    who = require_user(request)
    return json_ok({"jobs": await request.app[COMPUTE].queue.mine(who)})


async def get_job(request: web.Request) -> web.Response:
    who = require_user(request)
    return json_ok(await request.app[COMPUTE].queue.get(job_id_of(request), who))


async def cancel_job(request: web.Request) -> web.Response:
    who = require_user(request)
    return json_ok(await request.app[COMPUTE].queue.cancel(job_id_of(request), who))


async def publish_job(request: web.Request) -> web.Response:
    """The requester publishes their finished training job's LoRA as a new model."""
    who = require_user(request)
    data = await read_json(request) if request.can_read_body else {}
    published = await request.app[COMPUTE].outputs.publish_lora(job_id_of(request), who, data)
    return json_ok(published, status=201)


async def job_output(request: web.Request) -> web.StreamResponse:
    """A finished job's output, private to its requester until they publish it."""
    who = require_user(request)
    path, media_type = await request.app[COMPUTE].outputs.output_file(
        job_id_of(request), who, request.match_info["sha256"]
    )
    return web.FileResponse(
        path, headers={"Content-Type": media_type, "Cache-Control": "private, no-store"}
    )


async def publish_output(request: web.Request) -> web.Response:
    """The requester publishes one generated image: ``{"rating"}`` optional."""
    who = require_user(request)
    data = await read_json(request) if request.can_read_body else {}
    published = await request.app[COMPUTE].outputs.publish_image(
        job_id_of(request), who, request.match_info["sha256"], data
    )
    return json_ok(published, status=201)


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the job as ``GET /api/jobs/{id}`` shows it, on every change."""
    who = require_user(request)
    queue = request.app[COMPUTE].queue
    job_id = job_id_of(request)
    job = await queue.get(job_id, who)  # 404 before the stream starts
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    last: dict[str, Any] | None = None
    try:
        while True:
            if job != last:
                await response.write(f"data: {json.dumps(job, separators=(',', ':'))}\n\n".encode())
                last = job
            if job["state"] in FINISHED:
                break
            if not await queue.events.wait(job_id, HEARTBEAT_S):
                await response.write(b": keep-alive\n\n")
            job = await queue.get(job_id, who)
    except ConnectionResetError:
        pass
    return response


# --- workers --------------------------------------------------------------------------------


async def register_worker(request: web.Request) -> web.Response:
    """A user registers a worker key they hold (the request is also signed by that key)."""
    user = _user(request)
    compute = request.app[COMPUTE]
    did, body = await compute.auth.json_request(request, MAX_CONTROL_BYTES)
    data = parse_json(body) if body else {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    data["did"] = did
    registered = await compute.queue.registry.register(user, data, request.get(API_TOKEN_ID))
    return json_ok(registered, status=201)


async def list_workers(request: web.Request) -> web.Response:
    who = require_user(request)
    return json_ok({"workers": await request.app[COMPUTE].queue.registry.list(who)})


async def set_worker_serves(request: web.Request) -> web.Response:
    """An admin decides whom a worker serves: ``{"serves": "all"}`` makes it a node worker."""
    who = require_user(request)
    data = await read_json(request)
    registry = request.app[COMPUTE].queue.registry
    return json_ok(await registry.set_serves(who, request.match_info["did"], data.get("serves")))


async def remove_worker(request: web.Request) -> web.Response:
    """The owner or an admin removes a worker: it is refused from now on, its jobs requeued."""
    who = require_user(request)
    did = request.match_info["did"]
    return json_ok(await request.app[COMPUTE].queue.remove_worker(who, did))


async def _signed_json(request: web.Request) -> tuple[str, dict[str, Any]]:
    did, body = await request.app[COMPUTE].auth.json_request(request, MAX_CONTROL_BYTES)
    data = parse_json(body) if body else {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return did, data


async def pop(request: web.Request) -> web.Response:
    did, data = await _signed_json(request)
    return json_ok(await request.app[COMPUTE].queue.pop(did, data))


async def progress(request: web.Request) -> web.Response:
    did, data = await _signed_json(request)
    return json_ok(await request.app[COMPUTE].queue.progress(job_id_of(request), did, data))


async def fail(request: web.Request) -> web.Response:
    did, data = await _signed_json(request)
    return json_ok(await request.app[COMPUTE].queue.fail(job_id_of(request), did, data))


async def upload_output(request: web.Request) -> web.Response:
    """The raw bytes of one output, named by their SHA256; signed over that digest."""
    uploads = request.app[COMPUTE].uploads
    received = await uploads.receive(request, job_id_of(request), request.match_info["sha256"])
    return json_ok(received, status=201)


async def submit_result(request: web.Request) -> web.Response:
    did, data = await _signed_json(request)
    return json_ok(await request.app[COMPUTE].desk.submit(job_id_of(request), did, data))


async def job_input(request: web.Request) -> web.StreamResponse:
    did, _ = await request.app[COMPUTE].auth.json_request(request, 0)
    path = await request.app[COMPUTE].queue.input_path(
        job_id_of(request), did, check_sha256(request.match_info["sha256"])
    )
    return web.FileResponse(path)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/jobs", submit_job)
    r.add_get("/api/jobs", list_jobs)
    r.add_get("/api/jobs/{id}", get_job)
    r.add_get("/api/jobs/{id}/events", job_events)
    r.add_post("/api/jobs/{id}/cancel", cancel_job)
    r.add_post("/api/jobs/{id}/publish", publish_job)
    r.add_get("/api/jobs/{id}/outputs/{sha256}", job_output)
    r.add_post("/api/jobs/{id}/outputs/{sha256}/publish", publish_output)
    r.add_post("/api/compute/workers", register_worker)
    r.add_get("/api/compute/workers", list_workers)
    r.add_delete("/api/compute/workers/{did}", remove_worker)
    r.add_post("/api/compute/workers/{did}/serves", set_worker_serves)
    r.add_post("/api/compute/pop", pop)
    r.add_post("/api/compute/jobs/{id}/progress", progress)
    r.add_put("/api/compute/jobs/{id}/outputs/{sha256}", upload_output)
    r.add_post("/api/compute/jobs/{id}/result", submit_result)
    r.add_post("/api/compute/jobs/{id}/fail", fail)
    r.add_get("/api/compute/jobs/{id}/inputs/{sha256}", job_input)
