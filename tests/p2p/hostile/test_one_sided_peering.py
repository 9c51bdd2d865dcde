"""One-sided peering: this node peers with one that never added it back. Its pushes
are refused (403); that is reported and retried with its own backoff, and the pulls
from that peer stay healthy."""

from __future__ import annotations

from node.cli.peers import describe_peer
from node.p2p.records import now_ms, verify_record
from tests.p2p.hostile import forger
from tests.p2p.hostile.conftest import MakePeer, profiles
from tests.p2p.hostile.fakepeer import INBOX
from tests.p2p.hostile.test_hostile_peers import held
from tests.p2p.test_torrents import LiveNode, wait_for


async def test_a_refused_push_does_not_back_off_the_pulls(
    idle: LiveNode, fake_peer: MakePeer
) -> None:
    one_sided = await fake_peer("good", profiles("one-sided", 3), label="one-sided")
    one_sided.refuse_pushes = True  # we peer with it; it never added us
    fed = idle.node.federation
    await fed.add_peer(one_sided.url)
    local = forger.forge(forger.key("local author"), "profile", {"name": "local news"})
    await idle.node.log.accept_verified([verify_record(local)])  # news to push

    report = await fed.sync_all()

    mine = report[one_sided.did]
    assert mine["accepted"] == 3 and "error" not in mine, mine
    assert "403" in mine["push_error"]
    peer = await fed.peer(one_sided.did)
    assert peer.failures == 0 and peer.next_try is None and peer.last_error is None
    assert peer.push_error is not None and "403" in peer.push_error
    assert peer.push_next_try is not None and peer.push_next_try > now_ms()
    listed = await (await idle.client.get("/api/admin/peers", headers=idle.admin)).json()
    (shown,) = listed["peers"]
    assert shown["push_error"] == peer.push_error and shown["last_error"] is None
    assert "pushes failing" in describe_peer(shown)

    more = profiles("one-sided later", 2)
    one_sided.records += more
    again = await fed.sync_all()  # the pull goes on; the push waits for its own backoff
    assert again[one_sided.did]["accepted"] == 2 and await held(idle, more)
    assert one_sided.requests[INBOX] == 1
    assert again[one_sided.did]["push_error"] == peer.push_error


async def test_a_push_refused_by_the_push_loop_does_not_back_off_the_pulls(
    live: LiveNode, fake_peer: MakePeer
) -> None:
    one_sided = await fake_peer("good", profiles("one-sided", 3), label="one-sided")
    one_sided.refuse_pushes = True
    fed = live.node.federation
    await fed.add_peer(one_sided.url)

    async def refused() -> bool:
        return (await fed.peer(one_sided.did)).push_error is not None

    news = verify_record(forger.forge(forger.key("local author"), "profile", {"name": "news"}))
    await live.node.log.accept_verified([news])
    await wait_for(refused, "the push loop's refused push")
    peer = await fed.peer(one_sided.did)
    assert peer.failures == 0 and peer.next_try is None
    report = await fed.sync_all()  # not skipped as backing off
    assert "skipped" not in report[one_sided.did] and "error" not in report[one_sided.did]
