"""A stolen API token cannot make itself permanent or lock its owner out; nobody can lock an
account out with wrong passwords; an IPv6 client's address budget is its /64, not each of
its 2^64 addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.throttle import LoginThrottle
from node.app import Node, create_app
from node.http import CSRF_HEADER
from tests.security.test_accounts_login import Clock

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _refused_for_tokens(resp_status: int, body: dict[str, str]) -> None:
    assert resp_status == 403, body
    assert body["error"] == "forbidden" and "session" in body["message"], body


# --- (d) API tokens may not manage API tokens -----------------------------------------------


async def test_an_api_token_cannot_mint_list_or_revoke_tokens(
    client: TestClient, node: Node
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    await node.accounts.add_user("root", PASSWORD, role="admin")
    stolen = await node.accounts.create_token("alice", "laptop", expires_days=1)
    other = await node.accounts.create_token("alice", "phone")
    admins = await node.accounts.create_token("root", "ci")
    (phone, laptop) = await node.accounts.list_tokens("alice")

    for token, name in ((stolen, "alice"), (admins, "alice"), (admins, "root")):
        made = await client.post(f"/api/admin/users/{name}/tokens", json={}, headers=bearer(token))
        await _refused_for_tokens(made.status, await made.json())
        listed = await client.get(f"/api/admin/users/{name}/tokens", headers=bearer(token))
        await _refused_for_tokens(listed.status, await listed.json())
    gone = await client.delete(
        f"/api/admin/users/alice/tokens/{phone['id']}", headers=bearer(stolen)
    )
    await _refused_for_tokens(gone.status, await gone.json())
    # nor through the account page, which takes a Bearer token without a form token
    page = await client.post("/account/tokens", data={"label": "forever"}, headers=bearer(stolen))
    assert page.status == 403
    revoke = await client.post(
        f"/account/tokens/{phone['id']}/revoke", headers=bearer(stolen), allow_redirects=False
    )
    assert revoke.status == 403
    assert (await client.get("/account/tokens", headers=bearer(stolen))).status == 403

    assert [t["id"] for t in await node.accounts.list_tokens("alice")] == [
        phone["id"],
        laptop["id"],
    ]
    assert len(await node.accounts.list_tokens("root")) == 1
    for token in (stolen, other):
        assert (await client.get("/api/auth/me", headers=bearer(token))).status == 200


async def test_a_session_and_the_node_admin_still_manage_tokens(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    session = {CSRF_HEADER: (await login.json())["csrf_token"]}
    made = await client.post(
        "/api/admin/users/alice/tokens", json={"label": "ci", "expires_days": 7}, headers=session
    )
    assert made.status == 201
    token = (await made.json())["token"]
    assert (await client.get("/api/auth/me", headers=bearer(token))).status == 200
    forged = await client.post("/api/admin/users/alice/tokens", json={"label": "x"})
    assert forged.status == 403  # a session without its CSRF header
    (listed,) = (await (await client.get("/api/admin/users/alice/tokens")).json())["tokens"]
    gone = await client.delete(f"/api/admin/users/alice/tokens/{listed['id']}", headers=session)
    assert gone.status == 200
    assert (await client.get("/api/auth/me", headers=bearer(token))).status == 401

    # the node's admin token (what `civitas token` uses while the node runs)
    made = await client.post("/api/admin/users/alice/tokens", json={}, headers=admin_headers)
    assert made.status == 201
    listed = await (await client.get("/api/admin/users/alice/tokens", headers=admin_headers)).json()
    (only,) = listed["tokens"]
    gone = await client.delete(f"/api/admin/users/alice/tokens/{only['id']}", headers=admin_headers)
    assert gone.status == 200 and await node.accounts.list_tokens("alice") == []


# --- (f) wrong passwords from elsewhere do not lock the owner out ----------------------------


@pytest.fixture
async def behind_proxy(node: Node) -> AsyncIterator[TestClient]:
    """The node with 127.0.0.1 (where the test client connects from) as a trusted proxy, so
    each request's ``X-Forwarded-For`` is its client address."""
    node.config.server.trusted_proxies = "127.0.0.1"
    app = create_app(node, node.home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def _login(
    client: TestClient, address: str, name: str, password: str
) -> tuple[int, str | None]:
    resp = await client.post(
        "/api/auth/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": address},
    )
    if resp.status == 429:
        assert (await resp.json())["error"] == "too_many_requests"
        assert resp.headers["Retry-After"]
    return resp.status, resp.headers.get("Retry-After")


