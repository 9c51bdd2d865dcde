"""Issue 13.2: nobody but the worker holding a job's lease can make the node store bytes.

Before the fix ``PUT /api/compute/jobs/{id}/outputs/{sha}`` streamed the whole body to
``files/tmp`` and only then checked the signature: 251 MiB landed there anonymously
before the 401. These tests speak raw HTTP/1.1 over a socket, declare a large body and
send only its first 64 KiB: an answer that comes back at all proves the node decided
before reading the body (a node that reads first would still be waiting for the rest).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.compute.auth import sign_digest
from node.p2p.keys import SigningKey
from tests.compute.conftest import PASSWORD, fake_checkpoint, generate, publish

MIB = 1024 * 1024
FIRST_BYTES = 64 * 1024
ANSWER_WITHIN_S = 10  # a guard against hanging forever, not a performance assertion


@dataclass
class Setup:
    node: Node
    client: TestClient
    job_id: int
    holder: SigningKey  # the worker holding the job's lease
    other: SigningKey  # a registered worker of another member, not holding it

    @property
    def tmp(self) -> Path:
        return self.node.compute.queue.store.tmp

    def path(self, data: bytes) -> str:
        return f"/api/compute/jobs/{self.job_id}/outputs/{_sha(data)}"

    def signed(self, key: SigningKey, data: bytes) -> dict[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        return sign_digest(key, "PUT", self.path(data), digest, self.node.node_key.did)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


@pytest.fixture
async def setup(client: TestClient, node: Node, tmp_path: Path) -> Setup:
    alice = await node.accounts.add_user("alice", PASSWORD)
    bob = await node.accounts.add_user("bob", PASSWORD)
    base = fake_checkpoint(tmp_path / "base.safetensors")
    version = await publish(node, alice, base, type="Checkpoint", name="Base")
    queue = node.compute.queue
    job = await queue.submit(alice, generate(version.id))
    holder, other = SigningKey.from_seed(b"h" * 32), SigningKey.from_seed(b"o" * 32)
    await queue.registry.register(alice, {"did": holder.did})
    await queue.registry.register(bob, {"did": other.did})
    assert (await queue.pop(holder.did, {}))["job"]["id"] == job["id"]
    return Setup(node, client, job["id"], holder, other)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, str]


class RawPut:
    """A PUT over a plain socket: headers and the first bytes now, the rest maybe never."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(
        cls, client: TestClient, path: str, headers: dict[str, str], declared: int, first: int
    ) -> RawPut:
        host, port = client.server.host, client.server.port
        assert port is not None
        reader, writer = await asyncio.open_connection(host, port)
        lines = [f"PUT {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {declared}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + os.urandom(first))
        await writer.drain()
        return cls(reader, writer)

    async def answer(self) -> Answer:
        async def read() -> Answer:
            status = int((await self.reader.readline()).split()[1])
            headers = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers["content-length"]))
            return Answer(status, headers, json.loads(body))

        return await asyncio.wait_for(read(), ANSWER_WITHIN_S)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def puts() -> AsyncIterator[list[RawPut]]:
    opened: list[RawPut] = []
    yield opened
    for put in opened:
        await put.close()


async def _until(condition: Callable[[], object], what: str) -> None:
    """Wait (polling the disk) until ``condition()`` holds; fail after a generous bound."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not {what}")


async def _refused_early(
    setup: Setup, puts: list[RawPut], headers: dict[str, str], data: bytes
) -> Answer:
    put = await RawPut.start(setup.client, setup.path(data), headers, 256 * MIB, FIRST_BYTES)
    puts.append(put)
    answer = await put.answer()
    assert os.listdir(setup.tmp) == []
    assert not setup.node.compute.desk.job_dir(setup.job_id).exists()
    return answer


async def test_an_unsigned_upload_is_refused_before_its_body(
    setup: Setup, puts: list[RawPut]
) -> None:
    answer = await _refused_early(setup, puts, {}, b"x")
    assert answer.status == 401 and answer.body["error"] == "unauthorized"


async def test_a_borrowed_worker_did_is_refused_before_its_body(
    setup: Setup, puts: list[RawPut]
) -> None:
    """The holder's did (public) with a signature made by another key."""
    forged = setup.signed(setup.other, b"x")
    forged["Civitas-Node"] = setup.holder.did
    answer = await _refused_early(setup, puts, forged, b"x")
    assert answer.status == 401 and "does not verify" in answer.body["message"]


async def test_another_members_worker_is_refused_before_its_body(
    setup: Setup, puts: list[RawPut]
) -> None:
    answer = await _refused_early(setup, puts, setup.signed(setup.other, b"x"), b"x")
    assert answer.status == 403 and "you do not hold" in answer.body["message"]


async def test_a_replayed_signature_is_refused(setup: Setup) -> None:
    data = b"an output"
    headers = setup.signed(setup.holder, data)
    first = await setup.client.put(setup.path(data), data=data, headers=headers)
    assert first.status == 201, await first.text()
    again = await setup.client.put(setup.path(data), data=data, headers=headers)
    assert again.status == 401 and "replay" in (await again.json())["message"]


async def test_a_declared_length_over_the_cap_is_refused_before_its_body(
    setup: Setup, puts: list[RawPut]
) -> None:
    answer = await _refused_early(setup, puts, setup.signed(setup.holder, b"x"), b"x")
    assert answer.status == 413 and answer.body["error"] == "payload_too_large"


async def test_a_job_takes_no_more_uploads_than_it_makes_outputs(setup: Setup) -> None:
    for data, status in ((b"first", 201), (b"first", 201), (b"second", 409)):
        headers = setup.signed(setup.holder, data)
        resp = await setup.client.put(setup.path(data), data=data, headers=headers)
        assert resp.status == status, await resp.text()
    assert "makes 1 output" in (await resp.json())["message"]
    assert os.listdir(setup.tmp) == []


async def test_a_cut_off_upload_leaves_no_temp_file(setup: Setup) -> None:
    data = b"\0" * 8 * MIB
    headers = setup.signed(setup.holder, data)
    put = await RawPut.start(setup.client, setup.path(data), headers, len(data), MIB)
    await _until(lambda: os.listdir(setup.tmp), "receiving")
    await put.close()
    await _until(lambda: not os.listdir(setup.tmp), "cleaned up")
    await _until(lambda: not setup.node.compute.uploads.active, "released")


async def test_uploads_per_worker_are_capped_and_timed(setup: Setup, puts: list[RawPut]) -> None:
    setup.node.config.compute.max_worker_uploads = 1
    setup.node.config.compute.upload_timeout_s = 1
    slow = b"\1" * 8 * MIB
    first = await RawPut.start(
        setup.client, setup.path(slow), setup.signed(setup.holder, slow), len(slow), MIB
    )
    puts.append(first)
    await _until(lambda: os.listdir(setup.tmp), "receiving")
    data = b"\2" * 4 * MIB
    busy = await RawPut.start(
        setup.client, setup.path(data), setup.signed(setup.holder, data), len(data), FIRST_BYTES
    )
    puts.append(busy)
    answer = await busy.answer()
    assert answer.status == 429 and int(answer.headers["retry-after"]) > 0
    # the stalled first upload runs out of time: answered, and its temp file is gone
    timed_out = await first.answer()
    assert timed_out.status == 408 and "compute.upload_timeout_s" in timed_out.body["message"]
    await _until(lambda: not os.listdir(setup.tmp), "cleaned up")
    assert not setup.node.compute.uploads.active
