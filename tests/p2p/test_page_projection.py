"""A page of records is projected as a set: few statements, the same tables.

``RecordTypes.project_many`` hands each projection the page's records at once (profiles,
identities, catalog versions and images are projected set-based). Whatever the page
size, the tables must equal what accepting the records one by one leaves, and what a
full reindex (record by record) rebuilds; a page whose set-based projection fails falls
back to one record at a time, names the failing record and keeps the others.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from node.app import Node
from node.catalog.ids import candidate
from node.catalog.tables import images
from node.p2p.projections import Projection
from node.p2p.records import Record, sign_record
from node.p2p.tables import authors, identities, key_commitments
from tests.catalog import forge
from tests.catalog.forge import T0, image, key, model, profile, sha, tombstone, version
from tests.catalog.test_poison_records import good_and_poison

PEER = "did:key:z6MkpagePeerSourceForTestsOnly"
A, C = key("alice"), key("carol")


async def everything(node: Node, *, shown_only: bool = False) -> dict[str, Any]:
    async with node.db.read() as conn:
        out = await forge.catalog_rows(conn, shown_only=shown_only)
        for table in (authors, key_commitments, identities):
            out[table.name] = sorted(tuple(r) for r in await conn.execute(sa.select(table)))
    return out


async def wipe(node: Node) -> None:
    async with node.db.write() as conn:
        for table in (*reversed(forge.CATALOG_TABLES), authors, key_commitments, identities):
            await conn.execute(table.delete())
        await conn.execute(sa.text("DELETE FROM records"))


@contextmanager
def counting(node: Node) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = node.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def a_catalog(models: int) -> list[Record]:
    """Profiles, then models with two versions and three images per version each."""
    out = [profile(A, "alice"), profile(C, "carol"), profile(A, "alice, later", T0 + 1)]
    for m in range(models):
        signer = A if m % 2 else C
        root = model(signer, f"model {m}", T0 + 10 * m, description=f"about {m}")
        out.append(root)
        for v in range(2):
            ver = version(signer, root.id, sha(f"file {m} {v}"), T0 + 10 * m + v, name=f"v{v}")
            out.append(ver)
            out += [image(signer, ver.id, f"{m} {v} {i}", T0 + 10 * m + v) for i in range(3)]
    return out


async def test_one_big_page_equals_one_record_at_a_time_and_a_reindex(node: Node) -> None:
    good, poison = good_and_poison()
    records = a_catalog(6) + good + poison
    await wipe(node)
    for record in records:
        await node.log.accept_verified([record], PEER, refused=[])
    one_by_one = await everything(node, shown_only=True)
    for seed in range(3):
        await wipe(node)
        rng = random.Random(seed)
        shuffled = records[:]
        rng.shuffle(shuffled)
        size = [len(shuffled), 40, 17][seed]
        for start in range(0, len(shuffled), size):
            await node.log.accept_verified(shuffled[start : start + size], PEER, refused=[])
        # Which foreign records are refused or kept inert depends on arrival order (a
        # profile's commitment first or not): what a reader sees does not.
        assert await everything(node, shown_only=True) == one_by_one
        paged = await everything(node)
        await node.log.reindex()
        assert await everything(node) == paged


async def test_a_page_of_versions_and_images_takes_a_bounded_number_of_statements(
    node: Node,
) -> None:
    small, large = a_catalog(5), a_catalog(50)[len(a_catalog(5)) :]
    await node.log.accept_verified(small, PEER, refused=[])
    with counting(node) as seen:
        await node.log.accept_verified(
            [r for r in large if r.type != "model"], PEER, refused=[]
        )  # 100 versions and 300 images of models not here yet: no model row to refresh
    assert len(seen) < 40, Counter(s[:70] for s in seen).most_common(8)
    with counting(node) as seen:
        await node.log.accept_verified([r for r in large if r.type == "model"], PEER, refused=[])
    # Models are still recomputed one by one (about 19 statements each).
    assert len(seen) < 45 * 25
    shown = await everything(node)
    assert len(shown["models"]) == 50 and len(shown["images"]) == 300
    await node.log.reindex()
    assert await everything(node) == shown


async def test_an_int_id_taken_in_the_table_is_settled_as_one_by_one(node: Node) -> None:
    root = model(A, "fox")
    ver = version(A, root.id, sha("fox file"), T0 + 1)
    pics = [image(A, ver.id, f"fox {i}", T0 + 2) for i in range(3)]
    squatter = b"\xff" * 32  # a higher id holding the first image's number: it moves
    async with node.db.write() as conn:
        await conn.execute(
            images.insert().values(
                id=squatter,
                int_id=candidate(pics[0].id),
                author=A.did,
                sha256="00" * 32,
                width=1,
                height=1,
                mime="image/png",
                size=1,
                created=T0,
            )
        )
    await node.log.accept_verified([root, ver, *pics], PEER, refused=[])
    async with node.db.read() as conn:
        numbers = dict((await conn.execute(sa.select(images.c.id, images.c.int_id))).all())
    assert numbers[pics[0].id] == candidate(pics[0].id)
    assert numbers[squatter] == candidate(squatter, 1)
    assert all(numbers[p.id] == candidate(p.id) for p in pics)


async def test_a_tombstone_in_the_same_page_withdraws_its_version_and_image(node: Node) -> None:
    root = model(A, "fox")
    ver = version(A, root.id, sha("fox file"), T0 + 1)
    pic = image(A, ver.id, "fox", T0 + 2)
    kept = image(A, ver.id, "fox kept", T0 + 2)
    foreign = tombstone(C, kept.id, T0 + 3)  # another author's: inert
    page = [tombstone(A, ver.id, T0 + 3), tombstone(A, pic.id, T0 + 3), foreign, root, ver]
    await node.log.accept_verified([pic, kept, *page], PEER, refused=[])
    shown = await everything(node)
    assert shown["model_versions"] == [] and shown["version_files"] == []
    assert [row[0] for row in shown["images"]] == [kept.id]
    await node.log.reindex()
    assert await everything(node) == shown


async def test_a_page_whose_set_projection_fails_names_the_record_and_keeps_the_rest(
    node: Node,
) -> None:
    async def explode(conn: object, record: Record) -> None:
        if record.body.get("boom"):
            raise LookupError("a projection bug")

    async def explode_many(conn: object, batch: Sequence[Record]) -> None:
        for record in batch:
            await explode(conn, record)

    node.log.types.register_projection(
        Projection("explosive", frozenset({"explosive"}), (), explode, apply_many=explode_many)
    )
    root = model(A, "fox")
    ver = version(A, root.id, sha("fox file"), T0 + 1)
    pic = image(A, ver.id, "fox", T0 + 2)
    bomb = sign_record(C, "explosive", {"boom": True}, created=T0)
    refused: list[Any] = []
    appended = await node.log.accept_verified(
        [profile(A, "alice"), root, ver, bomb, pic], PEER, refused=refused
    )
    assert [r.record.id for r in refused] == [bomb.id]
    assert refused[0].error.code == "projection_failed"
    assert bomb.id.hex() in refused[0].error.message
    assert bomb.id not in {a.record.id for a in appended} and len(appended) == 4
    assert await node.log.get(bomb.id) is None
    shown = await everything(node)
    assert len(shown["models"]) == 1 and len(shown["images"]) == 1
    assert len(shown["authors"]) == 1
    await node.log.reindex()
    assert await everything(node) == shown
