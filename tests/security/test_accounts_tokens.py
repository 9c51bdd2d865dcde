"""API tokens: listed, revoked and expiring, from the API, the CLI and the account page."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from node.accounts.tables import api_tokens
from node.app import Node
from node.errors import BadRequest, NotFound
from node.p2p.records import now_ms
from tests.test_cli import add_user, civitas, home, initialised, ok, refused  # noqa: F401

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _expire(node: Node, token_id: int) -> None:
    async with node.db.write() as conn:
        await conn.execute(
            api_tokens.update().where(api_tokens.c.id == token_id).values(expires=now_ms() - 1)
        )


async def test_tokens_are_listed_revoked_and_expire(node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    forever = await node.accounts.create_token("alice", "laptop")
    monthly = await node.accounts.create_token("alice", "ci", expires_days=30)
    listed = await node.accounts.list_tokens("alice")
    assert [(t["label"], t["expired"]) for t in listed] == [("ci", False), ("laptop", False)]
    assert listed[1]["expires"] is None
    assert 29 * 86400_000 < listed[0]["expires"] - listed[0]["created"] <= 30 * 86400_000
    assert all(forever not in str(t) and monthly not in str(t) for t in listed)

    await _expire(node, listed[0]["id"])
    assert await node.accounts.user_for_token(monthly) is None
    assert (await node.accounts.list_tokens("alice"))[0]["expired"] is True
    assert await node.accounts.user_for_token(forever) is not None
    await node.accounts.revoke_token("alice", listed[1]["id"])
    assert await node.accounts.user_for_token(forever) is None
    with pytest.raises(NotFound):
        await node.accounts.revoke_token("alice", listed[1]["id"])
    for days in (0, -1, 3651, True):
        with pytest.raises(BadRequest):
            await node.accounts.create_token("alice", "x", expires_days=days)  # type: ignore[arg-type]


async def test_tokens_over_the_api(client: TestClient, node: Node) -> None:
    """A logged-in session manages its user's tokens (an API token may not: see
    test_token_and_limits.py)."""
    await node.accounts.add_user("alice", PASSWORD)
    await node.accounts.add_user("bob", PASSWORD)
    alice = await node.accounts.create_token("alice")
    bob = await node.accounts.create_token("bob")
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    session = {"X-CSRF-Token": (await login.json())["csrf_token"]}
    resp = await client.post(
        "/api/admin/users/alice/tokens",
        json={"label": "ci", "expires_days": 7},
        headers=session,
    )
    assert resp.status == 201
    temporary = (await resp.json())["token"]
    assert (await client.get("/api/auth/me", headers=bearer(temporary))).status == 200

    listed = await (await client.get("/api/admin/users/alice/tokens")).json()
    ci = next(t for t in listed["tokens"] if t["label"] == "ci")
    assert ci["expires"] is not None and "token" not in ci
    assert (await client.get("/api/admin/users/bob/tokens")).status == 403  # not hers
    assert (await client.get("/api/admin/users/alice/tokens", headers=bearer(bob))).status == 403
    other = await client.delete(f"/api/admin/users/alice/tokens/{ci['id']}", headers=bearer(bob))
    assert other.status == 403

    await _expire(node, ci["id"])
    expired = await client.get("/api/auth/me", headers=bearer(temporary))
    assert expired.status == 401 and (await expired.json())["error"] == "unauthorized"

    first = next(t for t in listed["tokens"] if t["label"] == "cli")
    gone = await client.delete(f"/api/admin/users/alice/tokens/{first['id']}", headers=session)
    assert gone.status == 200
    assert (await client.get("/api/auth/me", headers=bearer(alice))).status == 401
    missing = await client.delete(
        "/api/admin/users/alice/tokens/99999999999999999999", headers=session
    )
    assert missing.status == 404


async def test_the_account_page_lists_creates_and_revokes(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    csrf = (await login.json())["csrf_token"]
    page = await client.get("/account/tokens")
    assert page.status == 200 and "No tokens yet" in await page.text()
    made = await client.post(
        "/account/tokens", data={"csrf_token": csrf, "label": "phone", "expires_days": "3"}
    )
    text = await made.text()
    assert made.status == 201 and "shown this once" in text and "phone" in text
    (token,) = await node.accounts.list_tokens("alice")
    assert token["expires"] is not None
    bad = await client.post(
        "/account/tokens", data={"csrf_token": csrf, "label": "x", "expires_days": "soon"}
    )
    assert bad.status == 400
    revoke = await client.post(
        f"/account/tokens/{token['id']}/revoke", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert revoke.status == 303
    assert await node.accounts.list_tokens("alice") == []
    forged = await client.post(f"/account/tokens/{token['id']}/revoke", data={"csrf_token": "x"})
    assert forged.status == 403


def test_token_cli_lists_and_revokes(home: Path) -> None:  # noqa: F811
    add_user(home, "alice")
    value = ok(civitas(home, "token", "create", "alice", "--label", "ci", "--expires-days", "2"))
    assert value.strip().startswith("cvt_")
    lines = ok(civitas(home, "token", "list", "alice")).splitlines()
    assert len(lines) == 1 and "\tci\t" in lines[0] and "never" not in lines[0]
    token_id = lines[0].split("\t")[0]
    assert value.strip() not in lines[0]
    ok(civitas(home, "token", "revoke", "alice", token_id))
    assert ok(civitas(home, "token", "list", "alice")).strip() == ""
    assert "no token" in refused(civitas(home, "token", "revoke", "alice", token_id))
