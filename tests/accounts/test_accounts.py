"""Accounts: users with author keys, passwords, tokens, sessions — service and HTTP."""

from __future__ import annotations

import stat

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from node.accounts.tables import api_tokens, users
from node.app import Node
from node.errors import BadRequest, Conflict, Unauthorized
from node.http import CSRF_HEADER, SESSION_COOKIE
from node.p2p.keys import load_key, public_key_commitment
from node.p2p.tables import authors

PASSWORD = "correct horse battery"


async def test_new_user_gets_an_author_key_and_a_signed_profile(node: Node) -> None:
    user = await node.accounts.add_user("alice", PASSWORD, "moderator")
    assert user.role == "moderator" and user.did.startswith("did:key:z6Mk")

    key_file = node.home.author_key_file(user.did)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_key(key_file).did == user.did

    async with node.db.read() as conn:
        row = (await conn.execute(sa.select(authors).where(authors.c.did == user.did))).one()
    assert row.name == "alice"
    following = load_key(node.home.author_key_file(user.did, following=True))
    assert row.next_key == public_key_commitment(following.public_bytes)
    entry = await node.log.get(row.profile_id)
    assert entry is not None and entry.author == user.did and entry.type == "profile"


async def test_passwords_and_tokens_are_never_stored_plain(node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    token = await node.accounts.create_token("alice", "laptop")
    async with node.db.read() as conn:
        stored_hash = await conn.scalar(sa.select(users.c.password_hash))
        token_hashes = (await conn.execute(sa.select(api_tokens.c.token_hash))).scalars().all()
    assert PASSWORD not in stored_hash and stored_hash.startswith("scrypt$")
    assert token.encode() not in token_hashes
    user = await node.accounts.user_for_token(token)
    assert user is not None and user.name == "alice"
    assert await node.accounts.user_for_token(token + "x") is None


async def test_bad_account_input_is_refused(node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    with pytest.raises(Conflict):
        await node.accounts.add_user("alice", PASSWORD)
    with pytest.raises(BadRequest, match="password"):
        await node.accounts.add_user("bob", "short")
    with pytest.raises(BadRequest, match="username"):
        await node.accounts.add_user("../etc", PASSWORD)
    with pytest.raises(BadRequest, match="role"):
        await node.accounts.add_user("carol", PASSWORD, "root")
    assert [u.name for u in await node.accounts.list_users()] == ["alice"]


async def test_login_fails_the_same_way_for_wrong_password_and_unknown_user(node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    with pytest.raises(Unauthorized) as wrong:
        await node.accounts.login("alice", "wrong password")
    with pytest.raises(Unauthorized) as unknown:
        await node.accounts.login("nobody", PASSWORD)
    assert wrong.value.message == unknown.value.message


# --- over HTTP ---------------------------------------------------------------------------


async def login(client: TestClient) -> str:
    resp = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert resp.status == 200
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    return str((await resp.json())["csrf_token"])


async def test_login_session_and_logout(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    assert (await client.get("/api/auth/me")).status == 401
    await login(client)
    me = await (await client.get("/api/auth/me")).json()
    assert me["user"]["name"] == "alice"

    resp = await client.post("/api/auth/logout")
    assert resp.status == 403  # a cookie session must send its CSRF token to change state
    csrf = await login(client)
    resp = await client.post("/api/auth/logout", headers={CSRF_HEADER: csrf})
    assert resp.status == 200
    assert (await client.get("/api/auth/me")).status == 401


async def test_wrong_login_is_a_json_401(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    resp = await client.post("/api/auth/login", json={"username": "alice", "password": "nope"})
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized", "message": "wrong username or password"}


async def test_cross_site_requests_cannot_use_the_session(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD, "admin")
    csrf = await login(client)
    resp = await client.post(
        "/api/admin/users",
        json={"name": "mallory", "password": PASSWORD},
        headers={CSRF_HEADER: csrf, "Sec-Fetch-Site": "cross-site"},
    )
    assert resp.status == 403
    resp = await client.post(
        "/api/admin/users",
        json={"name": "bob", "password": PASSWORD},
        headers={CSRF_HEADER: csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert resp.status == 201
    assert [u.name for u in await node.accounts.list_users()] == ["alice", "bob"]


async def test_admin_endpoints_need_an_admin(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    body = {"name": "bob", "password": PASSWORD}
    assert (await client.post("/api/admin/users", json=body)).status == 401
    await node.accounts.add_user("alice", PASSWORD)
    member = {"Authorization": f"Bearer {await node.accounts.create_token('alice')}"}
    assert (await client.post("/api/admin/users", json=body, headers=member)).status == 403
    resp = await client.post("/api/admin/users", json=body, headers=admin_headers)
    assert resp.status == 201
    assert (await resp.json())["user"]["name"] == "bob"
    status = await (await client.get("/api/admin/status", headers=admin_headers)).json()
    assert status["users"] == 2
    assert status["records"] == await node.log.count()  # two profiles, and the node's own


async def test_members_create_tokens_only_for_themselves(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    await node.accounts.add_user("bob", PASSWORD)
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    alice = {CSRF_HEADER: (await login.json())["csrf_token"]}  # her session (not a token)
    assert (await client.post("/api/admin/users/bob/tokens", headers=alice)).status == 403
    resp = await client.post("/api/admin/users/alice/tokens", json={"label": "x"}, headers=alice)
    assert resp.status == 201
    token = (await resp.json())["token"]
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json())["user"]["name"] == "alice"


async def test_unknown_bearer_token_is_anonymous(client: TestClient) -> None:
    headers = {"Authorization": "Bearer some-civitai-api-key"}
    assert (await client.get("/.well-known/civitas", headers=headers)).status == 200
    assert (await client.get("/api/auth/me", headers=headers)).status == 401


async def test_cross_site_login_is_refused(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    resp = await client.post(
        "/api/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert resp.status == 403
    assert SESSION_COOKIE not in resp.cookies
