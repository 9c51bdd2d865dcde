"""Quotas are per account where there is one; proxy headers count only from trusted proxies."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.throttle import LoginThrottle
from node.app import Node, create_app
from node.http import SESSION_COOKIE, TrustedProxies
from node.moderation.service import Submitter, TooManyNotices
from node.p2p.keys import SigningKey

PASSWORD = "correct horse battery"


def _fields() -> dict[str, object]:
    return {
        "claimant_name": "Ada",
        "works": "my drawings",
        "targets": [f"file:{secrets.token_hex(32)}"],
        "reason": "copyright",
        "action": "remove",
        "good_faith": True,
        "accurate": True,
    }


async def test_an_anonymous_flood_does_not_use_up_an_accounts_notice_quota(node: Node) -> None:
    node.moderation.notices_per_day = 3
    anonymous = Submitter(address="203.0.113.9")  # one NAT, or one proxy, for everyone
    for _ in range(3):
        await node.moderation.file_notice(SigningKey.generate(), _fields(), anonymous)
    with pytest.raises(TooManyNotices):
        await node.moderation.file_notice(SigningKey.generate(), _fields(), anonymous)
    alice = Submitter(account="alice", address="203.0.113.9")
    for _ in range(3):
        await node.moderation.file_notice(SigningKey.generate(), _fields(), alice)
    with pytest.raises(TooManyNotices, match="account"):  # her own quota still holds
        await node.moderation.file_notice(SigningKey.generate(), _fields(), alice)


def test_the_client_is_the_first_untrusted_hop_from_the_right() -> None:
    proxies = TrustedProxies("10.0.0.0/8, 127.0.0.1")
    assert "10.1.2.3" in proxies and "127.0.0.1" in proxies and "192.0.2.1" not in proxies
    assert "not an ip" not in proxies and "192.0.2.1" not in TrustedProxies("")
    assert proxies.client_of("127.0.0.1", ["198.51.100.7"]) == "198.51.100.7"
    # a client may send its own X-Forwarded-For: only what our proxies appended counts
    assert proxies.client_of("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.0.0.5"]) == "198.51.100.7"
    assert proxies.client_of("127.0.0.1", ["6.6.6.6", "198.51.100.7"]) == "198.51.100.7"
    assert proxies.client_of("127.0.0.1", ["junk, 10.0.0.5"]) == "10.0.0.5"
    assert proxies.client_of("127.0.0.1", []) == "127.0.0.1"
    assert proxies.client_of("192.0.2.1", ["198.51.100.7"]) == "192.0.2.1"  # not our proxy


@pytest.fixture
async def behind_proxy(node: Node) -> AsyncIterator[TestClient]:
    """The node with 127.0.0.1 (where the test client connects from) as a trusted proxy."""
    node.config.server.trusted_proxies = "127.0.0.1"
    app = create_app(node, node.home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def _wrong(client: TestClient, forwarded_for: str) -> int:
    resp = await client.post(
        "/api/auth/login",
        json={"username": f"u{secrets.token_hex(4)}", "password": "wrong password"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return resp.status


async def test_forwarded_for_is_ignored_from_untrusted_clients(
    client: TestClient, node: Node
) -> None:
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=2)
    statuses = [await _wrong(client, f"198.51.100.{i}") for i in range(4)]
    assert statuses == [401, 401, 401, 429]  # rotating the header does not help


async def test_forwarded_for_is_the_client_behind_a_trusted_proxy(
    behind_proxy: TestClient, node: Node
) -> None:
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=2)
    assert [await _wrong(behind_proxy, "198.51.100.1") for _ in range(4)] == [401] * 3 + [429]
    assert await _wrong(behind_proxy, "198.51.100.2") == 401  # another client behind it


async def _session_cookie(client: TestClient, proto: str) -> bool:
    resp = await client.post(
        "/api/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": proto},
    )
    assert resp.status == 200
    return bool(resp.cookies[SESSION_COOKIE]["secure"])


async def test_secure_cookie_behind_a_trusted_tls_proxy(
    behind_proxy: TestClient, node: Node
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    assert await _session_cookie(behind_proxy, "https") is True
    assert await _session_cookie(behind_proxy, "http") is False


async def test_forwarded_proto_is_ignored_from_untrusted_clients(
    client: TestClient, node: Node
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    assert await _session_cookie(client, "https") is False
