"""Slow and greedy clients, over real sockets against the node's own server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from node.app import Node, create_app
from node.server import start_server

BOUND_S = 15  # only so a broken server fails the test instead of hanging it


async def _serve(node: Node, header_timeout_s: int) -> AsyncIterator[int]:
    node.config.server.port = 0
    node.config.server.header_timeout_s = header_timeout_s
    node.config.server.body_timeout_s = 1
    node.config.server.max_connections_per_address = 8
    runner = await start_server(create_app(node, node.home.admin_token()), node.config.server)
    yield runner.addresses[0][1]
    await runner.cleanup()


@pytest.fixture
async def port(node: Node) -> AsyncIterator[int]:
    async for bound in _serve(node, header_timeout_s=1):
        yield bound


@pytest.fixture
async def patient_port(node: Node) -> AsyncIterator[int]:
    """Idle connections stay open: only the cap closes them."""
    async for bound in _serve(node, header_timeout_s=60):
        yield bound


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), BOUND_S)
    except ConnectionResetError:
        return b""


async def test_half_sent_headers_are_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Slow: ")
    await writer.drain()
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_trickled_headers_are_closed_too(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")

    async def trickle() -> None:
        for _ in range(BOUND_S * 4):
            writer.write(b"X-A: b\r\n")
            await asyncio.sleep(0.25)

    dripping = asyncio.create_task(trickle())
    try:
        assert await _closed_by_server(reader) == b""
    finally:
        dripping.cancel()
        writer.close()


async def test_a_stalled_body_is_dropped(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/auth/login HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    answer = await _closed_by_server(reader)
    assert b"200 OK" not in answer
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_answer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    assert b"HTTP/1.1 200" in await _closed_by_server(reader)
    writer.close()


async def _healthz(port: int, source: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        return await _closed_by_server(reader)
    finally:
        writer.close()


async def test_connections_per_address_are_capped(patient_port: int) -> None:
    port = patient_port
    held = []
    for _ in range(8):  # each answered once, then held open (keep-alive)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), BOUND_S)
        held.append(writer)
    assert await _healthz(port, "127.0.0.1") == b""  # the ninth is refused
    assert b"200 OK" in await _healthz(port, "127.0.0.2")  # another address is served
    held.pop().close()
    for _ in range(BOUND_S * 10):  # the server sees the close soon
        if b"200 OK" in await _healthz(port, "127.0.0.1"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a freed slot was not given to the next connection")
    for writer in held:
        writer.close()
