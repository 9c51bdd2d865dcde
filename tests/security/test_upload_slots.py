"""Every upload route admits a body only from a known account, within that account's
share of the ingest slots, at the minimum rate over the whole body.

Before the fix: the ``/publish`` form took an ingest slot with no account before it
authenticated anyone, so four anonymous connections that sent a few bytes held every slot
and each member's upload got 503; the minimum rate (``server.min_upload_bytes_per_s``)
was enforced only on the file part, so a sender trickling the preamble or a metadata part
held a slot for ever; and ``POST /api/jobs`` with training images had no slot, no rate
and read its params only after the whole body was on disk (a zip behind refused params
was spooled to tmp in full). Real sockets against the real app.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.http import SESSION_COOKIE
from tests.catalog.conftest import lora_file
from tests.compute.conftest import PASSWORD, Version
from tests.security.test_ingest_slots_per_account import _until

BOUND_S = 15  # only so a broken server fails the test instead of hanging it
BIG = 100_000_000  # the length every held upload declares
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _part(name: str, value: bytes, *, filename: str | None = None) -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    return (
        f'--BB\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
        + value
        + b"\r\n"
    )


def _part_head(name: str, *, filename: str | None = None) -> bytes:
    """A part's head, its value left for the sender to trickle."""
    return _part(name, b"", filename=filename)[: -len(b"\r\n")]


async def _send(client: TestClient, path: str, headers: dict[str, str], body: bytes) -> Conn:
    """A POST that declares ``BIG`` bytes of multipart body, sends ``body`` and waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = f"POST {path} HTTP/1.1\r\nHost: node\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Type: multipart/form-data; boundary=BB\r\nContent-Length: {BIG}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def _still_publishes(client: TestClient, node: Node, member: User, tmp_path: Path) -> None:
    """Another member's upload goes through while the slots above are held."""
    ok = await client.post(
        "/api/models",
        data=_model_form(lora_file(tmp_path / "b.safetensors", 1), "legit"),
        headers=await _bearer(node, member),
    )
    assert ok.status == 201, await ok.text()


async def _answer(conn: Conn) -> tuple[bytes, bytes]:
    """The status line and the first bytes after it, while the body is still unsent."""
    reader, _ = conn
    async with asyncio.timeout(BOUND_S):
        status = await reader.readline()
        rest = await reader.read(8192)
    return status, rest


