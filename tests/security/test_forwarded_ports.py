"""Issue 13: behind a trusted proxy, an ``X-Forwarded-For`` hop written with a port
(``1.2.3.4:5678``, ``[2001:db8::1]:443``) is the client's address, not the proxy's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.throttle import LoginThrottle
from node.app import Node, create_app
from node.http import TrustedProxies


async def _proxied(node: Node) -> TestClient:
    node.config.server.trusted_proxies = "127.0.0.1"
    client = TestClient(TestServer(create_app(node, node.home.admin_token()), host="127.0.0.1"))
    await client.start_server()
    return client


async def _login(client: TestClient, forwarded_for: str, name: str, password: str) -> int:
    resp = await client.post(
        "/api/auth/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return resp.status


@pytest.fixture
async def behind_proxy(node: Node) -> AsyncIterator[TestClient]:
    client = await _proxied(node)
    yield client
    await client.close()


def test_a_forwarded_hop_with_a_port_is_its_address() -> None:
    proxies = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert proxies.client_of("127.0.0.1", ["198.51.100.7:5678"]) == "198.51.100.7"
    assert proxies.client_of("127.0.0.1", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert proxies.client_of("127.0.0.1", ["[2001:db8::1]"]) == "2001:db8::1"
    assert proxies.client_of("127.0.0.1", ["2001:db8::1"]) == "2001:db8::1"
    assert proxies.client_of("127.0.0.1", ["6.6.6.6, 198.51.100.7:1, 10.0.0.5:80"]) == (
        "198.51.100.7"
    )
    for junk in ("junk:80", "198.51.100.7:", "198.51.100.7:x", "198.51.100.7:99999", "[junk]:1"):
        assert proxies.client_of("127.0.0.1", [junk]) == "127.0.0.1", junk
    assert proxies.client_of("127.0.0.1", ["[2001:db8::1]:443:1"]) == "127.0.0.1"
    assert proxies.client_of("127.0.0.1", ["2001:db8::1:443]"]) == "127.0.0.1"


async def test_clients_behind_a_proxy_that_writes_ports_are_told_apart(
    behind_proxy: TestClient, node: Node
) -> None:
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=2)
    first = [await _login(behind_proxy, "198.51.100.1:4000", f"u{i}", "wrong pw") for i in range(4)]
    assert first == [401] * 3 + [429]
    assert await _login(behind_proxy, "198.51.100.2:4000", "v", "wrong pw") == 401
    ipv6 = [
        await _login(behind_proxy, f"[2001:db8::{i}]:443", f"w{i}", "wrong pw") for i in (1, 2, 3)
    ]
    assert ipv6 == [401] * 3
    assert await _login(behind_proxy, "[2001:db8::9]:443", "x", "wrong pw") == 429  # one /64
    assert await _login(behind_proxy, "[2001:db8:0:1::9]:443", "x", "wrong pw") == 401
