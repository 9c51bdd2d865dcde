"""One peer never delays or stops the others: each peer's turn is its own task, pushes
do not wait behind pulls, any failure is that peer's alone, and removing or blocking a
peer stops its running pull."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from node.p2p.records import sign_record
from tests.p2p.hostile import forger
from tests.p2p.hostile.conftest import LIMITS, MakePeer, profiles
from tests.p2p.hostile.fakepeer import RECORDS
from tests.p2p.hostile.test_hostile_peers import held
from tests.p2p.test_torrents import LiveNode, wait_for

PATIENT = dataclasses.replace(LIMITS, request_timeout_s=30.0, round_time_s=30.0)


async def test_a_stalled_peer_does_not_delay_the_others_in_its_round(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    idle.node.federation.limits = PATIENT
    stalled = await fake_peer("stall", profiles("stalled", 3))
    good_records = profiles("good", 20)
    good = await fake_peer("good", good_records)
    fed = idle.node.federation
    await fed.add_peer(stalled.url)
    await fed.add_peer(good.url)
    round_ = asyncio.create_task(fed.sync_all())
    await stalled.asked.wait()

    async def good_done() -> bool:
        return await held(idle, good_records)

    await wait_for(good_done, "the good peer's records while the other stalls")
    assert not round_.done()
    stalled.release.set()
    report = await asyncio.wait_for(round_, 10)
    assert report[good.did]["accepted"] == 20 and report[stalled.did]["accepted"] == 3


async def test_pushes_do_not_wait_behind_a_slow_pull(live: LiveNode, fake_peer: MakePeer) -> None:
    live.node.federation.limits = PATIENT
    stalled = await fake_peer("stall")
    good = await fake_peer("good")
    fed = live.node.federation
    await fed.add_peer(stalled.url)  # the background round starts and hangs on it
    await fed.add_peer(good.url)
    await stalled.asked.wait()
    news = sign_record(forger.key("local author"), "profile", {"name": "news"})
    await live.node.log.accept_verified([news])

    async def news_pushed() -> bool:  # the node's own records may be pushed first
        return news.raw in good.pushed

    await wait_for(news_pushed, "the news pushed while the stalled pull still hangs")
    assert stalled.requests[RECORDS] == 1 and not stalled.release.is_set()


@pytest.mark.parametrize("how", ["remove", "block"])
async def test_removing_or_blocking_a_peer_stops_its_running_pull(
    how: str, idle: LiveNode, fake_peer: MakePeer
) -> None:
    idle.node.federation.limits = PATIENT
    stalled = await fake_peer("stall")
    fed = idle.node.federation
    await fed.add_peer(stalled.url)
    round_ = asyncio.create_task(fed.sync_all())
    await stalled.asked.wait()
    did = stalled.did
    if how == "remove":
        resp = await idle.client.delete(f"/api/admin/peers/{did}", headers=idle.admin)
    else:
        resp = await idle.client.post(f"/api/admin/peers/{did}/block", headers=idle.admin)
    assert resp.status == 200
    report = await asyncio.wait_for(round_, 5)  # not the 30 s the page could take
    assert report == {did: {"error": "stopped: the peer was removed or blocked"}}
    assert not fed.rounds._turns


async def test_any_failure_with_one_peer_is_that_peers_alone(
    idle: LiveNode, fake_peer: MakePeer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not only protocol errors: anything raised while handling a peer's records (here a
    body rule that fails with an OSError, as a full disk would) fails that peer's turn,
    logged with the peer named and backed off, and the round goes on."""

    def disk_full(body: Mapping[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    idle.node.log.types.register_rule("x_disk_full", disk_full)
    signer = forger.key("disk author")
    bad = await fake_peer("good", [forger.forge(signer, "x_disk_full", {"n": 1})], label="bad")
    good_records = profiles("good", 10)
    good = await fake_peer("good", good_records)
    fed = idle.node.federation
    await fed.add_peer(bad.url)
    await fed.add_peer(good.url)
    with caplog.at_level(logging.WARNING, logger="civitas.federation"):
        report = await fed.sync_all()
    assert "OSError" in report[bad.did]["error"] and "No space" in report[bad.did]["error"]
    assert report[good.did]["accepted"] == 10 and await held(idle, good_records)
    assert (await fed.peer(bad.did)).failures == 1
    assert any(getattr(r, "peer", None) == bad.did for r in caplog.records)
