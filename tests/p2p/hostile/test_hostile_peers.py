"""A hostile peer costs the node a bounded number of requests per round, is backed off
with an error naming what it did, and never stops or delays the sync with a good peer."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from node.p2p.records import now_ms, verify_record
from node.p2p.tables import records
from tests.p2p.hostile import forger
from tests.p2p.hostile.conftest import LIMITS, MakePeer, profiles
from tests.p2p.hostile.fakepeer import RECORDS
from tests.p2p.test_torrents import LiveNode

# mode: (what the peer's last_error says, most records pages one round may ask for)
HOSTILE = {
    "empty_more": ("empty page with more: true", 1),
    "garbage": ("bad records page", 1),
    "error500": ("answered 500", 1),
    "huge": ("sent more than", 1),
    "too_many": ("entries when asked for at most", 1),
    "stuck_cursor": ("the cursor must advance", 2),
    "seq_after": ("the cursor must advance", 1),
    "epoch_flap": ("epoch flapping", 3),
    "stall": ("sent no records page within", 1),
    "unknown_flood": ("records of unknown types", 1),
}


async def held(live: LiveNode, raws: list[bytes]) -> bool:
    return all([await live.node.log.get(verify_record(r).id) for r in raws])


@pytest.mark.parametrize("mode", HOSTILE)
async def test_a_hostile_peer_is_bounded_backed_off_and_harms_no_other_peer(
    mode: str, idle: LiveNode, fake_peer: MakePeer
) -> None:
    why, most_pages = HOSTILE[mode]
    hostile = await fake_peer(mode, profiles("hostile", 300))
    good_records = profiles("good", 30)
    good = await fake_peer("good", good_records)
    fed = idle.node.federation
    await fed.add_peer(hostile.url)  # first: a round in order would reach it first
    await fed.add_peer(good.url)

    report = await fed.sync_all()

    assert re.search(why, report[hostile.did]["error"]), report[hostile.did]
    assert 1 <= hostile.requests[RECORDS] <= most_pages
    assert report[good.did]["accepted"] == 30 and "error" not in report[good.did]
    assert await held(idle, good_records)
    peer = await fed.peer(hostile.did)
    assert peer.failures == 1 and peer.last_error == report[hostile.did]["error"]
    assert peer.next_try is not None and peer.next_try > now_ms()

    asked = hostile.requests.copy()
    again = await fed.sync_all()  # backing off: not asked anything
    assert again[hostile.did] == {"skipped": "backing off after errors"}
    assert hostile.requests == asked


async def test_an_unknown_type_flood_is_not_stored_in_bulk(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    hostile = await fake_peer("unknown_flood")
    fed = idle.node.federation
    await fed.add_peer(hostile.url)
    report = (await fed.sync_all())[hostile.did]
    budget = LIMITS.unknown_types_per_minute
    assert report["accepted"] == budget
    assert report["refused"] == {"unknown_type_over_budget": 200 - budget}
    async with idle.node.db.read() as conn:
        stored = await conn.scalar(
            sa.select(sa.func.count()).where(records.c.type == forger.UNKNOWN_TYPE)
        )
    assert stored == budget
    peer = await fed.peer(hostile.did)
    assert peer.cursor == 200  # past the refused ones: they are not asked for again
    assert peer.last_refused == {"unknown_type_over_budget": 200 - budget}
    assert peer.last_accepted == budget


async def test_an_endless_honest_peer_is_read_within_the_round_budget(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    """A peer with more than a round's worth is no fault of the peer: the turn ends
    when the budget is spent, with no error, and the next round goes on from there."""
    endless = await fake_peer("trickle")
    endless.trickle_s = 0
    fed = idle.node.federation
    await fed.add_peer(endless.url)
    report = (await fed.sync_all())[endless.did]
    assert "error" not in report and "round budget" in report["budget"]
    assert endless.requests[RECORDS] == LIMITS.pages_per_round
    assert (await fed.peer(endless.did)).cursor == LIMITS.pages_per_round  # one record a page
    await fed.sync_all()
    assert endless.requests[RECORDS] == 2 * LIMITS.pages_per_round
    assert (await fed.peer(endless.did)).cursor == 2 * LIMITS.pages_per_round


async def test_a_slow_peer_runs_out_of_round_time(idle: LiveNode, fake_peer: MakePeer) -> None:
    slow = await fake_peer("trickle")
    slow.trickle_s = 0.2
    fed = idle.node.federation
    fed.limits = type(LIMITS)(pages_per_round=1000, round_time_s=0.5, request_timeout_s=1.0)
    await fed.add_peer(slow.url)
    report = (await fed.sync_all())[slow.did]
    assert "its turn took over 0.5 s" in report["error"]
    assert slow.requests[RECORDS] <= 4
    assert (await fed.peer(slow.did)).failures == 1
