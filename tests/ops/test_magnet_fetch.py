"""``civitas fetch MAGNET`` on a node that never peered with the magnet's source node."""

from __future__ import annotations

from typing import Any

from node.catalog.magnet_records import source_nodes
from tests.p2p.test_torrents import LiveNode, settled


async def test_a_magnet_brings_its_records_from_its_source_then_the_file(
    node_a: LiveNode, node_b: LiveNode, published: dict[str, Any]
) -> None:
    civitas = published["file"]["civitas"]
    assert source_nodes(civitas["magnet"]) == [node_a.url]
    assert await node_b.node.federation.list_peers() == []  # never peered, either way
    assert await node_a.node.federation.list_peers() == []

    resp = await node_b.client.post(
        "/api/downloads", json={"target": civitas["magnet"]}, headers=node_b.admin
    )
    assert resp.status == 202, await resp.text()
    status = await settled(node_b, civitas["infohash"])
    assert status["state"] == "complete", status
    stored = await node_b.node.store.local_path(civitas["sha256"])
    assert stored is not None and stored.read_bytes() == published["path"].read_bytes()

    version_id = published["version"]["id"]
    version = await (await node_b.client.get(f"/api/v1/model-versions/{version_id}")).json()
    model = await (await node_b.client.get(f"/api/v1/models/{version['modelId']}")).json()
    assert model["name"] == "Fox"
    assert model["civitas"]["receivedFrom"] == node_a.node.node_key.did  # not "published here"
    assert model["civitas"]["signatureVerified"] is True
    # The profile came along; A is no peer, so its name shows with the key's first characters.
    assert model["creator"]["username"].startswith("alice@")


async def test_a_magnet_whose_nodes_do_not_know_it_is_a_clear_404(
    node_a: LiveNode, node_b: LiveNode
) -> None:
    magnet = f"magnet:?xt=urn:btih:{'ab' * 20}&tr={node_a.url}/announce"
    resp = await node_b.client.post("/api/downloads", json={"target": magnet}, headers=node_b.admin)
    assert resp.status == 404
    assert "no model version" in (await resp.json())["message"]
    answer = await node_a.client.get(f"/federation/v1/files/{'ab' * 20}/records")
    assert answer.status == 404
    assert (await node_a.client.get("/federation/v1/files/nothex/records")).status == 400


def test_source_nodes_come_from_trackers_and_web_seeds_only() -> None:
    magnet = (
        "magnet:?xt=urn:btih:"
        + "ab" * 20
        + "&tr=http://n.example:8080/announce&ws=https://m.example/sub/webseed/ABC"
        + "&tr=udp://t.example:6969/announce&ws=ftp://x.example/webseed/A"
        + "&tr=http://other.example/somewhere"
    )
    assert source_nodes(magnet) == ["http://n.example:8080", "https://m.example/sub"]
