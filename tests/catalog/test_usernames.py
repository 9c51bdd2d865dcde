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


RELAY, LOOKALIKE = key("honest relay node").did, key("a peer calling itself relay").did
GENUINE, FORGER, SHOUTER = key("the real remote alice"), key("forger one"), key("forger two")


async def test_the_first_profile_seen_with_a_shown_name_keeps_it(
    client: TestClient, node: Node, alice: User
) -> None:
    """A forged {"name": "alice"} relayed through the same honest peer, or through another
    peer that calls itself by that peer's name, cannot take alice@relay from the profile
    this node saw first; nor can a later profile update cost the first its name."""
    async with node.db.write() as conn:
        for did, url in ((RELAY, "http://127.0.0.1:9"), (LOOKALIKE, "http://127.0.0.1:10")):
            await conn.execute(
                peers.insert().values(did=did, url=url, name="relay", added=now_ms())
            )
    await node.log.publish(
        node.home.author_key(alice.did), "model", {"name": "Local fox", "type": "LORA"}
    )
    arrivals = [
        (RELAY, [profile(GENUINE, "alice"), model(GENUINE, "Genuine fox", T0 + 1)]),
        (RELAY, [profile(FORGER, "alice", T0 + 5), model(FORGER, "Forged fox", T0 + 6)]),
        (LOOKALIKE, [profile(SHOUTER, "ALICE", T0 + 7), model(SHOUTER, "Loud fox", T0 + 8)]),
        (RELAY, [profile(GENUINE, "alice", T0 + 9)]),  # the genuine author's update
    ]
    for source, batch in arrivals:
        await node.log.accept_verified(batch, source=source, refused=[])

    forger = f"alice-{FORGER.did.removeprefix('did:key:z6Mk')[:6]}@relay"
    shouter = f"ALICE-{SHOUTER.did.removeprefix('did:key:z6Mk')[:6]}@relay"
    assert await listed(client, "alice@relay") == [("Genuine fox", "alice@relay")]
    assert await listed(client, "ALICE@relay") == [("Genuine fox", "alice@relay")]
    assert await listed(client, forger) == [("Forged fox", forger)]
    assert await listed(client, shouter) == [("Loud fox", shouter)]
    assert await listed(client, "alice") == [("Local fox", "alice")]
    resp = await client.get("/api/v1/creators")
    creators = {c["username"] for c in (await resp.json())["items"]}
    assert creators == {"alice", "alice@relay", forger, shouter}
