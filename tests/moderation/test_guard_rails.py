"""Guard rails: what must have no effect (and say why), and what is refused at the door."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.moderation import schemas
from node.moderation.service import Submitter
from node.p2p.keys import SigningKey
from node.p2p.records import sign_record
from tests.catalog.conftest import lora_file
from tests.moderation.conftest import login_headers, peer, start_node
from tests.p2p.test_torrents import LiveNode, wait_for


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async for a in start_node(tmp_path / "a", torrent=False):
        async for b in start_node(tmp_path / "b", torrent=False, notices_per_day=3):
            await peer(a, b)
            yield a, b


def notice_body(did: str, targets: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    body = {
        "claimant": {"name": "Ada", "did": did},
        "works": "my drawings",
        "targets": targets,
        "reason": "copyright",
        "action": "remove",
        "names": [],
        "good_faith": True,
        "accurate": True,
        "proof_urls": [],
    }
    return {**body, **changes}


async def published_on(live: LiveNode, tmp_path: Path, seed: int = 1) -> dict[str, Any]:
    try:
        user = await live.node.accounts.get_user("alice")
    except Exception:
        user = await live.node.accounts.add_user("alice", "correct horse battery")
    result = await live.node.catalog.publish_path(
        user.did, lora_file(tmp_path / f"m{seed}.safetensors", seed), {"name": f"Model {seed}"}
    )
    return result


async def outcome(live: LiveNode, notice_id: str, decision_id: str) -> dict[str, Any]:
    async def settled() -> Any:
        resp = await live.client.get(f"/api/takedowns/{notice_id}", headers=live.admin)
        if resp.status != 200:
            return None
        found = [d for d in (await resp.json())["notice"]["decisions"] if d["id"] == decision_id]
        return found[0] if found and found[0]["outcome"] != "pending" else None

    return await wait_for(settled, "the decision's outcome")  # type: ignore[no-any-return]


async def test_a_notice_signed_by_another_key_than_its_claimants_is_refused(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, _ = pair
    someone, claimant = SigningKey.generate(), SigningKey.generate()
    target = [{"kind": "file", "value": b"\x01" * 32}]
    forged = sign_record(someone, schemas.NOTICE, notice_body(claimant.did, target))
    resp = await a.client.post(
        "/api/takedowns", data=forged.raw, headers={"Content-Type": "application/msgpack"}
    )
    assert resp.status == 403
    assert "signed by" in (await resp.json())["message"]
    audit = await (await a.client.get("/api/moderation/audit", headers=a.admin)).json()
    assert audit["entries"][0]["action"] == "notice_refused"
    assert await a.node.log.get(forged.id) is None
    # Signed by the claimant's own key (offline, e.g. `civitas takedown sign`): accepted.
    good = sign_record(claimant, schemas.NOTICE, notice_body(claimant.did, target))
    resp = await a.client.post(
        "/api/takedowns?contact=ada%40example.org",
        data=good.raw,
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status == 201, await resp.text()


async def test_decisions_without_authority_have_no_effect_and_say_why(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b = pair
    published = await published_on(b, tmp_path)
    root = bytes.fromhex(published["model"]["civitas"]["rootId"])
    claimant = SigningKey.generate()
    notice = sign_record(
        claimant, schemas.NOTICE, notice_body(claimant.did, [{"kind": "model", "value": root}])
    )
    await b.node.moderation.submit_notice(notice, Submitter())

    def decision(key: SigningKey, targets: list[dict[str, Any]]) -> Any:
        return sign_record(
            key,
            schemas.DECISION,
            {
                "notice": notice.id,
                "verdict": "honor",
                "targets": targets,
                "reason": "copyright",
                "action": "remove",
                "moderator": "mallory",
            },
        )

    # A decision signed by a key that is no node's (say, a user's key).
    rogue = decision(SigningKey.generate(), [{"kind": "model", "value": root}])
    # A decision from a node B is not subscribed to (A, a peer).
    unsubscribed = decision(a.node.node_key, [{"kind": "model", "value": root}])
    await b.node.log.accept_verified([rogue, unsubscribed], source=a.node.node_key.did)
    first = await outcome(b, notice.id.hex(), rogue.id.hex())
    assert first["outcome"] == "no_effect"
    assert "not a node this node trusts" in first["outcome_reason"]
    second = await outcome(b, notice.id.hex(), unsubscribed.id.hex())
    assert second["outcome"] == "no_effect"
    assert "not subscribed" in second["outcome_reason"]
    assert len((await (await b.client.get("/api/v1/models")).json())["items"]) == 1

    # Subscribed, but the decision targets something its notice did not name.
    resp = await b.client.post(
        "/api/moderation/subscriptions",
        json={"node": a.node.node_key.did, "policy": "auto"},
        headers=b.admin,
    )
    assert resp.status == 201
    other = await published_on(b, tmp_path, seed=2)
    other_root = bytes.fromhex(other["model"]["civitas"]["rootId"])
    overreach = decision(a.node.node_key, [{"kind": "model", "value": other_root}])
    await b.node.log.accept_verified([overreach], source=a.node.node_key.did)
    third = await outcome(b, notice.id.hex(), overreach.id.hex())
    assert third["outcome"] == "no_effect"
    assert "names nothing its notice names" in third["outcome_reason"]
    assert len((await (await b.client.get("/api/v1/models")).json())["items"]) == 2

    # A decision that names the notice's target, from a subscribed `auto` node: the
    # content was first published on B, so it goes to review, not removal.
    valid = decision(a.node.node_key, [{"kind": "model", "value": root}])
    await b.node.log.accept_verified([valid], source=a.node.node_key.did)
    fourth = await outcome(b, notice.id.hex(), valid.id.hex())
    assert fourth["outcome"] == "queued"
    assert "first published on this node" in fourth["outcome_reason"]
    queue = await (await b.client.get("/api/moderation/queue", headers=b.admin)).json()
    assert [i["ref"] for i in queue["items"] if i["kind"] == "decision"] == [valid.id.hex()]
    assert len((await (await b.client.get("/api/v1/models")).json())["items"]) == 2
    # The moderator honors it on review: now it applies.
    mod = await login_headers(b, "mona", "moderator")
    resp = await b.client.post(
        f"/api/moderation/decisions/{valid.id.hex()}/review", json={"honor": True}, headers=mod
    )
    assert resp.status == 200, await resp.text()
    assert [m["name"] for m in (await (await b.client.get("/api/v1/models")).json())["items"]] == [
        "Model 2"
    ]
    audit = await (await b.client.get("/api/moderation/audit", headers=b.admin)).json()
    assert {"decision_no_effect", "decision_queued", "decision_applied"} <= {
        e["action"] for e in audit["entries"]
    }

    # Through the API, a moderator cannot decide on targets the notice does not name.
    resp = await b.client.post(
        f"/api/takedowns/{notice.id.hex()}/decision",
        json={"verdict": "honor", "targets": [f"model:{other_root.hex()}"]},
        headers=mod,
    )
    assert resp.status == 400
    assert "only target what its notice names" in (await resp.json())["message"]
    member = await login_headers(b, "mike")
    resp = await b.client.post(
        f"/api/takedowns/{notice.id.hex()}/decision", json={"verdict": "honor"}, headers=member
    )
    assert resp.status == 403


async def test_notices_are_rate_limited_per_key_and_address(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    _, b = pair  # B takes 3 notices a day from one key, account or address
    key = SigningKey.generate()
    for i in range(3):
        record = sign_record(
            key,
            schemas.NOTICE,
            notice_body(key.did, [{"kind": "file", "value": bytes([i]) * 32}]),
        )
        resp = await b.client.post(
            "/api/takedowns", data=record.raw, headers={"Content-Type": "application/msgpack"}
        )
        assert resp.status == 201, await resp.text()
    record = sign_record(
        key, schemas.NOTICE, notice_body(key.did, [{"kind": "file", "value": b"\x09" * 32}])
    )
    resp = await b.client.post(
        "/api/takedowns", data=record.raw, headers={"Content-Type": "application/msgpack"}
    )
    assert resp.status == 429
    assert "try again tomorrow" in (await resp.json())["message"]
    # Another key from the same address is also over the address's share.
    other = SigningKey.generate()
    record = sign_record(
        other, schemas.NOTICE, notice_body(other.did, [{"kind": "file", "value": b"\x0a" * 32}])
    )
    resp = await b.client.post(
        "/api/takedowns", data=record.raw, headers={"Content-Type": "application/msgpack"}
    )
    assert resp.status == 429
    assert "address" in (await resp.json())["message"]


async def test_bad_notices_get_clear_errors(pair: tuple[LiveNode, LiveNode]) -> None:
    a, _ = pair
    headers = await login_headers(a, "ada")
    good = {
        "claimant_name": "Ada",
        "works": "my drawings",
        "targets": ["file:" + "ab" * 32],
        "reason": "copyright",
        "good_faith": True,
        "accurate": True,
    }
    cases = [
        ({**good, "targets": []}, "targets"),
        ({**good, "targets": ["file:xyz"]}, "64 hexadecimal"),
        ({**good, "reason": "dislike"}, "reason"),
        ({**good, "accurate": False}, "accurate"),
        ({**good, "action": "remove_name"}, "names"),
        ({**good, "proof_urls": ["ftp://x"]}, "proof_urls"),
    ]
    for body, words in cases:
        resp = await a.client.post("/api/takedowns", json=body, headers=headers)
        assert resp.status == 400, body
        assert words in (await resp.json())["message"]
    resp = await a.client.post("/api/takedowns", json=good)
    assert resp.status == 401
    resp = await a.client.post(
        "/api/takedowns",
        data=msgpack.packb({"v": 1}),
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status == 400
    resp = await a.client.get("/api/takedowns/" + "00" * 32)
    assert resp.status == 404


async def test_proof_url_check_finds_the_claimants_did(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, _ = pair
    key = SigningKey.generate()

    async def profile(request: web.Request) -> web.Response:
        return web.Response(text=f"<p>Ada's portfolio. Civitas: {key.did}</p>")

    async def other(request: web.Request) -> web.Response:
        return web.Response(text="<p>nothing here</p>")

    app = web.Application()
    app.router.add_get("/ada", profile)
    app.router.add_get("/other", other)
    async with TestServer(app, host="127.0.0.1") as site:
        urls = [str(site.make_url("/ada")), str(site.make_url("/other"))]
        record = sign_record(
            key,
            schemas.NOTICE,
            notice_body(key.did, [{"kind": "file", "value": b"\x05" * 32}], proof_urls=urls),
        )
        resp = await a.client.post(
            "/api/takedowns", data=record.raw, headers={"Content-Type": "application/msgpack"}
        )
        assert resp.status == 201

        async def checked() -> Any:
            resp = await a.client.get(f"/api/takedowns/{record.id.hex()}", headers=a.admin)
            return (await resp.json())["notice"]["proof"]

        proof = await wait_for(checked, "the proof URL check")
        assert [p["verified"] for p in proof] == [True, False]


async def test_notices_relayed_by_one_peer_past_the_daily_cap_are_held(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, b = pair  # B takes 3 notices a day from one peer node
    notices = []
    for i in range(5):
        key = SigningKey.generate()
        notices.append(
            sign_record(
                key,
                schemas.NOTICE,
                notice_body(key.did, [{"kind": "file", "value": bytes([40 + i]) * 32}]),
            )
        )
    await b.node.log.accept_verified(notices, source=a.node.node_key.did)
    states = [(await b.node.log.get(n.id)).state for n in notices]  # type: ignore[union-attr]
    assert states == ["visible"] * 3 + ["suppressed"] * 2


async def test_reports_reach_the_queue(pair: tuple[LiveNode, LiveNode]) -> None:
    a, _ = pair
    target = "model:" + "cd" * 32
    resp = await a.client.post(
        "/api/reports", json={"target": target, "reason": "likeness", "comment": "that's me"}
    )
    assert resp.status == 201, await resp.text()
    resp = await a.client.post("/api/reports", json={"target": target, "reason": "meh"})
    assert resp.status == 400
    resp = await a.client.post("/api/reports", json={"target": "model:zz", "reason": "spam"})
    assert resp.status == 400
    queue = await (await a.client.get("/api/moderation/queue", headers=a.admin)).json()
    (item,) = [i for i in queue["items"] if i["kind"] == "report"]
    assert item["ref"] == "cd" * 32 and "that's me" in item["detail"]
    resp = await a.client.get("/api/moderation/queue")
    assert resp.status == 401
    resp = await a.client.post(
        f"/api/moderation/queue/{item['id']}/close", json={"note": "not her"}, headers=a.admin
    )
    assert resp.status == 200
    queue = await (await a.client.get("/api/moderation/queue", headers=a.admin)).json()
    assert not [i for i in queue["items"] if i["kind"] == "report"]
    resp = await a.client.post(f"/api/moderation/queue/{item['id']}/close", headers=a.admin)
    assert resp.status == 409
