"""Known answers for the acceptance rules of docs/records.md ("Acceptance rules").

Each test feeds exact records and asserts what the node does with each: accepted,
refused with an exact code, or stored inert (kept and relayed, projected as nothing).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from node.app import Node
from node.catalog.tables import model_versions, models
from node.errors import NotAuthor, RecordBeforeProtocol
from node.p2p.log import Refused
from node.p2p.projections import Projection
from node.p2p.records import EARLIEST_CREATED_MS, Record, sign_record, verify_record
from tests.catalog.forge import T0, image, key, model, profile, sha, tombstone, version

PEER = "did:key:z6MkacceptanceRulesPeerForTestsOnly"
ALICE, MALLORY = key("alice"), key("mallory")


async def feed(node: Node, *batch: Record) -> tuple[list[bytes], dict[bytes, str]]:
    """Append one page from a peer: (ids appended, {refused id: code})."""
    refused: list[Refused] = []
    appended = await node.log.accept_verified(list(batch), PEER, refused=refused)
    return [a.record.id for a in appended], {r.record.id: r.error.code for r in refused}


async def shown_models(node: Node) -> dict[bytes, str]:
    async with node.db.read() as conn:
        return dict((await conn.execute(sa.select(models.c.root_id, models.c.name))).all())


async def shown_versions(node: Node) -> set[bytes]:
    async with node.db.read() as conn:
        return set((await conn.execute(sa.select(model_versions.c.id))).scalars())


async def test_the_author_may_revise_and_withdraw(node: Node) -> None:
    root = model(ALICE, "fox")
    edit = model(ALICE, "fox, edited", T0 + 1, root=root.id)
    ids, refused = await feed(node, root, edit)
    assert ids == [root.id, edit.id] and refused == {}
    assert await shown_models(node) == {root.id: "fox, edited"}
    gone = tombstone(ALICE, root.id, T0 + 2)
    assert await feed(node, gone) == ([gone.id], {})
    assert await shown_models(node) == {}


@pytest.mark.parametrize("same_page", [False, True])
async def test_a_revision_of_a_known_root_by_another_key_is_refused(
    node: Node, same_page: bool
) -> None:
    root = model(ALICE, "fox")
    hijack = model(MALLORY, "mallory's fox", T0 + 99, root=root.id)
    await feed(node, profile(ALICE, "alice"))  # alice committed to a next key: not mallory's
    if same_page:
        ids, refused = await feed(node, root, hijack)
    else:
        await feed(node, root)
        ids, refused = await feed(node, hijack)
    assert hijack.id not in ids
    assert refused == {hijack.id: "not_author"}
    assert await node.log.get(hijack.id) is None
    assert await shown_models(node) == {root.id: "fox"}


async def test_a_tombstone_of_a_known_record_by_another_key_is_refused(node: Node) -> None:
    root = model(ALICE, "fox")
    v1 = version(ALICE, root.id, sha("fox v1"), T0 + 1)
    pic = image(ALICE, v1.id, "fox pic", T0 + 2)
    await feed(node, profile(ALICE, "alice"), root, v1, pic)
    for target in (root, v1, pic):
        foreign = tombstone(MALLORY, target.id, T0 + 3)
        assert await feed(node, foreign) == ([], {foreign.id: "not_author"})
    assert await shown_models(node) == {root.id: "fox"}
    assert await shown_versions(node) == {v1.id}


async def test_foreign_records_whose_target_is_unknown_are_stored_inert(node: Node) -> None:
    root = model(ALICE, "fox")
    v1 = version(ALICE, root.id, sha("fox v1"), T0 + 1)
    early = [tombstone(MALLORY, v1.id, T0 + 2), model(MALLORY, "hijack", T0 + 3, root=root.id)]
    ids, refused = await feed(node, *early)
    assert ids == [r.id for r in early] and refused == {}  # accepted, relayed ...
    assert await feed(node, root, v1) == ([root.id, v1.id], {})
    assert await shown_models(node) == {root.id: "fox"}  # ... and inert
    assert await shown_versions(node) == {v1.id}
    await node.log.reindex()
    assert await shown_models(node) == {root.id: "fox"}


async def test_a_foreign_record_may_wait_for_a_rotation_when_no_commitment_is_known(
    node: Node,
) -> None:
    """No profile of alice's here: mallory's key might yet prove to be her next key."""
    root = model(ALICE, "fox")
    early = tombstone(MALLORY, root.id, T0 + 2)
    assert await feed(node, root, early) == ([root.id, early.id], {})
    assert await shown_models(node) == {root.id: "fox"}  # stored, inert
    late = tombstone(MALLORY, root.id, T0 + 3)
    await feed(node, profile(ALICE, "alice"))
    assert await feed(node, late) == ([], {late.id: "not_author"})


async def test_publishing_a_foreign_revision_here_raises(node: Node) -> None:
    root = model(ALICE, "fox")
    await node.log.accept_verified([profile(ALICE, "alice"), root])
    with pytest.raises(NotAuthor) as refused:
        await node.log.accept_verified([tombstone(MALLORY, root.id, T0 + 1)])
    assert refused.value.code == "not_author" and refused.value.status == 400


async def test_a_rotated_key_of_the_author_may_revise(node: Node) -> None:
    user = await node.accounts.add_user("alice", "correct horse battery")
    fox = {"name": "fox", "type": "LORA"}
    root = (await node.log.publish(node.home.author_key(user.did), "model", fox)).record
    rotated = await node.accounts.rotate_key("alice")
    assert rotated.did != user.did
    new_key = node.home.author_key(rotated.did)
    edit = model(new_key, "fox, by the new key", root.created + 1, root=root.id)
    assert await feed(node, edit) == ([edit.id], {})
    assert await shown_models(node) == {root.id: "fox, by the new key"}


async def test_a_record_that_cannot_project_is_refused_alone(node: Node) -> None:
    """Defence in depth: were a projection to raise, the page's other records apply."""

    async def explode(conn: object, record: Record) -> None:
        if record.body.get("boom"):
            raise LookupError("a projection bug")

    node.log.types.register_projection(
        Projection("explosive", frozenset({"explosive"}), (), explode)
    )
    before = model(ALICE, "before")
    bomb = sign_record(MALLORY, "explosive", {"boom": True}, created=T0)
    dud = sign_record(MALLORY, "explosive", {"boom": False}, created=T0)
    after = model(ALICE, "after", T0 + 1)
    ids, refused = await feed(node, before, bomb, dud, after)
    assert ids == [before.id, dud.id, after.id]
    assert refused == {bomb.id: "projection_failed"}
    assert await node.log.get(bomb.id) is None
    assert sorted((await shown_models(node)).values()) == ["after", "before"]
    # Through the plain call a peer page uses (no list): the bad record is left out too.
    bomb2 = sign_record(MALLORY, "explosive", {"boom": True, "n": 2}, created=T0)
    appended = await node.log.accept_verified([bomb2, model(ALICE, "third")], PEER)
    assert [a.record.type for a in appended] == ["model"]


def test_created_before_the_protocol_is_refused() -> None:
    at_start = sign_record(ALICE, "model", {"name": "fox", "type": "LORA"}, EARLIEST_CREATED_MS)
    assert verify_record(at_start.raw).created == EARLIEST_CREATED_MS
    back_dated = sign_record(ALICE, "model", {"name": "fox", "type": "LORA"}, 0)
    with pytest.raises(RecordBeforeProtocol) as refused:
        verify_record(back_dated.raw)
    assert refused.value.code == "record_before_protocol"
