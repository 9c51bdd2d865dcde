"""A node joining a federation that carries poison syncs every valid record and reports,
per peer, each record it refused with the rule it broke (issue 21: "a third node joining a
federation that contains poison records ... syncs every valid record and reports the
refused ones per peer")."""

from __future__ import annotations

from tests.p2p.hostile import forger
from tests.p2p.hostile.conftest import MakePeer
from tests.p2p.test_torrents import LiveNode


async def test_a_joining_node_keeps_the_valid_records_and_reports_the_poison(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    artist, attacker = forger.key("artist"), forger.key("attacker")
    # Every author a node holds commits to its next key: no other key can pass for it.
    profile = forger.record(artist, "profile", {"name": "artist", "next_key": forger.digest("n")})
    model = forger.model(artist, "genuine")
    version = forger.version(artist, model.id, "genuine-v1")
    poison = [
        forger.foreign_tombstone(attacker, version.id).raw,  # not the version's author
        forger.foreign_revision(attacker, model.id).raw,  # not the model's author
        forger.oversized_model(attacker),  # a description over the limits
        forger.forge(attacker, "profile", {"name": "old"}, created=1_000),  # before 2024
    ]
    inert = [forger.orphan_version(attacker).raw, *forger.unknown(attacker, 3)]
    peer = await fake_peer(
        "good", [profile.raw, model.raw, version.raw, *poison, *inert], label="mixed"
    )
    await idle.node.federation.add_peer(peer.url)

    resp = await idle.client.post("/api/admin/sync", headers=idle.admin)
    report = (await resp.json())["peers"][peer.did]
    assert "error" not in report
    assert report["accepted"] == 3 + len(inert)
    assert report["refused"] == {
        "not_author": 2,
        "record_malformed": 1,
        "record_before_protocol": 1,
    }

    # The genuine model is shown whole: neither the tombstone nor the revision took it.
    found = await idle.client.get("/api/v1/models", params={"query": "genuine"})
    items = (await found.json())["items"]
    assert [m["name"] for m in items] == ["genuine"]
    assert [v["name"] for v in items[0]["modelVersions"]] == ["genuine-v1"]
    pages = await idle.client.get("/federation/v1/records?after=0&limit=50")
    assert pages.status == 200
