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
