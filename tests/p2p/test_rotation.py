"""Key rotation with pre-rotation, between live nodes: the new key is the same author;
a rotation nobody committed to, or without the new key's countersignature, counts for
nothing; two rotations from one key freeze the identity until an operator settles it;
any arrival order gives the same catalog."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from node.errors import AuthorBlocked
from node.p2p.keys import SigningKey, public_key_commitment
from node.p2p.records import Record, now_ms, sign_record
from node.p2p.rotation import KEY_ROTATION, countersigned_bytes
from node.p2p.tables import records
from tests.catalog.conftest import PASSWORD, lora_file
from tests.moderation.conftest import peer, start_node
from tests.p2p.test_torrents import LiveNode, wait_for


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async for a in start_node(tmp_path / "a", torrent=False):
        async for b in start_node(tmp_path / "b", torrent=False):
            await peer(a, b)
            yield a, b


async def models(live: LiveNode) -> list[dict[str, Any]]:
    return (await (await live.client.get("/api/v1/models")).json())["items"]  # type: ignore[no-any-return]


def rotation(
    old: SigningKey, new: SigningKey, after: SigningKey, *, countersign: bool = True
) -> Record:
    commitment = public_key_commitment(after.public_bytes)
    signer = new if countersign else SigningKey.generate()
    return sign_record(
        old,
        KEY_ROTATION,
        {
            "new_key": new.did,
            "next_key": commitment,
            "countersig": signer.sign(countersigned_bytes(old.did, new.did, commitment)),
        },
    )


def profile(key: SigningKey, name: str, following: SigningKey) -> Record:
    return sign_record(
        key, "profile", {"name": name, "next_key": public_key_commitment(following.public_bytes)}
    )


async def test_a_rotated_key_is_the_same_author_on_every_node(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b = pair
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    published = await a.node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "m.safetensors", 1), {"name": "Fox"}
    )
    model_id = published["model"]["id"]
    await wait_for(lambda: models(b), "the model on B")
    token = await a.node.accounts.create_token("alice")
    resp = await a.client.post("/api/auth/rotate-key", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()
    new_did = (await resp.json())["user"]["did"]
    assert new_did != alice.did
    # The new key edits the model and adds a version: both are the same author's.
    resp = await a.client.patch(
        f"/api/models/{model_id}",
        json={"name": "Fox, revised"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()
    await a.node.catalog.publish_path(
        new_did, lora_file(tmp_path / "m2.safetensors", 2), {"model_id": model_id, "version": "v2"}
    )

    async def revised_on_b() -> Any:
        found = await models(b)
        done = found and found[0]["name"] == "Fox, revised"
        return found if done and len(found[0]["modelVersions"]) == 2 else None

    (model,) = await wait_for(revised_on_b, "the edit by the new key on B")
    assert model["creator"]["username"] == "alice@test-node"  # a name from another node
    assert sorted(v["name"] for v in model["modelVersions"]) == ["v1", "v2"]
    assert model["civitas"]["author"] == alice.did  # the identity: its first key
    # Rebuilt from the log alone, B's catalog says the same.
    await b.node.log.reindex()
    (again,) = await models(b)
    assert again["name"] == "Fox, revised" and len(again["modelVersions"]) == 2


async def test_rotations_without_commitment_or_countersignature_count_for_nothing(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, _ = pair
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    published = await a.node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "m.safetensors", 1), {"name": "Fox"}
    )
    root = bytes.fromhex(published["model"]["civitas"]["rootId"])
    old = a.node.home.author_key(alice.did)
    # A stranger's key (no commitment names it), properly countersigned by the stranger:
    # a would-be hijack of the stranger's identity or of alice's models.
    stranger = SigningKey.generate()
    # The committed key, but without its countersignature.
    committed = a.node.home.author_key_file(alice.did, following=True)
    from node.p2p.keys import load_key

    nxt = load_key(committed)
    bad = [
        rotation(old, stranger, SigningKey.generate()),
        rotation(old, nxt, SigningKey.generate(), countersign=False),
    ]
    await a.node.log.accept_verified(bad, source="did:key:z6Mkrelay")
    for key in (stranger, nxt):
        edit = sign_record(
            key, "model", {"name": "Hijacked", "type": "LORA", "tags": [], "root": root}
        )
        await a.node.log.accept_verified([edit], source="did:key:z6Mkrelay")
    (model,) = await models(a)
    assert model["name"] == "Fox"
    assert model["civitas"]["identityFrozen"] is False


async def test_conflicting_rotations_freeze_the_identity_until_the_operator_settles(
    pair: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, _ = pair
    k0, k1, k1b, k2 = (SigningKey.generate() for _ in range(4))
    # k0 committed to k1; later (its key stolen) a profile commits to k1b too.
    base = [profile(k0, "dana", k1)]
    await a.node.log.accept_verified(base, source="did:key:z6Mkrelay")
    model = sign_record(k0, "model", {"name": "Owl", "type": "LORA", "tags": []})
    await a.node.log.accept_verified([model], source="did:key:z6Mkrelay")
    await a.node.log.accept_verified(
        [rotation(k0, k1, k2), profile(k0, "dana", k1b), rotation(k0, k1b, SigningKey.generate())],
        source="did:key:z6Mkrelay",
    )
    (shown,) = await models(a)
    assert shown["name"] == "Owl" and shown["civitas"]["identityFrozen"] is True
    edit = sign_record(k1, "model", {"name": "Owl 2", "type": "LORA", "tags": [], "root": model.id})
    with pytest.raises(AuthorBlocked, match="frozen"):
        await a.node.log.accept_verified([edit], source="did:key:z6Mkrelay")
    assert await a.node.log.list_frozen() == [
        {"did": k0.did, "rotated_to": sorted([k1.did, k1b.did])}
    ]
    resp = await a.client.post(
        f"/api/admin/authors/{k0.did}/unfreeze", json={"keep": k1.did}, headers=a.admin
    )
    assert resp.status == 200, await resp.text()
    assert await a.node.log.list_frozen() == []
    await a.node.log.accept_verified([edit], source="did:key:z6Mkrelay")
    (shown,) = await models(a)
    assert shown["name"] == "Owl 2" and shown["civitas"]["identityFrozen"] is False
    resp = await a.client.post(
        f"/api/admin/authors/{k0.did}/unfreeze", json={"keep": k1.did}, headers=a.admin
    )
    assert resp.status == 404


async def test_any_arrival_order_gives_the_same_catalog(tmp_path: Path) -> None:
    k0, k1, k2 = (SigningKey.generate() for _ in range(3))
    now = now_ms() - 60_000  # the revision is strictly newer than its root
    root = sign_record(k0, "model", {"name": "Cat", "type": "LORA", "tags": []}, created=now)
    batch = [
        profile(k0, "erin", k1),
        root,
        rotation(k0, k1, k2),
        profile(k1, "erin", k2),
        sign_record(
            k1,
            "model",
            {"name": "Cat, by k1", "type": "LORA", "tags": [], "root": root.id},
            created=now + 1000,
        ),
    ]
    outcomes = []
    for i, seed in enumerate((1, 2, 3)):
        order = batch[:]
        random.Random(seed).shuffle(order)
        async for live in start_node(tmp_path / f"n{i}", torrent=False):
            for record in order:
                await live.node.log.accept_verified([record], source="did:key:z6Mkrelay")
            found = await models(live)
            outcomes.append([(m["name"], m["creator"]["username"]) for m in found])
            async with live.node.db.read() as conn:
                mine = (
                    sa.select(sa.func.count()).select_from(records).where(records.c.type != "node")
                )
                assert await conn.scalar(mine) == 5
    assert outcomes == [[("Cat, by k1", "erin@relay")]] * 3  # from an unknown node: key
