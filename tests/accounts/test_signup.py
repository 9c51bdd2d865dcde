"""Issue 17, sign-up: the ``accounts.registration`` setting (open, invite, closed), the
sign-up API and page, invite codes, and the limits on who may make accounts."""

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from node.app import Node
from node.config import load_config
from node.errors import ConfigError, Forbidden


def test_registration_is_closed_by_default(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).accounts.registration == "closed"


def test_registration_from_environment_and_file(tmp_path: Path) -> None:
    env = {"CIVITAS_ACCOUNTS_REGISTRATION": "invite"}
    assert load_config(tmp_path, environ=env).accounts.registration == "invite"
    (tmp_path / "config.toml").write_text('[accounts]\nregistration = "open"\n')
    assert load_config(tmp_path, environ={}).accounts.registration == "open"


def test_unknown_registration_mode_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registration"):
        load_config(tmp_path, environ={"CIVITAS_ACCOUNTS_REGISTRATION": "anyone"})


# --- the sign-up routes, on a live node ------------------------------------------------------

PASSWORD = "a long enough password"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_up(client: TestClient, name: str, **extra: str) -> ClientResponse:
    """A sign-up by a new visitor (no session cookie of an earlier one)."""
    client.session.cookie_jar.clear()
    return await client.post(
        "/api/auth/signup", json={"username": name, "password": PASSWORD, **extra}
    )


async def test_closed_by_default_refuses_every_sign_up(client: TestClient, node: Node) -> None:
    resp = await sign_up(client, "mallory")
    assert resp.status == 403
    assert "closed" in (await resp.json())["message"]
    assert await node.accounts.list_users() == []
    page = await client.get("/signup")
    assert page.status == 200 and "Sign-up is closed" in await page.text()
    assert 'href="/signup' not in await (await client.get("/tags")).text()  # no nav link
    assert "civitas user add" in await (await client.get("/login")).text()


async def test_open_sign_up_makes_a_logged_in_member_who_can_log_in_again(
    client: TestClient, node: Node
) -> None:
    node.signups.registration = "open"
    assert (await (await client.get("/api/auth/registration")).json()) == {"registration": "open"}
    resp = await sign_up(client, "alice")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["user"]["name"] == "alice" and body["user"]["role"] == "member"
    me = await (await client.get("/api/auth/me")).json()  # the session cookie was set
    assert me["user"]["name"] == "alice"
    client.session.cookie_jar.clear()
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status == 200
    for name, status in (("Alice", 409), ("ALICE", 409), ("bad name!", 400), ("", 400)):
        refused = await sign_up(client, name)
        assert refused.status == status, name
        assert (await refused.json())["error"]
    short = await client.post("/api/auth/signup", json={"username": "bob", "password": "short"})
    assert short.status == 400
    assert [u.name for u in await node.accounts.list_users()] == ["alice"]


async def test_sign_ups_per_address_are_limited(client: TestClient, node: Node) -> None:
    node.signups.registration = "open"
    for n in range(node.config.accounts.signups_per_address):
        assert (await sign_up(client, f"user{n}")).status == 201
    resp = await sign_up(client, "one-too-many")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    assert len(await node.accounts.list_users()) == node.config.accounts.signups_per_address


async def test_invite_codes_are_made_by_admins_and_spent_once(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    node.signups.registration = "invite"
    assert (await sign_up(client, "alice")).status == 403  # no code
    assert (await client.post("/api/admin/invites")).status == 401
    await node.accounts.add_user("member", PASSWORD)
    member = await client.post("/api/auth/login", json={"username": "member", "password": PASSWORD})
    csrf = {"X-CSRF-Token": (await member.json())["csrf_token"]}
    assert (await client.post("/api/admin/invites", headers=csrf)).status == 403
    client.session.cookie_jar.clear()
    made = await client.post("/api/admin/invites", headers=admin_headers)
    assert made.status == 201
    code = (await made.json())["code"]
    assert (await sign_up(client, "alice", invite="cvi_not-a-real-code")).status == 403
    assert (await sign_up(client, "alice", invite=code)).status == 201
    client.session.cookie_jar.clear()
    again = await sign_up(client, "bob", invite=code)
    assert again.status == 403 and "used" in (await again.json())["message"]
    listed = (await (await client.get("/api/admin/invites", headers=admin_headers)).json())[
        "invites"
    ]
    assert [(i["used_by"], i["created_by"]) for i in listed] == [("alice", "node admin")]
    used = await client.delete(f"/api/admin/invites/{listed[0]['id']}", headers=admin_headers)
    assert used.status == 400
    node.signups.invite_ms = 0  # made already expired
    expired = await (await client.post("/api/admin/invites", headers=admin_headers)).json()
    assert (await sign_up(client, "carol", invite=expired["code"])).status == 403
    gone = await client.delete(
        f"/api/admin/invites/{expired['invite']['id']}", headers=admin_headers
    )
    assert gone.status == 200
    assert sorted(u.name for u in await node.accounts.list_users()) == ["alice", "member"]


async def test_one_invite_makes_one_account_however_many_race_for_it(
    node: Node, tmp_path: Path
) -> None:
    node.signups.registration = "invite"
    code, _ = await node.signups.create_invite("node admin")
    results = await asyncio.gather(
        *(node.signups.sign_up(f"racer{n}", PASSWORD, code, f"10.0.0.{n}") for n in range(4)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Forbidden)]
    assert len(made) == 1 and len(refused) == 3, results
    assert len(await node.accounts.list_users()) == 1


async def test_the_sign_up_form_logs_the_new_member_in(client: TestClient, node: Node) -> None:
    node.signups.registration = "open"
    tags_page = await (await client.get("/tags")).text()
    assert '<a href="/signup?next=%2Ftags">Sign up</a>' in tags_page  # the nav offers it
    login_page = await (await client.get("/login?next=/tags")).text()
    assert 'href="/signup?next=%2Ftags"' in login_page
    token = TOKEN.findall(await (await client.get("/signup?next=/tags")).text())[0]
    form = {"csrf_token": token, "username": "alice", "password": PASSWORD, "next": "/tags"}
    no_token = await client.post("/signup", data={**form, "csrf_token": "forged"})
    assert no_token.status == 403
    short = await client.post("/signup", data={**form, "password": "short"})
    assert short.status == 400 and "a password is" in await short.text()
    assert 'value="alice"' in await short.text()  # what was typed is kept
    resp = await client.post("/signup", data=form, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/tags"
    me = await (await client.get("/api/auth/me")).json()
    assert me["user"]["name"] == "alice"
