"""Issue 13: an admin's API token (stolen, say) cannot mint accounts or admins, nor make or
delete invite codes: those routes take a logged-in browser session or the node's admin
token, as API-token management already did."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from node.app import Node

PASSWORD = "correct horse battery"


async def test_an_admins_api_token_cannot_create_accounts_or_invites(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    await node.accounts.add_user("root", PASSWORD, "admin")
    stolen = {"Authorization": f"Bearer {await node.accounts.create_token('root')}"}
    body = {"name": "mallory", "password": PASSWORD, "role": "admin"}
    resp = await client.post("/api/admin/users", json=body, headers=stolen)
    assert resp.status == 403
    assert "session" in (await resp.json())["message"]
    assert (await client.post("/api/admin/invites", headers=stolen)).status == 403
    made = await client.post("/api/admin/invites", headers=admin_headers)
    invite_id = (await made.json())["invite"]["id"]
    gone = await client.delete(f"/api/admin/invites/{invite_id}", headers=stolen)
    assert gone.status == 403
    assert [u.name for u in await node.accounts.list_users()] == ["root"]
    # reading stays open to the token (nothing secret in either list)
    assert (await client.get("/api/admin/users", headers=stolen)).status == 200
    listed = await (await client.get("/api/admin/invites", headers=stolen)).json()
    assert [i["id"] for i in listed["invites"]] == [invite_id]


async def test_a_session_or_the_node_admin_token_still_manages_accounts(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    await node.accounts.add_user("root", PASSWORD, "admin")
    body = {"name": "bob", "password": PASSWORD}
    assert (await client.post("/api/admin/users", json=body, headers=admin_headers)).status == 201
    login = await client.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
    session = {"X-CSRF-Token": (await login.json())["csrf_token"]}
    body = {"name": "carol", "password": PASSWORD, "role": "admin"}
    assert (await client.post("/api/admin/users", json=body, headers=session)).status == 201
    made = await client.post("/api/admin/invites", headers=session)
    assert made.status == 201
    invite_id = (await made.json())["invite"]["id"]
    assert (await client.delete(f"/api/admin/invites/{invite_id}", headers=session)).status == 200
    assert sorted(u.name for u in await node.accounts.list_users()) == ["bob", "carol", "root"]
