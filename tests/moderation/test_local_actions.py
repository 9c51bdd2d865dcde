"""What a node's moderators and operator decide locally: removing an artist's name,
re-rating and flagging, refusing ratings by policy, and blocks that do not undo takedowns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.moderation.service import Submitter
from node.p2p.keys import SigningKey
from tests.catalog.conftest import lora_file
from tests.catalog.test_publish import snapshot
from tests.moderation.conftest import login_headers, start_node
from tests.p2p.test_torrents import LiveNode


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for node in start_node(tmp_path / "n", torrent=False, refuse_ratings="X"):
        yield node


async def publish(live: LiveNode, tmp_path: Path, seed: int, **fields: Any) -> dict[str, Any]:
    try:
        user = await live.node.accounts.get_user("alice")
    except Exception:
        user = await live.node.accounts.add_user("alice", "correct horse battery")
    return await live.node.catalog.publish_path(
        user.did, lora_file(tmp_path / f"m{seed}.safetensors", seed), fields
    )


async def models(live: LiveNode, query: str = "") -> list[dict[str, Any]]:
    resp = await live.client.get(f"/api/v1/models{query}")
    return (await resp.json())["items"]  # type: ignore[no-any-return]


async def test_remove_the_artists_name_hides_it_from_text_and_search(
    live: LiveNode, tmp_path: Path
) -> None:
    published = await publish(
        live,
        tmp_path,
        1,
        name="Ada Lovelace style",
        description="Trained on Ada Lovelace's sketches.",
        tags=["ada lovelace", "sketch"],
        trained_words=["by ada lovelace", "sketchy"],
    )
    root = published["model"]["civitas"]["rootId"]
    key = SigningKey.generate()
    notice = await live.node.moderation.file_notice(
        key,
        {
            "claimant_name": "Ada Lovelace",
            "works": "my sketches",
            "targets": [f"model:{root}"],
            "reason": "artist_opt_out",
            "action": "remove_name",
            "names": ["Ada Lovelace"],
            "good_faith": True,
            "accurate": True,
        },
        Submitter(),
    )
    assert len(await models(live, "?query=lovelace")) == 1
    await live.node.moderation.decide("mona", bytes.fromhex(notice["id"]), "honor")
    (model,) = await models(live)  # still there: only the name is gone
    assert model["name"] == "[removed] style"
    assert "Lovelace" not in model["description"] and "[removed]" in model["description"]
    assert model["tags"] == ["sketch"]
    assert model["modelVersions"][0]["trainedWords"] == ["sketchy"]
    assert await models(live, "?query=lovelace") == []
    before = await snapshot(live.node)  # targeted re-derivation = a full rebuild
    await live.node.log.reindex()
    assert await snapshot(live.node) == before
    # Reversed: the name is back.
    await live.node.moderation.decide("mona", bytes.fromhex(notice["id"]), "reject")
    (model,) = await models(live)
    assert model["name"] == "Ada Lovelace style"
    assert model["modelVersions"][0]["trainedWords"] == ["by ada lovelace", "sketchy"]


async def test_moderators_rerate_and_flag_models(live: LiveNode, tmp_path: Path) -> None:
    published = await publish(live, tmp_path, 2, name="Portrait", rating="PG")
    model_id = published["model"]["id"]
    mod = await login_headers(live, "mona", "moderator")
    resp = await live.client.post(
        f"/api/moderation/models/{model_id}/rating",
        json={"rating": "R", "poi": True, "minor": True},
        headers=mod,
    )
    assert resp.status == 200, await resp.text()
    model = (await resp.json())["model"]
    assert model["nsfw"] is True and model["poi"] is True
    assert model["civitas"]["rating"] == "R" and model["civitas"]["minorSafety"] is True
    assert await models(live, "?nsfw=false") == []  # filters follow the local rating
    member = await login_headers(live, "mike")
    resp = await live.client.post(
        f"/api/moderation/models/{model_id}/rating", json={"rating": "PG"}, headers=member
    )
    assert resp.status == 403
    resp = await live.client.post(
        f"/api/moderation/models/{model_id}/rating", json={"rating": "XXX"}, headers=mod
    )
    assert resp.status == 400
    # Survives a rebuild of the catalog from the log, which gives the same rows.
    before = await snapshot(live.node)
    await live.node.log.reindex()
    assert await snapshot(live.node) == before
    (model,) = await models(live)
    assert model["civitas"]["rating"] == "R"


async def test_policy_refuses_ratings_here_and_holds_them_from_peers(
    live: LiveNode, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="refuses X-rated"):
        await publish(live, tmp_path, 3, name="Explicit", rating="X")
    assert await models(live) == []
    from node.p2p.records import sign_record

    stranger = SigningKey.generate()
    record = sign_record(
        stranger,
        "model",
        {"name": "From afar", "type": "LORA", "tags": [], "rating": "X", "permissions": {}},
    )
    await live.node.log.accept_verified([record], source="did:key:z6Mkpeer")
    entry = await live.node.log.get(record.id)
    assert entry is not None and entry.state == "suppressed"
    assert await models(live) == []


async def test_unblocking_an_author_keeps_what_a_takedown_hides(
    live: LiveNode, tmp_path: Path
) -> None:
    published = await publish(live, tmp_path, 4, name="Kept hidden")
    root = published["model"]["civitas"]["rootId"]
    alice = await live.node.accounts.get_user("alice")
    key = SigningKey.generate()
    notice = await live.node.moderation.file_notice(
        key,
        {
            "claimant_name": "Ada",
            "works": "w",
            "targets": [f"model:{root}"],
            "reason": "copyright",
            "good_faith": True,
            "accurate": True,
        },
        Submitter(),
    )
    await live.node.moderation.decide("mona", bytes.fromhex(notice["id"]), "honor")
    await live.node.log.block_author(alice.did)
    await live.node.log.unblock_author(alice.did)
    assert await models(live) == []


async def test_moderators_rerate_images(live: LiveNode, tmp_path: Path) -> None:
    from tests.moderation.conftest import picture

    preview = tmp_path / "p.png"
    preview.write_bytes(picture(5))
    user = await live.node.accounts.add_user("alice", "correct horse battery")
    await live.node.catalog.publish_path(
        user.did, lora_file(tmp_path / "m.safetensors", 5), {"name": "Pics"}, previews=[preview]
    )
    (image,) = (await (await live.client.get("/api/v1/images")).json())["items"]
    assert image["nsfwLevel"] == 1
    mod = await login_headers(live, "mona", "moderator")
    resp = await live.client.post(
        f"/api/moderation/images/{image['id']}/rating", json={"rating": "X"}, headers=mod
    )
    assert resp.status == 200, await resp.text()
    (image,) = (await (await live.client.get("/api/v1/images")).json())["items"]
    assert image["nsfw"] == "X"
    resp = await live.client.post(
        f"/api/moderation/images/{image['id']}/rating", json={"poi": True}, headers=mod
    )
    assert resp.status == 400
    resp = await live.client.post("/api/moderation/images/1/rating", json={}, headers=mod)
    assert resp.status == 404
