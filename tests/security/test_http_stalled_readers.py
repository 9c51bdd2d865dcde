"""A client that asks for a large file and never reads it is let go after
``server.send_timeout_s`` (an outside attacker held 480 such /webseed connections open for
70 s and more, each holding file descriptors); a slow but reading client is not."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from node.accounts.service import User
from node.app import Node, create_app
from node.server import ConnectionGuard, start_server
from tests.compute.conftest import Version, publish

SIZE = 12 * 1024 * 1024  # more than the kernel buffers on both sides hold
BOUND_S = 20  # only so a broken server fails the test instead of hanging it


@pytest.fixture
async def big(node: Node, alice: User, tmp_path: Path) -> Version:
    path = tmp_path / "big.safetensors"
    save_file({"model.diffusion_model.w": np.zeros(SIZE // 4, dtype=np.float32)}, path)
    return await publish(node, alice, path, type="Checkpoint", name="Big")


@pytest.fixture
async def port(node: Node) -> AsyncIterator[int]:
    node.config.server.port = 0
    node.config.server.send_timeout_s = 1
    runner = await start_server(create_app(node, node.home.admin_token()), node.config.server)
    yield runner.addresses[0][1]
    await runner.cleanup()


async def _ask_and_stall(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    await asyncio.get_running_loop().sock_sendall(
        sock, f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode()
    )
    return sock


async def _drain(sock: socket.socket) -> int:
    """Read what the server sent until it closes; how many bytes came."""
    loop, total = asyncio.get_running_loop(), 0
    try:
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), BOUND_S):
            total += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return total


async def test_a_client_that_stops_reading_is_let_go(port: int, big: Version) -> None:
    sock = await _ask_and_stall(port, f"/webseed/{big.sha256}")
    await asyncio.sleep(4)  # the send queue fills and stays full past send_timeout_s
    received = await _drain(sock)
    assert received < SIZE  # the server closed the connection before sending it all


async def test_a_client_that_reads_gets_the_whole_file(port: int, big: Version) -> None:
    sock = await _ask_and_stall(port, f"/webseed/{big.sha256}")
    loop, total = asyncio.get_running_loop(), 0
    try:
        while total < SIZE:  # reads steadily, 4 KB at a time
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), BOUND_S)
            assert chunk, f"closed after {total} bytes"
            total += len(chunk)
    finally:
        sock.close()
    assert total > SIZE


def test_ipv6_clients_are_counted_per_64_and_ipv4_per_address() -> None:
    key = ConnectionGuard.key
    assert key("2001:db8::1") == key("2001:db8::ffff:1") == "2001:db8::/64"
    assert key("2001:db8:0:1::1") != key("2001:db8::1")
    assert key("::ffff:10.0.0.1") == "10.0.0.1"
    assert key("127.0.0.1") != key("127.0.0.2")
