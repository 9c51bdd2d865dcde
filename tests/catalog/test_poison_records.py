"""Poison records never make a projection raise, whatever order they arrive in.

Every record here is valid by its schema and properly signed; some are foreign
(tombstones and revisions of another author's records), some point at the wrong kind of
record, some refer to records that never arrive. Pages of them are appended in shuffled
orders; each order must append without an exception and leave the same catalog a full
reindex gives, and the same shown catalog as every other order.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from node.app import Node
from node.errors import RecordRejected
from node.p2p.records import Record
from tests.catalog import forge
from tests.catalog.forge import T0, image, key, model, profile, sha, tombstone, version

PEER = "did:key:z6MkpoisonPeerSourceForTestsOnly"
A, B, C = key("alice"), key("mallory"), key("carol")


def good_and_poison() -> tuple[list[Record], list[Record]]:
    m = model(A, "fox", T0)
    m_edit = model(A, "fox, edited", T0 + 50, root=m.id)
    v1 = version(A, m.id, sha("fox v1"), T0 + 1)
    v2 = version(A, m.id, sha("fox v2"), T0 + 2, name="v2")
    i1 = image(A, v1.id, "fox 1", T0 + 3)
    m2 = model(A, "withdrawn", T0 + 4)
    m2_v = version(A, m2.id, sha("withdrawn v1"), T0 + 5)
    m2_gone = tombstone(A, m2.id, T0 + 6)
    m2_late_edit = model(A, "withdrawn, edited", T0 + 7, root=m2.id)
    n = model(C, "owl", T0 + 8)
    n_v = version(C, n.id, sha("owl v1"), T0 + 9)
    v2_gone = tombstone(A, v2.id, T0 + 10)
    good = [m, m_edit, v1, v2, i1, m2, m2_v, m2_gone, m2_late_edit, n, n_v, v2_gone]
    # Profiles committing to next keys: foreign records seen after them are refused,
    # before them stored inert; the catalog must not tell the difference.
    good += [profile(A, "alice"), profile(C, "carol")]
    unknown = sha("a record nobody has")
    poison = [
        tombstone(B, v1.id, T0 + 20),  # foreign tombstone of a version
        tombstone(B, m.id, T0 + 21),  # ... of a model
        tombstone(B, i1.id, T0 + 22),  # ... of an image
        tombstone(B, n_v.id, T0 + 23),
        model(B, "hijacked", T0 + 99, root=m.id),  # a revision of another author's root
        model(A, "root is a version", T0 + 24, root=v1.id),
        model(B, "root is a version, foreign", T0 + 25, root=v1.id),
        model(A, "root is an image", T0 + 26, root=i1.id),
        model(A, "root is a revision", T0 + 27, root=m_edit.id),
        model(A, "root is a tombstone", T0 + 28, root=m2_gone.id),
        model(A, "root never arrives", T0 + 29, root=unknown),
        version(B, unknown, sha("orphan"), T0 + 30),  # a version whose model never arrives
        version(B, m.id, sha("cuckoo"), T0 + 31),  # a version of another author's model
        version(A, v1.id, sha("model is a version"), T0 + 32),
        tombstone(A, m2_gone.id, T0 + 33),  # a tombstone of a tombstone
        tombstone(B, m2_gone.id, T0 + 34),
        tombstone(A, unknown, T0 + 35),  # of a record nobody has
        tombstone(A, m_edit.id, T0 + 36),  # of a revision (the model stays)
        image(B, unknown, "orphan image", T0 + 37),
        image(B, v1.id, "foreign image on a version", T0 + 38),
        image(A, m.id, "image naming a model as its version", T0 + 39),
    ]
    return good, poison


async def append_pages(node: Node, batch: list[Record], rng: random.Random) -> int:
    """Append ``batch`` in pages of random sizes, as a pull would; return the refusals."""
    refused: list[Any] = []
    start = 0
    while start < len(batch):
        size = rng.randint(1, 6)
        await node.log.accept_verified(batch[start : start + size], PEER, refused=refused)
        start += size
    assert all(isinstance(r.error, RecordRejected) for r in refused)
    return len(refused)


async def catalog(node: Node, *, shown_only: bool = False) -> dict[str, Any]:
    async with node.db.read() as conn:
        return await forge.catalog_rows(conn, shown_only=shown_only)


async def test_a_foreign_tombstone_in_any_order_never_breaks_projection(node: Node) -> None:
    m = model(A, "fox")
    v = version(A, m.id, sha("fox file"), T0 + 1)
    foreign = tombstone(B, v.id, T0 + 2)
    shown = []
    for order in itertools.permutations([m, v, foreign]):
        async with node.db.write() as conn:  # start each order from an empty log
            for table in reversed(forge.CATALOG_TABLES):
                await conn.execute(table.delete())
            await conn.execute(forge.sa.text("DELETE FROM records"))
        for record in order:
            await node.log.accept_verified([record], PEER, refused=[])
        shown.append(await catalog(node, shown_only=True))
        assert len(shown[-1]["model_versions"]) == 1  # the version is still shown
    assert all(s == shown[0] for s in shown)


@pytest.mark.parametrize("seed", range(6))
async def test_shuffled_poison_appends_and_equals_a_full_reindex(node: Node, seed: int) -> None:
    good, poison = good_and_poison()
    rng = random.Random(seed)
    batch = good + poison
    rng.shuffle(batch)
    await append_pages(node, batch, rng)
    appended = await catalog(node)
    await node.log.reindex()
    assert await catalog(node) == appended
    # Poison changes nothing a reader sees, whatever got in first.
    shown = await catalog(node, shown_only=True)
    names = sorted(row[4] for row in shown["models"])
    assert names == ["fox, edited", "owl"]
    shown_versions = {row[0] for row in shown["model_versions"]}
    assert {good[2].id, good[10].id} <= shown_versions  # fox v1 and owl v1
    assert good[3].id not in shown_versions  # withdrawn by its author
    # State changes (an author blocked, then unblocked) re-derive without raising.
    await node.log.block_author(B.did)
    blocked = await catalog(node)
    await node.log.reindex()
    assert await catalog(node) == blocked
    await node.log.unblock_author(B.did)
    unblocked = await catalog(node)
    await node.log.reindex()
    assert await catalog(node) == unblocked == appended


async def test_every_order_shows_the_same_catalog(node: Node, tmp_path: Any) -> None:
    good, poison = good_and_poison()
    first = None
    for seed in range(3):
        async with node.db.write() as conn:
            for table in reversed(forge.CATALOG_TABLES):
                await conn.execute(table.delete())
            await conn.execute(forge.sa.text("DELETE FROM records"))
        rng = random.Random(100 + seed)
        batch = good + poison
        rng.shuffle(batch)
        await append_pages(node, batch, rng)
        shown = await catalog(node, shown_only=True)
        first = first or shown
        assert shown == first
