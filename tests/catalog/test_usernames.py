"""Usernames cannot be squatted: another node's "alice" is alice@thatnode, never alice.

Records come in through the log from a peer (``source``), as a pull would append them.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.p2p.records import now_ms
from node.p2p.tables import peers
from tests.catalog.forge import T0, key, model, profile

OTHER_NODE = key("other node").did
UNKNOWN_NODE = key("a node this one never peered with").did
SQUATTER, STRANGER = key("remote alice"), key("another remote alice")


async def setup(node: Node, alice: User) -> None:
    async with node.db.write() as conn:
        await conn.execute(
            peers.insert().values(
                did=OTHER_NODE, url="http://127.0.0.1:9", name="othernode", added=now_ms()
            )
        )
    await node.log.publish(
        node.home.author_key(alice.did), "model", {"name": "Local fox", "type": "LORA"}
    )
    await node.log.accept_verified(
        [profile(SQUATTER, "alice"), model(SQUATTER, "Remote fox", T0 + 1)],
        source=OTHER_NODE,
        refused=[],
    )
    await node.log.accept_verified(
        [profile(STRANGER, "alice"), model(STRANGER, "Stranger fox", T0 + 2)],
        source=UNKNOWN_NODE,
        refused=[],
    )


async def listed(client: TestClient, username: str) -> list[tuple[str, str]]:
    resp = await client.get(f"/api/v1/models?username={quote(username)}")
    assert resp.status == 200
    return [(m["name"], m["creator"]["username"]) for m in (await resp.json())["items"]]


async def test_a_remote_profile_cannot_take_a_local_name(
    client: TestClient, node: Node, alice: User
) -> None:
    await setup(node, alice)
    stranger = f"alice@{UNKNOWN_NODE.removeprefix('did:key:z6Mk')[:6]}"
    assert await listed(client, "alice") == [("Local fox", "alice")]
    assert await listed(client, "alice@othernode") == [("Remote fox", "alice@othernode")]
    assert await listed(client, stranger) == [("Stranger fox", stranger)]
    resp = await client.get("/api/v1/creators")
    creators = {c["username"] for c in (await resp.json())["items"]}
    assert creators == {"alice", "alice@othernode", stranger}
    page = await (await client.get("/creators/alice")).text()
    assert "Local fox" in page and "Remote fox" not in page
    page = await (await client.get("/creators/alice@othernode")).text()
    assert "Remote fox" in page and "Local fox" not in page