async def test_an_attacker_cannot_lock_the_owner_out(behind_proxy: TestClient, node: Node) -> None:
    clock = Clock()
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=20, clock=clock)
    await node.accounts.add_user("alice", PASSWORD)
    attacker = "203.0.113.9"
    statuses = [(await _login(behind_proxy, attacker, "alice", f"g{i}"))[0] for i in range(40)]
    assert statuses == [401] * 6 + [429] * 34  # the guesser is slowed down
    assert (await _login(behind_proxy, attacker, "alice", PASSWORD))[0] == 429
    # ... but alice, from her own address, logs in at once
    assert (await _login(behind_proxy, "198.51.100.20", "alice", PASSWORD))[0] == 200
    assert (await _login(behind_proxy, "198.51.100.20", "alice", "typo"))[0] == 401


async def test_many_addresses_against_one_account_are_bounded_but_not_its_owner(
    behind_proxy: TestClient, node: Node
) -> None:
    clock = Clock()
    node.accounts.throttle = LoginThrottle(
        per_account=5, per_address=20, per_account_overall=10, clock=clock
    )
    await node.accounts.add_user("alice", PASSWORD)
    home = "198.51.100.20"
    assert (await _login(behind_proxy, home, "alice", PASSWORD))[0] == 200  # her address

    botnet = [f"203.0.113.{i}" for i in range(1, 40)]
    statuses = [(await _login(behind_proxy, a, "alice", "guess"))[0] for a in botnet]
    assert statuses == [401] * 11 + [429] * 28  # the account waits for new addresses
    assert await _login(behind_proxy, "192.0.2.1", "alice", PASSWORD) == (429, "1")
    assert await _login(behind_proxy, "2001:db8::1", "alice", PASSWORD) == (429, "1")
    # an address alice logged in from before goes on as usual (its own limits apply)
    assert (await _login(behind_proxy, home, "alice", PASSWORD))[0] == 200
    statuses = [(await _login(behind_proxy, home, "alice", f"typo{i}"))[0] for i in range(7)]
    assert statuses == [401] * 6 + [429]
    clock.now += 1
    assert (await _login(behind_proxy, "192.0.2.1", "alice", "guess"))[0] == 401
    assert await _login(behind_proxy, "192.0.2.2", "alice", PASSWORD) == (429, "2")  # doubled


# --- (g) an IPv6 client is its /64 ---------------------------------------------------------


async def test_one_ipv6_64_is_one_address_for_logins(behind_proxy: TestClient, node: Node) -> None:
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=2, clock=Clock())
    statuses = [
        (await _login(behind_proxy, f"2001:db8:1:2::{i:x}", f"u{i}", "wrong password"))[0]
        for i in range(1, 6)
    ]
    assert statuses == [401] * 3 + [429] * 2  # rotating within the /64 does not help
    assert (await _login(behind_proxy, "2001:db8:1:3::1", "u9", "wrong password"))[0] == 401
    # an IPv4 client is its own address, however it is written
    for address in ("198.51.100.7", "::ffff:198.51.100.7", "198.51.100.7"):
        assert (await _login(behind_proxy, address, "v", "wrong password"))[0] == 401
    assert (await _login(behind_proxy, "::ffff:198.51.100.7", "w", "wrong password"))[0] == 429
    assert (await _login(behind_proxy, "198.51.100.8", "w", "wrong password"))[0] == 401


async def test_one_ipv6_64_is_one_address_for_reports(behind_proxy: TestClient, node: Node) -> None:
    node.moderation.notices_per_day = 1  # five reports a day per address
    target = "model:" + "cd" * 32
    statuses = []
    for i in range(1, 8):
        resp = await behind_proxy.post(
            "/api/reports",
            json={"target": target, "reason": "spam"},
            headers={"X-Forwarded-For": f"2001:db8:5:6:{i:x}::1"},
        )
        statuses.append(resp.status)
    assert statuses == [201] * 5 + [429] * 2
    resp = await behind_proxy.post(
        "/api/reports",
        json={"target": target, "reason": "spam"},
        headers={"X-Forwarded-For": "2001:db8:5:7::1"},
    )
    assert resp.status == 201


def test_the_address_key() -> None:
    from node.ratelimit import address_key

    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("2001:DB8:1:2::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("") == "" and address_key("unix") == "unix"
    assert address_key(address_key("2001:db8::1")) == "2001:db8::/64"
