"""What each peer's last round accepted and refused, with the reasons counted, in the
sync report (``civitas sync``) and in ``civitas peer list``."""

from __future__ import annotations

from node.cli.peers import describe_peer
from tests.p2p.hostile import forger
from tests.p2p.hostile.conftest import LIMITS, MakePeer, profiles
from tests.p2p.test_torrents import LiveNode


async def test_the_sync_report_and_peer_list_count_accepted_and_refused_per_peer(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    signer = forger.key("poisoner")
    poison = [
        forger.oversized_model(signer),
        forger.forge(signer, "profile", {"name": "forged"}, author=forger.key("other").did),
        forger.forge(signer, "profile", {"name": "from the future"}, v=2),
    ]
    mixed = await fake_peer("good", [*profiles("mixed", 5), *poison], label="mixed")
    flood = await fake_peer("unknown_flood")
    fed = idle.node.federation
    await fed.add_peer(mixed.url)
    await fed.add_peer(flood.url)

    resp = await idle.client.post("/api/admin/sync", headers=idle.admin)
    report = (await resp.json())["peers"]
    assert report[mixed.did]["accepted"] == 5 and "error" not in report[mixed.did]
    refused = report[mixed.did]["refused"]
    assert refused == {
        "record_bad_signature": 1,
        "record_malformed": 1,
        "record_unknown_version": 1,
    }
    over = 200 - LIMITS.unknown_types_per_minute
    assert report[flood.did]["refused"] == {"unknown_type_over_budget": over}

    peers = (await (await idle.client.get("/api/admin/peers", headers=idle.admin)).json())["peers"]
    lines = {p["did"]: describe_peer(p) for p in peers}
    assert "last round: 5 accepted, 3 refused (" in lines[mixed.did]
    assert (
        "(record_bad_signature 1, record_malformed 1, record_unknown_version 1)" in lines[mixed.did]
    )
    assert lines[mixed.did].endswith("connected")
    expected = f"{LIMITS.unknown_types_per_minute} accepted, {over} refused"
    assert expected in lines[flood.did]
    assert f"unknown_type_over_budget {over}" in lines[flood.did]
    assert "failing since" in lines[flood.did] and "unknown types" in lines[flood.did]
