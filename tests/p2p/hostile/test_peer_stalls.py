"""A peer's side requests cost it, not the node: a stalled /.well-known is the peer's
failure, backed off like a stalled records page."""

from __future__ import annotations

from node.p2p.records import now_ms
from tests.p2p.hostile.conftest import MakePeer, profiles
from tests.p2p.hostile.fakepeer import RECORDS, WELL_KNOWN
from tests.p2p.hostile.test_hostile_peers import held
from tests.p2p.test_torrents import LiveNode


async def test_a_peer_whose_well_known_hangs_is_backed_off(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    stalling = await fake_peer("good", profiles("stalling", 3), label="stalling")
    good_records = profiles("good", 5)
    good = await fake_peer("good", good_records)
    fed = idle.node.federation
    await fed.add_peer(stalling.url)
    await fed.add_peer(good.url)
    stalling.stall_well_known = True  # from now on /.well-known/civitas never answers

    report = await fed.sync_all()

    assert "/.well-known/civitas" in report[stalling.did]["error"], report[stalling.did]
    assert "within 1 s" in report[stalling.did]["error"]  # the per-request timeout
    peer = await fed.peer(stalling.did)
    assert peer.failures == 1 and peer.next_try is not None and peer.next_try > now_ms()
    assert report[good.did]["accepted"] == 5 and await held(idle, good_records)

    asked = stalling.requests.copy()
    again = await fed.sync_all()  # backing off: its stall costs this round nothing
    assert again[stalling.did] == {"skipped": "backing off after errors"}
    assert stalling.requests == asked and asked[WELL_KNOWN] == 2  # added, one round
    assert stalling.requests[RECORDS] == 0
