"""One member cannot hold every ingest slot by trickling uploads.

Before the fix, four uploads sending a byte every 5 s (never a stall long enough for the
body timeout, and no overall deadline) held all of ``server.max_concurrent_ingests`` for
as long as their sender liked: every other member's upload got 503. Now one account may
send ``server.max_uploads_per_account`` files at once (429 past it), and an upload that
falls below ``server.min_upload_bytes_per_s`` on average after the grace period is
answered 408 and frees its slot. Real sockets against the real app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from tests.catalog.conftest import lora_file
from tests.compute.conftest import PASSWORD

BOUND_S = 15  # only so a broken server fails the test instead of hanging it


async def _trickler(
    client: TestClient, token: str, name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upload that declares 100 MB, sends its parts' heads and 8 bytes, then waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    meta = json.dumps({"name": name, "type": "LORA", "base_model": "SD 1.5"}).encode()
    body = (
        b'--BB\r\nContent-Disposition: form-data; name="metadata"\r\n'
        b"Content-Type: application/json\r\n\r\n" + meta + b"\r\n--BB\r\n"
        b'Content-Disposition: form-data; name="file"; filename="x.safetensors"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"\x10\0\0\0\0\0\0\0"
    )
    writer.write(
        b"POST /api/models HTTP/1.1\r\nHost: node\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=BB\r\n"
        b"Content-Length: 100000000\r\n\r\n" + body
    )
    await writer.drain()
    return reader, writer


async def _until(done: Callable[[], bool]) -> None:
    """Wait (bounded) until ``done()``: the slots count is plain state, with no event."""
    async with asyncio.timeout(BOUND_S):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


async def _held(node: Node, did: str, n: int) -> None:
    slots = node.catalog.publisher.slots
    await _until(lambda: slots.accounts[did] >= n)


def _upload_form(path: Path, name: str) -> FormData:
    form = FormData()
    form.add_field("metadata", json.dumps({"name": name, "type": "LORA"}))
    form.add_field("file", path.read_bytes(), filename=path.name)
    return form


async def test_one_member_holds_at_most_their_share_of_the_ingest_slots(
    client: TestClient, node: Node, alice: User, tmp_path: Path
) -> None:
    bob = await node.accounts.add_user("bob", PASSWORD)
    bob_token = await node.accounts.create_token(bob.name)
    alice_token = await node.accounts.create_token(alice.name)
    share = node.catalog.publisher.slots.per_account
    assert share < node.catalog.publisher.slots.limit
    held = [await _trickler(client, bob_token, f"hold{i}") for i in range(share)]
    try:
        await _held(node, bob.did, share)
        refused = await client.post(
            "/api/models",
            data=_upload_form(lora_file(tmp_path / "b.safetensors", 1), "more"),
            headers={"Authorization": f"Bearer {bob_token}"},
        )
        body = await refused.json()
        assert refused.status == 429 and refused.headers["Retry-After"], body
        assert "server.max_uploads_per_account" in body["message"]
        ok = await client.post(
            "/api/models",
            data=_upload_form(lora_file(tmp_path / "a.safetensors", 2), "legit"),
            headers={"Authorization": f"Bearer {alice_token}"},
        )
        assert ok.status == 201, await ok.text()
    finally:
        for _, writer in held:
            writer.close()


async def test_a_trickled_upload_is_answered_408_and_frees_its_slot(
    client: TestClient, node: Node, alice: User
) -> None:
    slots = node.catalog.publisher.slots
    slots.grace_s = 0.5
    token = await node.accounts.create_token(alice.name)
    reader, writer = await _trickler(client, token, "slow")
    try:
        await _held(node, alice.did, 1)

        async def trickle() -> None:
            while True:
                await asyncio.sleep(0.2)
                writer.write(b" ")
                await writer.drain()

        dribble = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(BOUND_S):
                status = await reader.readline()
                answer = await reader.read(4096)
        finally:
            dribble.cancel()
        assert status.startswith(b"HTTP/1.1 408"), status
        assert b"server.min_upload_bytes_per_s" in answer
        await _until(lambda: not slots.accounts[alice.did])
        assert list(node.catalog.publisher.store.tmp.iterdir()) == []
    finally:
        writer.close()
