"""Federation between live nodes: peering, push, pull, epochs, signed requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from node.errors import Unauthorized
from node.p2p.federation import wire
from node.p2p.federation.signing import (
    NODE_HEADER,
    RequestVerifier,
    sign_request,
    signed_string,
)
from node.p2p.keys import SigningKey
from node.p2p.log import set_meta
from node.p2p.records import sign_record, verify_record
from node.p2p.tables import peers
from tests.catalog.conftest import PASSWORD, lora_file, png_bytes
from tests.p2p.test_torrents import LiveNode, start_node, wait_for

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "requests.json").read_text())
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z: records are not older than the protocol


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_request_signature_known_answers(vector: dict[str, Any]) -> None:
    key = SigningKey.from_seed(bytes.fromhex(vector["seed"]))
    body = bytes.fromhex(vector["body"])
    text = signed_string(
        vector["method"], vector["path"], body, vector["time"], vector["destination"]
    )
    assert text.decode() == vector["signed_string"]
    headers = sign_request(
        key, vector["method"], vector["path"], body, vector["destination"], vector["time"]
    )
    assert headers == vector["headers"]
    verifier = RequestVerifier(vector["destination"])
    assert (
        verifier.verify(vector["method"], vector["path"], body, headers, now=vector["time"])
        == key.did
    )


def test_request_verification_refuses_what_it_must() -> None:
    key = SigningKey.from_seed(b"n" * 32)
    me = SigningKey.from_seed(b"m" * 32).did
    now = 1_800_000_000_000
    headers = sign_request(key, "POST", "/federation/v1/inbox", b"body", me, now)

    def check(**changes: Any) -> None:
        args = {
            "method": "POST",
            "path": "/federation/v1/inbox",
            "body": b"body",
            "headers": headers,
            "now": now,
            **changes,
        }
        RequestVerifier(me).verify(**args)

    check()
    with pytest.raises(Unauthorized, match="5 minutes"):
        check(now=now + 5 * 60 * 1000 + 1)
    with pytest.raises(Unauthorized, match="signature"):
        check(body=b"other body")
    with pytest.raises(Unauthorized, match="signature"):
        check(path="/federation/v1/inbox?x=1")
    with pytest.raises(Unauthorized, match="signature"):
        RequestVerifier(SigningKey.from_seed(b"x" * 32).did).verify(
            "POST", "/federation/v1/inbox", b"body", headers, now=now
        )  # meant for another node
    with pytest.raises(Unauthorized, match="headers"):
        check(headers={k: v for k, v in headers.items() if k != NODE_HEADER})
    verifier = RequestVerifier(me)
    verifier.verify("POST", "/federation/v1/inbox", b"body", headers, now=now)
    with pytest.raises(Unauthorized, match="replay"):
        verifier.verify("POST", "/federation/v1/inbox", b"body", headers, now=now)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            for one, other in ((a, b), (b, a)):
                resp = await one.client.post(
                    "/api/admin/peers", json={"url": other.url}, headers=one.admin
                )
                assert resp.status == 201, await resp.text()
            yield a, b


async def models_on(live: LiveNode) -> list[dict[str, Any]]:
    return (await (await live.client.get("/api/v1/models")).json())["items"]  # type: ignore[no-any-return]


async def test_a_model_published_on_one_node_is_found_on_its_peer(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b = pair
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    preview = tmp_path / "p.png"
    preview.write_bytes(png_bytes(2))
    published = await a.node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors", 4), {"name": "Fox"}, previews=[preview]
    )

    async def arrived() -> Any:  # pushed to B's inbox, no waiting for a pull round
        return await models_on(b)

    (model,) = await wait_for(arrived, "the model on B")
    original = published["model"]
    assert original["civitas"]["receivedFrom"] is None  # published on A
    assert model["civitas"]["receivedFrom"] == a.node.node_key.did
    assert model["civitas"]["signatureVerified"] is True
    assert model["id"] == original["id"]  # the same integer id on every node
    assert model["name"] == "Fox" and model["creator"]["username"] == "alice@test-node"
    assert original["creator"]["username"] == "alice"  # local names are A's own
    assert model["civitas"]["rootId"] == original["civitas"]["rootId"]
    sha = original["modelVersions"][0]["files"][0]["hashes"]["SHA256"]
    resp = await b.client.get(f"/api/v1/model-versions/by-hash/{sha}")
    assert resp.status == 200
    found = await resp.json()
    version = original["modelVersions"][0]
    assert (found["id"], found["modelId"]) == (version["id"], original["id"])
    assert found["model"]["name"] == "Fox"
    assert [f["hashes"]["SHA256"] for f in found["files"]] == [sha]

    async def preview_fetched() -> Any:
        image = (await models_on(b))[0]["modelVersions"][0]["images"][0]
        return await b.node.store.local_path(image["civitas"]["sha256"])

    assert (
        await wait_for(preview_fetched, "the preview on B")
    ).read_bytes() == preview.read_bytes()

    # An edit on A reaches B too.
    await a.node.catalog.edit_model(alice.did, original["id"], {"name": "Fox, renamed"})

    async def renamed() -> Any:
        return [m for m in await models_on(b) if m["name"] == "Fox, renamed"]

    await wait_for(renamed, "the edit on B")

    # A withdrawal (a tombstone) takes effect on B as well.
    await a.node.catalog.withdraw_model(alice.did, original["id"], "withdrawn")

    async def gone() -> Any:
        return not await models_on(b)

    await wait_for(gone, "the withdrawal on B")
    assert (await b.client.get(f"/api/v1/models/{original['id']}")).status == 404


async def test_pull_pages_through_a_long_log(pair: tuple[LiveNode, LiveNode]) -> None:
    a, b = pair
    for live in pair:
        await live.node.federation.stop()  # no pushes: B must pull
    key = SigningKey.from_seed(b"p" * 32)
    batch = [
        sign_record(key, "profile", {"name": f"n{i}"}, created=T0 + 1000 + i) for i in range(450)
    ]
    await a.node.log.accept_verified(batch)
    peer = await b.node.federation.peer(a.node.node_key.did)
    assert await b.node.federation.pull(peer) >= 450  # and A's node announcement
    assert all([await b.node.log.get(r.id) for r in batch])
    peer = await b.node.federation.peer(a.node.node_key.did)
    assert peer.cursor == await a.node.log.high_water()
    assert await b.node.federation.pull(peer) == 0  # nothing new


async def test_a_restored_peer_is_read_again_from_the_start(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, b = pair
    key = SigningKey.from_seed(b"r" * 32)
    await a.node.log.accept_verified([sign_record(key, "profile", {"name": "one"}, created=T0 + 1)])
    await b.node.federation.sync_all()
    # A is restored from a backup: a new epoch, and its log lost what came after it.
    async with a.node.db.write() as conn:
        await set_meta(conn, "log_epoch", "restored-epoch")
    late = sign_record(key, "profile", {"name": "two"}, created=T0 + 2)
    await a.node.log.accept_verified([late])
    async with b.node.db.write() as conn:  # B's cursor is past where A's log now ends
        await conn.execute(peers.update().values(cursor=10_000))
    await b.node.federation.sync_all()
    assert await b.node.log.get(late.id) is not None
    peer = await b.node.federation.peer(a.node.node_key.did)
    assert peer.epoch == "restored-epoch"


async def test_the_inbox_takes_only_signed_batches_from_peers(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, b = pair
    key = SigningKey.from_seed(b"i" * 32)
    good = sign_record(key, "profile", {"name": "good"})
    tampered = bytearray(sign_record(key, "profile", {"name": "bad"}).raw)
    tampered[tampered.index(b"bad")] = ord("B")  # altered after signing
    body = wire.encode_batch([good.raw, bytes(tampered)])

    resp = await b.client.post("/federation/v1/inbox", data=body)
    assert resp.status == 401  # unsigned

    stranger = SigningKey.from_seed(b"s" * 32)
    headers = sign_request(stranger, "POST", "/federation/v1/inbox", body, b.node.node_key.did)
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 403  # signed, but not by a peer

    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1, "rejected": ["record_bad_signature"]}
    assert await b.node.log.get(good.id) is not None

    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 401  # the same signed request again: a replay


async def test_records_are_served_by_id_and_peers_are_managed(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, b = pair
    key = SigningKey.from_seed(b"q" * 32)
    record = sign_record(key, "profile", {"name": "served"})
    await a.node.log.accept_verified([record])
    resp = await a.client.get(f"/federation/v1/records/{record.id.hex()}")
    assert resp.status == 200 and await resp.read() == record.raw
    await a.node.log.set_state(record.id, "suppressed")
    assert (await a.client.get(f"/federation/v1/records/{record.id.hex()}")).status == 410
    page = wire.decode_page(await (await a.client.get("/federation/v1/records?after=0")).read())
    (entry,) = [e for e in page.entries if e.id == record.id]
    assert entry.state == "suppressed" and entry.raw is None  # ids and states, not bodies

    listed = await (await b.client.get("/api/admin/peers", headers=b.admin)).json()
    assert [p["did"] for p in listed["peers"]] == [a.node.node_key.did]
    resp = await b.client.post("/api/admin/peers", json={"url": a.url}, headers=b.admin)
    assert resp.status == 409
    resp = await b.client.post(
        "/api/admin/peers", json={"url": "http://127.0.0.1:9/x"}, headers=b.admin
    )
    assert resp.status == 502
    did = a.node.node_key.did
    assert (await b.client.delete(f"/api/admin/peers/{did}", headers=b.admin)).status == 200
    async with b.node.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(peers)) == 0


async def test_records_are_relayed_along_a_chain_of_peers(tmp_path: Path) -> None:
    """A — B — C: C never peers with A, yet finds A's model, signed by A's author."""
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            async for c in start_node(tmp_path / "c", enabled=False):
                for one, other in ((a, b), (b, a), (b, c), (c, b)):
                    await one.node.federation.add_peer(other.url)
                alice = await a.node.accounts.add_user("alice", PASSWORD)
                published = await a.node.catalog.publish_path(
                    alice.did, lora_file(tmp_path / "relay.safetensors", 8), {"name": "Relayed"}
                )

                async def on_c(c: LiveNode = c) -> Any:
                    return await models_on(c)

                (model,) = await wait_for(on_c, "the model on C")
                assert model["id"] == published["model"]["id"]
                assert model["civitas"]["author"] == alice.did


async def test_blocked_and_failing_peers(pair: tuple[LiveNode, LiveNode]) -> None:
    a, b = pair
    did_a = a.node.node_key.did
    key = SigningKey.from_seed(b"k" * 32)
    await a.node.log.accept_verified([sign_record(key, "profile", {"name": "x"}, created=T0 + 1)])
    listed = await (await b.client.get("/api/admin/peers", headers=b.admin)).json()
    assert set(listed["peers"][0]) >= {"behind", "failing_since", "blocked"}

    # Blocked: its pushes are refused and it is not pulled from.
    resp = await b.client.post(f"/api/admin/peers/{did_a}/block", headers=b.admin)
    assert resp.status == 200 and (await resp.json())["peer"]["blocked"] is True
    body = wire.encode_batch([sign_record(key, "profile", {"name": "y"}, created=T0 + 2).raw])
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 403 and "blocked" in (await resp.json())["message"]
    assert did_a not in await b.node.federation.sync_all()
    await b.client.post(f"/api/admin/peers/{did_a}/unblock", headers=b.admin)

    # Failing: errors back off exponentially, and the failure is shown.
    await a.client.close()  # A's server goes away
    first = await b.node.federation.sync_all()
    assert "error" in first[did_a]
    peer = await b.node.federation.peer(did_a)
    assert peer.failures == 1 and peer.failing_since is not None
    assert peer.next_try is not None and peer.next_try > peer.failing_since
    assert await b.node.federation.sync_all() == {did_a: {"skipped": "backing off after errors"}}
    forced = await b.node.federation.sync_all(force=True)
    assert "error" in forced[did_a]
    assert (await b.node.federation.peer(did_a)).failures == 2


async def test_a_stopped_node_catches_up_and_a_late_node_backfills(tmp_path: Path) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            await a.node.federation.add_peer(b.url)
            await b.node.federation.add_peer(a.url)
            await b.node.federation.stop()  # B is down: it hears nothing pushed meanwhile
            key = SigningKey.from_seed(b"c" * 32)
            missed = [
                sign_record(key, "profile", {"name": f"m{i}"}, created=T0 + i) for i in range(30)
            ]
            await a.node.log.accept_verified(missed)
            await b.node.federation.start()  # back up: its first round pulls what it missed

            async def caught_up(b: LiveNode = b, missed: list[Any] = missed) -> Any:
                return all([await b.node.log.get(r.id) for r in missed])

            await wait_for(caught_up, "B catching up")
            async for late in start_node(tmp_path / "late", enabled=False):
                await late.node.federation.add_peer(b.url)  # joins late, knows only B

                async def backfilled(late: LiveNode = late, a: LiveNode = a) -> Any:
                    return await late.node.log.count() >= await a.node.log.count()

                await wait_for(backfilled, "the late node backfilling")


async def test_a_peer_pushing_too_much_is_slowed_down(pair: tuple[LiveNode, LiveNode]) -> None:
    a, b = pair
    b.node.federation.max_pushed_per_minute = 3
    key = SigningKey.from_seed(b"f" * 32)
    flood = [sign_record(key, "profile", {"name": f"f{i}"}, created=T0 + i).raw for i in range(4)]
    body = wire.encode_batch(flood)
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 429 and (await resp.json())["error"] == "too_many_records"
    for raw in flood:  # nothing from the refused batch was stored
        assert await b.node.log.get(verify_record(raw).id) is None
    assert (await b.client.get("/healthz")).status == 200  # and the node keeps serving


async def test_nodes_announce_themselves_and_may_auto_connect(tmp_path: Path) -> None:
    """C peers only with B, hears of A through B, and (auto_connect) peers with A."""
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            async for c in start_node(tmp_path / "c", enabled=False):
                c.node.federation.auto_connect = True
                for one, other in ((a, b), (b, a), (b, c), (c, b)):
                    await one.node.federation.add_peer(other.url)

                async def c_knows_a(c: LiveNode = c, a: LiveNode = a) -> Any:
                    listed = await (await c.client.get("/api/admin/nodes", headers=c.admin)).json()
                    return [n for n in listed["nodes"] if n["did"] == a.node.node_key.did]

                (announced,) = await wait_for(c_knows_a, "A's announcement on C")
                assert announced["url"] == a.url and announced["software"].startswith("civitas/")
                # A announced a loopback address: an operator may add it, auto-connect may not.
                await c.node.federation.sync_all(force=True)
                assert a.node.node_key.did not in {
                    p.did for p in await c.node.federation.list_peers()
                }
                c.node.federation.auto_connect_private = True  # a LAN federation
                await c.node.federation.sync_all(force=True)
                peer = await c.node.federation.peer(a.node.node_key.did)  # connected itself
                assert peer.explicit is False
                assert peer.url == a.url


async def test_a_blocked_author_is_refused_and_suppressed_until_unblocked(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b = pair
    mallory = await a.node.accounts.add_user("mallory", PASSWORD)
    published = await a.node.catalog.publish_path(
        mallory.did, lora_file(tmp_path / "spam.safetensors", 6), {"name": "Spam"}
    )
    await wait_for(lambda: models_on(b), "the model on B")

    resp = await b.client.post(
        f"/api/admin/authors/{mallory.did}/block", json={"reason": "spam"}, headers=b.admin
    )
    assert resp.status == 200 and (await resp.json())["suppressed"] >= 3
    assert await models_on(b) == []  # hidden on B
    root = bytes.fromhex(published["model"]["civitas"]["rootId"])
    entry = await b.node.log.get(root)
    assert entry is not None and entry.state == "suppressed"  # kept, not served or relayed

    # New records by that key: refused from peers (the rest of the batch still counts).
    key = SigningKey.from_seed(b"o" * 32)
    spam = sign_record(
        mallory_key := a.node.home.author_key(mallory.did), "profile", {"name": "again"}
    )
    fine = sign_record(key, "profile", {"name": "fine"})
    assert mallory_key.did == mallory.did
    body = wire.encode_batch([spam.raw, fine.raw])
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert await resp.json() == {"accepted": 1, "rejected": ["author_blocked"]}
    listed = await (await b.client.get("/api/admin/authors/blocked", headers=b.admin)).json()
    assert [x["did"] for x in listed["authors"]] == [mallory.did]

    resp = await b.client.post(f"/api/admin/authors/{mallory.did}/unblock", headers=b.admin)
    assert resp.status == 200
    assert [m["name"] for m in await models_on(b)] == ["Spam"]


async def test_a_blocked_author_cannot_publish_on_the_node(node: Any, tmp_path: Path) -> None:
    from node.errors import AuthorBlocked

    user = await node.accounts.add_user("blocked", PASSWORD)
    await node.log.block_author(user.did, "test")
    with pytest.raises(AuthorBlocked):
        await node.catalog.publish_path(
            user.did, lora_file(tmp_path / "x.safetensors", 7), {"name": "Nope"}
        )
    assert not list(node.store.root.glob("*/*/*"))  # nothing was stored


async def test_a_per_author_quota_limits_what_peers_deliver(
    pair: tuple[LiveNode, LiveNode],
) -> None:
    a, b = pair
    b.node.federation.author_records_per_day = 2
    busy = SigningKey.from_seed(b"q" * 32)
    other = SigningKey.from_seed(b"w" * 32)
    batch = [sign_record(busy, "profile", {"name": f"b{i}"}, created=T0 + i) for i in range(3)]
    batch.append(sign_record(other, "profile", {"name": "other"}, created=T0 + 1))
    body = wire.encode_batch([r.raw for r in batch])
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    resp = await b.client.post("/federation/v1/inbox", data=body, headers=headers)
    assert await resp.json() == {"accepted": 3, "rejected": ["author_quota"]}
    assert await b.node.log.get(batch[2].id) is None
    assert await b.node.log.get(batch[3].id) is not None  # other authors are not affected


async def test_magnets_name_the_peers_bittorrent_addresses(tmp_path: Path) -> None:
    """B's magnet for A's file (which B does not hold) names A's BitTorrent address."""
    from node.catalog.fetch import parse_magnet
    from tests.moderation.conftest import peer
    from tests.moderation.conftest import start_node as start_full_node

    async for a in start_full_node(tmp_path / "a"):
        async for b in start_full_node(tmp_path / "b"):
            info = await (await a.client.get("/.well-known/civitas")).json()
            assert a.node.engine is not None
            assert info["bittorrent"] == f"127.0.0.1:{a.node.engine.listen_port}"
            await peer(a, b)
            alice = await a.node.accounts.add_user("alice", PASSWORD)
            await a.node.catalog.publish_path(
                alice.did, lora_file(tmp_path / "m.safetensors", 3), {"name": "Fox"}
            )
            await wait_for(lambda b=b: models_on(b), "the model on B")
            await b.node.federation.sync_all(force=True)
            (model,) = await models_on(b)
            magnet = model["modelVersions"][0]["files"][0]["civitas"]["magnet"]
            _, _, _, hints = parse_magnet(magnet)
            assert ("127.0.0.1", a.node.engine.listen_port) in hints