def _close(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


async def _bearer(node: Node, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {await node.accounts.create_token(user.name)}"}


async def _log_in(client: TestClient, user: User) -> dict[str, str]:
    """A browser's session: the cookie header and, for its forms, the CSRF token."""
    html = await (await client.get("/login")).text()
    found = TOKEN.search(html)
    assert found
    resp = await client.post(
        "/login",
        data={"csrf_token": found[1], "username": user.name, "password": PASSWORD, "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    found = TOKEN.search(await (await client.get("/publish")).text())
    assert found
    cookies = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    return {"Cookie": f"{SESSION_COOKIE}={cookies[SESSION_COOKIE].value}", "token": found[1]}


def _model_form(path: Path, name: str) -> FormData:
    form = FormData()
    form.add_field("metadata", json.dumps({"name": name, "type": "LORA"}))
    form.add_field("file", path.read_bytes(), filename=path.name)
    return form


def _train(version: Version, **extra: object) -> bytes:
    return json.dumps({"kind": "train", "model_version_id": version.id, **extra}).encode()


def _tmp_files(node: Node) -> list[Path]:
    tmp = node.compute.queue.store.tmp
    return list(tmp.iterdir()) if tmp.exists() else []


# --- (a) the publish form authenticates before it takes a slot ----------------------------


async def test_anonymous_publish_forms_hold_no_slot(
    client: TestClient, node: Node, bob: User, tmp_path: Path
) -> None:
    slots = node.catalog.publisher.slots
    body = _part("csrf_token", b"x" * 8) + _part_head("name")
    held = [await _send(client, "/publish", {}, body) for _ in range(slots.limit)]
    try:
        for conn in held:
            status, _ = await _answer(conn)
            assert status.startswith(b"HTTP/1.1 401"), status
        await _still_publishes(client, node, bob, tmp_path)
    finally:
        _close(held)


async def test_a_members_publish_forms_count_against_their_share(
    client: TestClient, node: Node, alice: User, bob: User, tmp_path: Path
) -> None:
    slots = node.catalog.publisher.slots
    session = await _log_in(client, alice)
    token = session.pop("token").encode()
    body = _part("csrf_token", token) + _part_head("name")
    held = [await _send(client, "/publish", session, body) for _ in range(slots.per_account)]
    try:
        await _until(lambda: slots.accounts[alice.did] >= slots.per_account)
        one_more = await _send(client, "/publish", session, body)
        held.append(one_more)
        status, _ = await _answer(one_more)
        assert status.startswith(b"HTTP/1.1 429"), status
        await _still_publishes(client, node, bob, tmp_path)
    finally:
        _close(held)


# --- (b) the minimum rate holds over the whole body ---------------------------------------


async def _trickled(conn: Conn) -> tuple[bytes, bytes]:
    """A byte every 0.2 s (never a stall the body timeout sees) until the node answers."""
    _, writer = conn

    async def trickle() -> None:
        while True:
            await asyncio.sleep(0.2)
            writer.write(b"a")
            await writer.drain()

    dribble = asyncio.create_task(trickle())
    try:
        return await _answer(conn)
    finally:
        dribble.cancel()


@pytest.mark.parametrize("where", ["preamble", "metadata", "image"])
async def test_an_api_upload_trickling_any_part_is_answered_408(
    client: TestClient, node: Node, alice: User, where: str
) -> None:
    slots = node.catalog.publisher.slots
    slots.grace_s = 0.5
    meta = json.dumps({"name": "slow", "type": "LORA"}).encode()
    body = {
        "preamble": b"",
        "metadata": _part_head("metadata"),
        "image": _part("metadata", meta) + _part_head("image", filename="p.png"),
    }[where]
    conn = await _send(client, "/api/models", await _bearer(node, alice), body)
    try:
        await _until(lambda: slots.accounts[alice.did] == 1)
        status, answer = await _trickled(conn)
        assert status.startswith(b"HTTP/1.1 408"), status
        assert b"server.min_upload_bytes_per_s" in answer
        await _until(lambda: not slots.accounts[alice.did])
    finally:
        _close([conn])


async def test_a_publish_form_trickling_a_field_is_answered_408(
    client: TestClient, node: Node, alice: User
) -> None:
    slots = node.catalog.publisher.slots
    session = await _log_in(client, alice)
    token = session.pop("token").encode()
    slots.grace_s = 0.5
    conn = await _send(client, "/publish", session, _part("csrf_token", token) + _part_head("name"))
    try:
        await _until(lambda: slots.accounts[alice.did] == 1)
        status, answer = await _trickled(conn)
        assert status.startswith(b"HTTP/1.1 408"), status
        assert b"server.min_upload_bytes_per_s" in answer
        await _until(lambda: not slots.accounts[alice.did])
    finally:
        _close([conn])


# --- (c) training uploads: params first, a slot, the minimum rate --------------------------


@pytest.mark.parametrize(
    "first",
    ["unknown field", "no such version", "zip first", "not train"],
)
async def test_a_training_upload_is_refused_before_its_zip_is_read(
    client: TestClient, node: Node, alice: User, checkpoint: Version, first: str
) -> None:
    params = {
        "unknown field": _part("params", _train(checkpoint, colour="red")),
        "no such version": _part(
            "params", json.dumps({"kind": "train", "model_version_id": 987654}).encode()
        ),
        "zip first": b"",
        "not train": _part("params", json.dumps({"kind": "generate"}).encode()),
    }[first]
    body = params + _part_head("zip", filename="x.zip") + b"PK\x03\x04" + b"\0" * 65536
    conn = await _send(client, "/api/jobs", await _bearer(node, alice), body)
    try:
        status, answer = await _answer(conn)
        expected = b"404" if first == "no such version" else b"400"
        assert status.startswith(b"HTTP/1.1 " + expected), (status, answer)
        assert _tmp_files(node) == []
        assert not node.catalog.publisher.slots.accounts[alice.did]
    finally:
        _close([conn])


async def test_training_uploads_take_the_members_ingest_slots(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    slots = node.catalog.publisher.slots
    auth = await _bearer(node, alice)
    body = _part("params", _train(checkpoint)) + _part_head("zip", filename="x.zip") + b"PK"
    held = [await _send(client, "/api/jobs", auth, body) for _ in range(slots.per_account)]
    try:
        await _until(lambda: slots.accounts[alice.did] >= slots.per_account)
        one_more = await _send(client, "/api/jobs", auth, body)
        held.append(one_more)
        status, answer = await _answer(one_more)
        assert status.startswith(b"HTTP/1.1 429"), (status, answer)
        assert b"server.max_uploads_per_account" in answer
    finally:
        _close(held)
    await _until(lambda: not slots.accounts[alice.did])
    await _until(lambda: _tmp_files(node) == [])


@pytest.mark.parametrize("where", ["params", "zip"])
async def test_a_trickled_training_upload_is_answered_408_and_leaves_nothing(
    client: TestClient, node: Node, alice: User, checkpoint: Version, where: str
) -> None:
    slots = node.catalog.publisher.slots
    slots.grace_s = 0.5
    body = {
        "params": _part_head("params"),
        "zip": _part("params", _train(checkpoint)) + _part_head("zip", filename="x.zip"),
    }[where]
    conn = await _send(client, "/api/jobs", await _bearer(node, alice), body)
    try:
        await _until(lambda: slots.accounts[alice.did] == 1)
        status, answer = await _trickled(conn)
        assert status.startswith(b"HTTP/1.1 408"), status
        assert b"server.min_upload_bytes_per_s" in answer
        await _until(lambda: not slots.accounts[alice.did])
        assert _tmp_files(node) == []
    finally:
        _close([conn])
