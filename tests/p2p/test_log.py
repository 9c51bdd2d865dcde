"""The record log and its projections, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

import pytest
import sqlalchemy as sa

from node.app import Node
from node.errors import BadSignature, RecordRejected
from node.p2p.keys import SigningKey
from node.p2p.records import EARLIEST_CREATED_MS, Record, sign_record
from node.p2p.tables import authors, records

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


def profile(key: SigningKey, name: str, created: int, **extra: Any) -> Record:
    """``created``: small numbers count from the protocol's earliest allowed time."""
    if created < EARLIEST_CREATED_MS:
        created += EARLIEST_CREATED_MS
    return sign_record(key, "profile", {"name": name, **extra}, created=created)


async def authors_table(node: Node) -> list[tuple[Any, ...]]:
    async with node.db.read() as conn:
        rows = await conn.execute(sa.select(authors).order_by(authors.c.did))
        return [tuple(row) for row in rows]


async def test_append_is_idempotent_by_record_id(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    record = profile(key, "alice", 1_735_689_600_000)
    first = await node.log.accept(record.raw)
    again = await node.log.accept(record.raw)
    assert first.new and not again.new
    assert first.seq == again.seq
    assert await node.log.count() == 1
    entry = await node.log.get(record.id)
    assert entry is not None
    assert entry.raw == record.raw and entry.state == "visible"
    assert entry.author == key.did


async def test_invalid_record_in_a_batch_writes_nothing(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    good = profile(key, "alice", 1_735_689_600_000)
    bad = profile(key, "bob", 1_735_689_600_001)
    tampered = bytearray(bad.raw)
    tampered[bad.raw.index(bad.sig) + 10] ^= 0x01  # one bit of the signature
    with pytest.raises(BadSignature):
        await node.log.accept_batch([good.raw, bytes(tampered)])
    assert await node.log.count() == 0
    assert await authors_table(node) == []


async def test_body_rules_refuse_a_bad_profile(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    bad = sign_record(key, "profile", {"name": ""}, created=1_735_689_600_000)
    with pytest.raises(RecordRejected, match="name"):
        await node.log.accept(bad.raw)
    assert await node.log.count() == 0


async def test_newest_profile_wins_whatever_the_arrival_order(node: Node) -> None:
    a, b = SigningKey.from_seed(SEED_A), SigningKey.from_seed(SEED_B)
    batch = [
        profile(a, "alice-1", 1000),
        profile(a, "alice-3", 3000, bio="latest"),
        profile(a, "alice-2", 2000),
        profile(b, "bob-1", 1000),
        profile(b, "bob-2", 5000),
    ]
    # Two profiles with the same created time: the higher record id wins.
    tie = [profile(b, "bob-tie-x", 9000), profile(b, "bob-tie-y", 9000)]
    batch += tie
    tie_winner = max(tie, key=lambda r: r.id).body["name"]

    snapshots = []
    for order_seed in range(4):
        shuffled = batch[:]
        random.Random(order_seed).shuffle(shuffled)
        async with node.db.write() as conn:  # a fresh log, as on a new node
            await conn.execute(authors.delete())
            await conn.execute(records.delete())
        for record in shuffled:
            await node.log.accept(record.raw)
        snapshots.append(await authors_table(node))
    assert all(s == snapshots[0] for s in snapshots)
    names = {row[0]: row[1] for row in snapshots[0]}
    assert names == {a.did: "alice-3", b.did: tie_winner}


async def test_reindex_rebuilds_the_same_tables(node: Node) -> None:
    a, b = SigningKey.from_seed(SEED_A), SigningKey.from_seed(SEED_B)
    for record in [profile(a, "alice", 1000), profile(a, "alice2", 2000), profile(b, "bob", 10)]:
        await node.log.accept(record.raw)
    before = await authors_table(node)
    async with node.db.write() as conn:  # a projection bug, fixed by replaying
        await conn.execute(authors.update().values(name="garbage"))
    assert await node.log.reindex() == 3
    assert await authors_table(node) == before


async def test_unknown_record_types_are_stored_not_projected(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    future = sign_record(key, "future_thing", {"anything": [1, b"x", {"y": None}]}, created=T0)
    appended = await node.log.accept(future.raw)
    assert appended.new
    assert (await node.log.get(future.id)) is not None
    assert await authors_table(node) == []
    assert await node.log.reindex() == 0  # nothing projects it


async def test_suppressing_the_newest_profile_falls_back_to_the_previous(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    old, new = profile(key, "old-name", 1000), profile(key, "new-name", 2000)
    await node.log.accept_batch([old.raw, new.raw])
    await node.log.set_state(new.id, "suppressed")
    assert [row[1] for row in await authors_table(node)] == ["old-name"]
    await node.log.set_state(new.id, "visible")
    assert [row[1] for row in await authors_table(node)] == ["new-name"]


async def test_purged_record_keeps_its_id_and_is_never_accepted_again(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    record = profile(key, "gone", 1000)
    await node.log.accept(record.raw)
    await node.log.set_state(record.id, "purged")
    entry = await node.log.get(record.id)
    assert entry is not None and entry.state == "purged" and entry.raw is None
    again = await node.log.accept(record.raw)
    assert not again.new
    entry = await node.log.get(record.id)
    assert entry is not None and entry.state == "purged"
    assert await authors_table(node) == []


async def test_after_pages_in_seq_order_up_to_the_high_water_mark(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    batch = [profile(key, f"n{i}", 1000 + i) for i in range(7)]
    for record in batch:
        await node.log.accept(record.raw)
    assert await node.log.high_water() == (await node.log.get(batch[-1].id)).seq  # type: ignore[union-attr]
    seen: list[bytes] = []
    cursor = 0
    while page := await node.log.after(cursor, limit=3):
        seen += [entry.id for entry in page]
        cursor = page[-1].seq
    assert seen == [r.id for r in batch]


async def test_log_epoch_is_made_once(node: Node) -> None:
    epoch = await node.log.epoch()
    assert epoch and len(epoch) == 32
    assert await node.log.ensure_epoch() == epoch


async def test_migrations_match_the_declared_tables(node: Node) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from node.db import metadata

    def search_index(name: str | None, kind: str, _parent: Any) -> bool:
        # The full-text index is made by raw SQL in the migration (FTS5 / GIN expression).
        return not (name or "").startswith(("models_fts", "ix_models_fulltext"))

    def diff(sync_conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "include_name": search_index}
        )
        return list(compare_metadata(context, metadata))

    async with node.db.read() as conn:
        assert await conn.run_sync(diff) == []


async def test_a_page_with_repeats_and_known_records_appends_each_once(node: Node) -> None:
    key = SigningKey.from_seed(SEED_A)
    known = profile(key, "known", 1)
    await node.log.accept(known.raw)
    fresh = [profile(key, f"p{i}", 10 + i) for i in range(3)]
    page = [fresh[0], known, fresh[1], fresh[0], fresh[2]]
    appended = await node.log.accept_verified(page)
    assert [a.new for a in appended] == [True, False, True, False, True]
    assert appended[0].seq == appended[3].seq  # the repeat points at the same entry
    seqs = [a.seq for a in appended if a.new]
    assert seqs == sorted(seqs)  # appended in the page's order
    assert await node.log.count() == 4
