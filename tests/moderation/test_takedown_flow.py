"""Takedowns across three live nodes with real torrents: an artist's notice on C about a
model published on A and fetched by B; A's moderator honors it; B (subscribed ``auto``)
stops seeding, deletes and hides; C (``review``) queues it; re-publishing is refused; a
near copy of a listed image is held; a counter-notice and a reversal restore it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.catalog.images import inspect_image
from node.errors import NotFound
from tests.catalog.conftest import lora_file
from tests.catalog.test_publish import snapshot
from tests.moderation.conftest import login_headers, near_copy, peer, picture, start_node
from tests.p2p.test_torrents import LiveNode, wait_for


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode, LiveNode]]:
    async for a in start_node(tmp_path / "a"):
        async for b in start_node(tmp_path / "b", grace_hours=0):
            async for c in start_node(tmp_path / "c"):
                await peer(a, b)
                await peer(b, c)
                yield a, b, c


async def visible_models(live: LiveNode) -> list[dict[str, Any]]:
    return (await (await live.client.get("/api/v1/models")).json())["items"]


async def visible_images(live: LiveNode) -> list[dict[str, Any]]:
    return (await (await live.client.get("/api/v1/images")).json())["items"]


async def test_notice_decision_subscriptions_enforcement_and_reversal(
    trio: tuple[LiveNode, LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b, c = trio
    alice = await a.node.accounts.add_user("alice", "correct horse battery")
    preview_png = picture(3)
    assert (inspect_image(preview_png).pdq_quality or 0) >= 50
    preview = tmp_path / "preview.png"
    preview.write_bytes(preview_png)
    model_file = lora_file(tmp_path / "style.safetensors", 7)
    published = await a.node.catalog.publish_path(
        alice.did, model_file, {"name": "Her Style"}, previews=[preview]
    )
    root = published["model"]["civitas"]["rootId"]
    sha = published["sha256"]
    image_id = published["model"]["modelVersions"][0]["images"][0]["civitas"]["recordId"]
    assert await wait_for(lambda: visible_models(c), "the model on C")

    # B fetches the file by torrent and seeds it.
    await b.node.catalog.fetcher.fetch(sha)

    async def b_has_file() -> Any:
        return await b.node.store.local_path(sha)

    b_path = await wait_for(b_has_file, "B's copy of the file")
    infohash = published["model"]["modelVersions"][0]["files"][0]["civitas"]["infohash"]
    assert b.node.engine is not None and infohash in b.node.engine.handles

    # Subscriptions: B honors A's decisions at once, C reviews them.
    resp = await b.client.post(
        "/api/moderation/subscriptions",
        json={"node": a.url, "policy": "auto"},
        headers=b.admin,
    )
    assert resp.status == 201, await resp.text()
    resp = await c.client.post(
        "/api/moderation/subscriptions",
        json={"node": a.node.node_key.did, "policy": "review"},
        headers=c.admin,
    )
    assert resp.status == 201, await resp.text()

    # The artist files a notice on C, signed with their account's key.
    artist = await login_headers(c, "artist")
    resp = await c.client.post(
        "/api/takedowns",
        json={
            "claimant_name": "Ada Artist",
            "contact": "ada@example.org",
            "works": "My paintings, used to train this style model",
            "targets": [f"model:{root}", f"file:{sha}", f"image:{image_id}"],
            "reason": "copyright",
            "action": "remove",
            "good_faith": True,
            "accurate": True,
        },
        headers=artist,
    )
    assert resp.status == 201, await resp.text()
    notice = (await resp.json())["notice"]
    assert notice["status"] == "pending"
    assert "contact" not in notice  # contact details are for moderators only

    # A notice alone removes nothing anywhere.
    async def notice_on_a() -> Any:
        resp = await a.client.get(f"/api/takedowns/{notice['id']}", headers=a.admin)
        return (await resp.json())["notice"] if resp.status == 200 else None

    on_a = await wait_for(notice_on_a, "the notice relayed to A")
    assert not on_a["contact"]  # kept only where it was filed:
    on_c = await (await c.client.get(f"/api/takedowns/{notice['id']}", headers=c.admin)).json()
    assert on_c["notice"]["contact"] == "ada@example.org"
    assert len(await visible_models(a)) == 1 and len(await visible_models(b)) == 1

    # A's moderator honors it: a decision signed by A's node key.
    mod = await login_headers(a, "mona", "moderator")
    resp = await a.client.post(
        f"/api/takedowns/{notice['id']}/decision",
        json={"verdict": "honor", "note": "the artist's portfolio matches"},
        headers=mod,
    )
    assert resp.status == 201, await resp.text()
    decided = (await resp.json())["notice"]
    (decision,) = decided["decisions"]
    assert decision["node"] == a.node.node_key.did and decision["moderator"] == "mona"
    assert decision["outcome"] == "applied"
    assert await visible_models(a) == []  # own decisions always apply

    # B (auto): hidden, not seeding, file deleted — within seconds.
    engine = b.node.engine

    async def b_enforced() -> Any:
        gone = await visible_models(b) == [] and await visible_images(b) == []
        return gone and infohash not in engine.handles and not b_path.exists()

    await wait_for(b_enforced, "B to stop seeding, delete and hide")
    assert await b.node.store.local_path(sha) is None
    assert not any((b.node.home.path / "quarantine").iterdir())  # grace 0: deleted at once
    with pytest.raises(NotFound):  # nor fetched again: its records are hidden
        await b.node.catalog.fetcher.fetch(sha)
    assert (a.node.home.path / "quarantine" / sha).is_file()  # A: kept aside for 72 hours
    resp = await b.client.get(
        f"/api/download/models/{published['model']['modelVersions'][0]['id']}"
    )
    assert resp.status == 404

    # C (review): queued, still shown.
    async def c_queued() -> Any:
        queue = await (await c.client.get("/api/moderation/queue", headers=c.admin)).json()
        return [i for i in queue["items"] if i["kind"] == "decision"]

    (item,) = await wait_for(c_queued, "A's decision in C's review queue")
    assert item["ref"] == decision["id"]
    assert len(await visible_models(c)) == 1

    # Re-publishing the same file on B is refused, naming the decision.
    bob = await login_headers(b, "bob")
    resp = await b.client.post(
        "/api/models/publish-path",
        json={"path": str(model_file), "name": "Totally New Style", "user": "bob"},
        headers=b.admin,
    )
    assert resp.status == 403, await resp.text()
    assert decision["id"] in (await resp.json())["message"]

    # A near copy (resized, re-encoded) of the listed image is held for review on upload.
    copy_path = tmp_path / "copy.jpg"
    copy_path.write_bytes(near_copy(preview_png))
    other = await b.node.accounts.get_user("bob")
    await b.node.catalog.publish_path(
        other.did,
        lora_file(tmp_path / "other.safetensors", 8),
        {"name": "Other"},
        previews=[copy_path],
    )
    models_b = await visible_models(b)
    assert [m["name"] for m in models_b] == ["Other"]
    assert models_b[0]["modelVersions"][0]["images"] == []
    queue = await (await b.client.get("/api/moderation/queue", headers=b.admin)).json()
    assert any(i["kind"] == "held" for i in queue["items"])
    del bob

    # Only the creator may answer the notice.
    eve = await login_headers(a, "eve")
    resp = await a.client.post(
        f"/api/takedowns/{notice['id']}/counter", json={"statement": "me too"}, headers=eve
    )
    assert resp.status == 403 and "only the creator" in (await resp.json())["message"]

    # The creator files a counter-notice on A; the moderator reverses.
    alice_token = await a.node.accounts.create_token("alice")
    resp = await a.client.post(
        f"/api/takedowns/{notice['id']}/counter",
        json={"statement": "I painted these myself; see my process videos."},
        headers={"Authorization": f"Bearer {alice_token}"},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["notice"]["counter_notices"]
    resp = await a.client.post(
        f"/api/takedowns/{notice['id']}/decision",
        json={"verdict": "reject", "note": "counter-notice convincing"},
        headers=mod,
    )
    assert resp.status == 201, await resp.text()
    # A shows it again, its file back in place.
    assert "Her Style" in [m["name"] for m in await visible_models(a)]
    assert await a.node.store.local_path(sha) is not None

    async def b_restored() -> Any:
        return [m for m in await visible_models(b) if m["name"] == "Her Style"]

    await wait_for(b_restored, "the model shown again on B")
    await wait_for(b_has_file, "B to fetch the file again from A")

    # What the targeted re-derivations left is what a full rebuild from the log gives.
    for live in (a, b, c):
        before = await snapshot(live.node)
        await live.node.log.reindex()
        assert await snapshot(live.node) == before

    audit = await (await a.client.get("/api/moderation/audit", headers=mod)).json()
    actions = {e["action"] for e in audit["entries"]}
    assert {"takedown_applied", "takedown_reversed", "decision_applied"} <= actions
