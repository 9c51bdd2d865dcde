"""Upload progress: the registry, its event stream, and watching a real upload over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.catalog.progress import UploadProgress, sse_events
from node.errors import BadRequest, Conflict, Forbidden, NotFound
from tests.catalog.conftest import PASSWORD
from tests.catalog.test_api import upload_form

UPLOAD_ID = "test-upload_0123456789abcdef"


async def read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The ``data:`` events of a text/event-stream, until the server ends it."""
    while line := await resp.content.readline():
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: ") :])


async def slow_file(data: bytes, pieces: int = 12, pause: float = 0.1) -> AsyncIterator[bytes]:
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        await asyncio.sleep(pause)
        yield data[start : start + step]


def slow_upload(data: bytes, metadata: dict[str, Any]) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    writer.append_json(metadata).set_content_disposition("form-data", name="metadata")
    writer.append(
        slow_file(data), {"Content-Type": "application/octet-stream"}
    ).set_content_disposition("form-data", name="file", filename="slow.safetensors")
    return writer


@pytest.fixture
async def auth(node: Node, alice: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {await node.accounts.create_token('alice')}"}


async def test_watching_an_upload_sees_bytes_arrive_then_the_model(
    client: TestClient, auth: dict[str, str], make_lora: Callable[..., Path]
) -> None:
    data = make_lora("slow.safetensors", 31).read_bytes()
    # The watcher may ask first: the node waits for the upload to reach it.
    watching = asyncio.create_task(client.get(f"/api/uploads/{UPLOAD_ID}/events", headers=auth))
    await asyncio.sleep(0.05)
    upload = asyncio.create_task(
        client.post(
            f"/api/models?upload={UPLOAD_ID}",
            data=slow_upload(data, {"name": "Slow fox", "base_model": "SD 1.5"}),
            headers=auth,
        )
    )
    events = await watching
    assert events.status == 200
    assert events.headers["Content-Type"] == "text/event-stream"
    assert events.headers["Cache-Control"] == "no-cache"
    seen = [event async for event in read_events(events)]
    resp = await upload
    assert resp.status == 201, await resp.text()
    result = await resp.json()

    stages = [e["stage"] for e in seen]
    assert stages[-1] == "done" and "failed" not in stages
    assert stages == sorted(stages, key=["receiving", "checking", "done"].index)
    received = [e["received"] for e in seen if e["stage"] == "receiving"]
    assert len(received) >= 2 and received == sorted(received) and received[-1] > received[0]
    assert all(e["id"] == UPLOAD_ID and e["total"] is None for e in seen)  # chunked: no length
    last = seen[-1]
    assert last["modelId"] == result["model"]["id"]
    assert last["sha256"] == result["sha256"] and last["created"] is True
    assert last["received"] >= len(data)

    # Finished uploads can still be watched for a while: the stream says so and ends.
    again = await client.get(f"/api/uploads/{UPLOAD_ID}/events", headers=auth)
    assert [e["stage"] async for e in read_events(again)] == ["done"]
    # An id is used once.
    resp = await client.post(
        f"/api/models?upload={UPLOAD_ID}", data=upload_form(data, {"name": "x"}), headers=auth
    )
    assert resp.status == 409


async def test_a_refused_upload_reports_failed_with_the_reason(
    client: TestClient, node: Node, auth: dict[str, str]
) -> None:
    meta = {"name": "Broken", "type": "LORA", "base_model": "SD 1.5"}
    upload_id = "broken-upload-0001"
    resp = await client.post(
        f"/api/models?upload={upload_id}",
        data=upload_form(b"\x05\x00" + b"x" * 100, meta),
        headers=auth,
    )
    assert resp.status == 400
    message = (await resp.json())["message"]
    events = await client.get(f"/api/uploads/{upload_id}/events", headers=auth)
    (event,) = [e async for e in read_events(events)]
    assert event["stage"] == "failed" and event["error"] == message
    assert event["total"] and event["total"] > 100  # a FormData body has a Content-Length
    # A version upload takes the same parameter.
    resp = await client.post(
        "/api/models/12345/versions?upload=version-upload-0001",
        data=upload_form(b"\x05\x00", meta),
        headers=auth,
    )
    assert resp.status == 404
    entry = node.catalog.uploads.get("version-upload-0001")
    assert entry is not None and entry.stage == "failed"


async def test_who_may_watch_and_bad_ids(
    client: TestClient, node: Node, alice: User, auth: dict[str, str], admin_headers: dict[str, str]
) -> None:
    uploads = node.catalog.uploads
    uploads.appear_s = 0.05
    entry = uploads.start(UPLOAD_ID, alice.did, 1000)
    url = f"/api/uploads/{UPLOAD_ID}/events"

    assert (await client.get(url)).status == 401
    await node.accounts.add_user("bob", PASSWORD)
    bob = {"Authorization": f"Bearer {await node.accounts.create_token('bob')}"}
    resp = await client.get(url, headers=bob)
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    resp = await client.get("/api/uploads/no-such-upload-000/events", headers=auth)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    for bad in ("short", "x" * 65, "has%20space-0123456789", "dots.are.not.ok.0000"):
        resp = await client.get(f"/api/uploads/{bad}/events", headers=auth)
        assert resp.status == 400, bad
    resp = await client.post("/api/models?upload=short", data=upload_form(b"", {}), headers=auth)
    assert resp.status == 400 and "upload id" in (await resp.json())["message"]

    entry.done(modelId=7)
    resp = await client.get(url, headers=admin_headers)  # an admin may watch any upload
    assert [e["modelId"] async for e in read_events(resp)] == [7]


# --- the registry and the stream, without HTTP ------------------------------------------


def test_ids_are_checked_used_once_and_finished_entries_expire() -> None:
    now = [1000.0]
    uploads = UploadProgress(keep_s=60, clock=lambda: now[0])
    with pytest.raises(BadRequest):
        uploads.start("bad id!", None, None)
    entry = uploads.start("a" * 16, "did:key:alice", None)
    with pytest.raises(Conflict):
        uploads.start("a" * 16, "did:key:alice", None)
    assert uploads.start(None, "did:key:alice", None).id == ""  # no id: not registered
    assert len(uploads) == 1
    entry.receive(10)
    entry.done(modelId=1)
    entry.fail("too late")  # a finished entry stays as it finished
    assert entry.stage == "done" and entry.error is None
    entry.finished_at = now[0]
    now[0] += 59
    assert uploads.get("a" * 16) is entry
    now[0] += 2
    assert uploads.get("a" * 16) is None


def test_the_registry_is_bounded_dropping_finished_entries_first() -> None:
    uploads = UploadProgress(max_entries=3)
    first = uploads.start("first-0000000000", None, None)
    done = uploads.start("done-00000000000", None, None)
    done.done()
    uploads.start("third-0000000000", None, None)
    uploads.start("fourth-000000000", None, None)
    assert len(uploads) == 3 and uploads.get("done-00000000000") is None
    uploads.start("fifth-0000000000", None, None)
    assert uploads.get(first.id) is None and len(uploads) == 3


async def test_watch_checks_the_owner_and_waits_briefly_for_new_ids() -> None:
    uploads = UploadProgress(appear_s=2)
    waiting = asyncio.create_task(uploads.watch("late-upload-00000", "did:key:a", admin=False))
    await asyncio.sleep(0.05)
    entry = uploads.start("late-upload-00000", "did:key:a", None)
    assert await waiting is entry
    with pytest.raises(Forbidden):
        await uploads.watch(entry.id, "did:key:b", admin=False)
    assert await uploads.watch(entry.id, None, admin=True) is entry
    uploads.appear_s = 0.01
    with pytest.raises(NotFound):
        await uploads.watch("never-00000000000", "did:key:a", admin=False)


async def test_events_are_coalesced_with_heartbeats_and_end_when_finished() -> None:
    entry = UploadProgress().start("stream-000000000", None, 100)
    stream = sse_events(entry, interval=0.2, heartbeat=0.05)
    first = await anext(stream)
    assert json.loads(first.removeprefix(b"data: "))["received"] == 0
    assert await anext(stream) == b": keep-alive\n\n"
    for n in range(1, 50):  # a burst of changes within one interval: one event
        entry.receive(n)
    burst = json.loads((await anext(stream)).removeprefix(b"data: "))
    assert burst["received"] == 49
    started = asyncio.get_running_loop().time()
    entry.receive(60)
    entry.set_stage("checking")
    entry.done(modelId=3)
    last = json.loads((await anext(stream)).removeprefix(b"data: "))
    assert last["stage"] == "done" and last["modelId"] == 3
    assert asyncio.get_running_loop().time() - started < 0.1  # the outcome is not held back
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
