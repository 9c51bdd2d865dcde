"""The node's HTTP surface: discovery, health, errors."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from node.app import Node


async def test_well_known_names_the_node(client: TestClient, node: Node) -> None:
    resp = await client.get("/.well-known/civitas")
    assert resp.status == 200
    info = await resp.json()
    assert info["did"] == node.node_key.did
    assert info["did"].startswith("did:key:z6Mk")
    assert info["name"] == "test-node"
    assert info["software"]["name"] == "civitas"
    assert info["log_epoch"] == await node.log.epoch()
    assert set(info["endpoints"]) >= {"api", "federation", "health"}


async def test_healthz_answers_when_database_is_reachable(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


async def test_errors_are_json_without_tracebacks(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    resp = await client.get("/no/such/page")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"

    resp = await client.post(
        "/api/admin/users",
        data=b"{not json",
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request" and "JSON" in body["message"]
    assert "Traceback" not in await resp.text()

    resp = await client.post("/api/admin/users", json=["a list"], headers=admin_headers)
    assert resp.status == 400
    assert await resp.json() == {
        "error": "bad_request",
        "message": "the body must be a JSON object",
    }

    resp = await client.post("/api/admin/users", json={"name": 5}, headers=admin_headers)
    assert resp.status == 400
    assert await resp.json() == {"error": "bad_request", "message": "'name' must be a str"}


async def test_oversize_body_is_a_json_413(
    client: TestClient, node: Node, admin_headers: dict[str, str]
) -> None:
    too_big = b"x" * (node.config.server.max_body_bytes + 1)
    resp = await client.post(
        "/api/admin/users",
        data=too_big,
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"
