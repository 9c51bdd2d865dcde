"""How a page of catalog records becomes rows: as a set, in a bounded number of statements.

Accepting a page hands :func:`apply_many` its new visible ``model``, ``model_version``,
``image`` and ``tombstone`` records at once. It looks up what the page needs with
``IN (...)`` (``LOOKUP_CHUNK`` values a statement), writes each table with one multi-row
INSERT, one executemany UPDATE or one DELETE, and recomputes every model the page
touches in one pass (:func:`refresh_models`): a page costs a few dozen statements
whatever its size, where record by record a model cost about 19.

The tables end as applying the records one by one (:mod:`node.catalog.projection`, which
``reindex`` replays) leaves them, in any order: a model's row is a function of the set
of its visible records, the tombstones and the local tables (identities, overrides,
download counts), and that function is computed here once, after the page's rows are in.
Both build their rows with :mod:`node.catalog.rows`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog import schemas
from node.catalog.ids import assign_int_id, candidate, placeholder
from node.catalog.rows import (
    Override,
    image_rows,
    model_values,
    search_text,
    tags_of,
    version_rows,
)
from node.catalog.tables import (
    image_resources,
    images,
    model_overrides,
    model_revisions,
    model_stats,
    model_tags,
    model_versions,
    models,
    tombstones,
    version_files,
)
from node.p2p.records import Record, decode_stored
from node.p2p.tables import identities, records

LOOKUP_CHUNK = 500


async def _lookup(
    conn: AsyncConnection, query: Any, column: Any, values: Collection[Any]
) -> list[Any]:
    """Rows of ``query`` where ``column`` is one of ``values`` (``LOOKUP_CHUNK`` at a time)."""
    values = list(dict.fromkeys(values))
    out: list[Any] = []
    for start in range(0, len(values), LOOKUP_CHUNK):
        out += (
            await conn.execute(query.where(column.in_(values[start : start + LOOKUP_CHUNK])))
        ).all()
    return out


async def _delete(
    conn: AsyncConnection, table: sa.Table, column: Any, values: Collection[Any]
) -> None:
    values = list(dict.fromkeys(values))
    for start in range(0, len(values), LOOKUP_CHUNK):
        await conn.execute(table.delete().where(column.in_(values[start : start + LOOKUP_CHUNK])))


async def _insert_with_int_ids(
    conn: AsyncConnection, table: sa.Table, key: sa.Column, rows: list[dict[str, Any]]
) -> None:
    """Insert rows whose ``int_id`` is a placeholder in one statement, each given its first
    candidate where nobody holds it; the rest (a collision: 2^-53 per pair) go through
    :func:`assign_int_id`, which settles who keeps the number."""
    if not rows:
        return
    first = {row[key.name]: candidate(row[key.name]) for row in rows}
    taken = {
        row.int_id
        for row in await _lookup(conn, sa.select(table.c.int_id), table.c.int_id, first.values())
    }
    repeated = {n for n, count in Counter(first.values()).items() if count > 1}
    slow = []
    for row in rows:
        number = first[row[key.name]]
        if number in taken or number in repeated:
            slow.append(row[key.name])
        else:
            row["int_id"] = number
    await conn.execute(table.insert(), rows)
    for record_id in slow:
        await assign_int_id(conn, table, key, record_id)


async def _as_identities(conn: AsyncConnection, batch: Sequence[Record]) -> list[Record]:
    """The records with each author replaced by its identity (the key it rotated from)."""
    identity = {
        row.did: row.identity
        for row in await _lookup(
            conn,
            sa.select(identities.c.did, identities.c.identity),
            identities.c.did,
            {r.author for r in batch},
        )
    }
    return [
        dataclasses.replace(r, author=identity[r.author])
        if identity.get(r.author, r.author) != r.author
        else r
        for r in batch
    ]


async def apply_many(conn: AsyncConnection, batch: Sequence[Record]) -> None:
    """Project a page of catalog records: revisions and tombstones first (so a version or
    image withdrawn in this page is never inserted), then versions and images, then one
    recomputation of every model the page touched."""
    batch = await _as_identities(conn, batch)
    touched: set[bytes] = set()  # models (root ids, or anything a record names as one)
    revisions = [r for r in batch if r.type == schemas.MODEL]
    if revisions:
        await conn.execute(
            model_revisions.insert(),
            [
                {
                    "id": r.id,
                    "root_id": r.body.get("root") or r.id,
                    "author": r.author,
                    "created": r.created,
                }
                for r in revisions
            ],
        )
        touched |= {r.body.get("root") or r.id for r in revisions}
    withdrawals = [r for r in batch if r.type == schemas.TOMBSTONE]
    if withdrawals:
        touched |= await _withdraw(conn, withdrawals)
    touched |= await _add_versions_and_images(
        conn,
        [r for r in batch if r.type == schemas.MODEL_VERSION],
        [r for r in batch if r.type == schemas.IMAGE],
    )
    await refresh_models(conn, touched)


async def _withdraw(conn: AsyncConnection, batch: Sequence[Record]) -> set[bytes]:
    """Store the tombstones and remove the versions and images their authors withdraw;
    the models to recompute (every target, and the models of withdrawn versions)."""
    await conn.execute(
        tombstones.insert(),
        [{"id": r.id, "target": r.body["target"], "author": r.author} for r in batch],
    )
    pairs = {(r.body["target"], r.author) for r in batch}
    targets = {target for target, _ in pairs}
    gone = {
        row.id: row.model_root
        for row in await _lookup(
            conn,
            sa.select(model_versions.c.id, model_versions.c.model_root, model_versions.c.author),
            model_versions.c.id,
            targets,
        )
        if (row.id, row.author) in pairs
    }
    if gone:
        await _delete(conn, version_files, version_files.c.version_id, gone)
        await _delete(conn, model_versions, model_versions.c.id, gone)
    pictures = [
        row.id
        for row in await _lookup(
            conn, sa.select(images.c.id, images.c.author), images.c.id, targets
        )
        if (row.id, row.author) in pairs
    ]
    if pictures:
        await _delete(conn, image_resources, image_resources.c.image_id, pictures)
        await _delete(conn, images, images.c.id, pictures)
    return targets | set(gone.values())


async def _add_versions_and_images(
    conn: AsyncConnection, versions: Sequence[Record], pictures: Sequence[Record]
) -> set[bytes]:
    """Insert the versions and images no tombstone withdraws (one lookup each for
    tombstones and overrides, one multi-row insert per table); the models they feed."""
    if not versions and not pictures:
        return set()
    withdrawn_pairs = {
        (row.target, row.author)
        for row in await _lookup(
            conn,
            sa.select(tombstones.c.target, tombstones.c.author),
            tombstones.c.target,
            [r.id for r in [*versions, *pictures]],
        )
    }
    versions = [r for r in versions if (r.id, r.author) not in withdrawn_pairs]
    pictures = [r for r in pictures if (r.id, r.author) not in withdrawn_pairs]
    local = {
        row.root_id: Override.of(row)
        for row in await _lookup(
            conn,
            sa.select(model_overrides),
            model_overrides.c.root_id,
            [r.body["model"] for r in versions] + [r.id for r in pictures],
        )
    }
    version_list, file_rows = [], []
    for record in versions:
        version, files = version_rows(record, local.get(record.body["model"], Override()).terms)
        version_list.append(version)
        file_rows += files
    await _insert_with_int_ids(conn, model_versions, model_versions.c.id, version_list)
    if file_rows:
        await conn.execute(version_files.insert(), file_rows)
    image_list, resource_rows = [], []
    for record in pictures:
        image, resources = image_rows(record, local.get(record.id, Override()).rating)
        image_list.append(image)
        resource_rows += resources
    await _insert_with_int_ids(conn, images, images.c.id, image_list)
    if resource_rows:
        await conn.execute(image_resources.insert(), resource_rows)
    return {r.body["model"] for r in versions}


async def refresh_models(conn: AsyncConnection, roots: Collection[bytes]) -> None:
    """:func:`node.catalog.projection.refresh_model` for many models at once: about ten
    lookups, then one insert, one executemany update and one delete per table, whatever
    their number. ``roots`` may name anything: only a visible ``model`` root whose
    author's identity has not withdrawn it and has a revision in ``model_revisions`` makes
    a row (with its tags and search text); every other named row goes."""
    wanted = list(dict.fromkeys(roots))
    if not wanted:
        return
    existing = {
        row.root_id
        for row in await _lookup(conn, sa.select(models.c.root_id), models.c.root_id, wanted)
    }
    shown = await _shown_roots(conn, wanted)
    newest = await _newest_revisions(conn, shown)
    shown = {root_id: root for root_id, root in shown.items() if root_id in newest}
    current = await _current_revisions(conn, shown, newest)
    local = {
        row.root_id: Override.of(row)
        for row in await _lookup(conn, sa.select(model_overrides), model_overrides.c.root_id, shown)
    }
    words: dict[bytes, list[Any]] = {root_id: [] for root_id in shown}
    downloads: Counter[bytes] = Counter()
    for row in await _lookup(
        conn,
        sa.select(
            model_versions.c.model_root,
            model_versions.c.author,
            model_versions.c.name,
            model_versions.c.trained_words,
            sa.func.coalesce(model_stats.c.downloads, 0).label("downloads"),
        )
        .select_from(
            model_versions.outerjoin(model_stats, model_stats.c.version_id == model_versions.c.id)
        )
        .order_by(model_versions.c.created, model_versions.c.id),
        model_versions.c.model_root,
        shown,
    ):
        if row.author == shown[row.model_root].author:
            words[row.model_root].append(row)
            downloads[row.model_root] += int(row.downloads or 0)
    fresh, renewed, tag_rows = [], [], []
    for root_id, root in shown.items():
        here = local.get(root_id, Override())
        values = model_values(root, current[root_id], here, downloads[root_id])
        tags = tags_of(current[root_id], here)
        values["search_text"] = search_text(values["description"], tags, words[root_id])
        tag_rows += [{"root_id": root_id, "tag": tag} for tag in tags]
        if root_id in existing:
            renewed.append({"b_root": root_id, **values})
        else:
            fresh.append({"root_id": root_id, "int_id": placeholder(root_id), **values})
    await _delete(conn, model_tags, model_tags.c.root_id, existing)
    await _delete(conn, models, models.c.root_id, existing - shown.keys())
    if renewed:
        await conn.execute(
            models.update().where(models.c.root_id == sa.bindparam("b_root")), renewed
        )
    await _insert_with_int_ids(conn, models, models.c.root_id, fresh)
    if tag_rows:
        await conn.execute(model_tags.insert(), tag_rows)


async def _shown_roots(conn: AsyncConnection, wanted: Sequence[bytes]) -> dict[bytes, Record]:
    """Of ``wanted``, the visible ``model`` roots their author (as an identity) has not
    withdrawn, with that identity as their author."""
    found = [
        decode_stored(row.raw, row.id)
        for row in await _lookup(
            conn,
            sa.select(records.c.id, records.c.raw).where(records.c.state == "visible"),
            records.c.id,
            wanted,
        )
    ]
    roots = await _as_identities(
        conn, [r for r in found if r.type == schemas.MODEL and "root" not in r.body]
    )
    withdrawn = {
        (row.target, row.author)
        for row in await _lookup(
            conn,
            sa.select(tombstones.c.target, tombstones.c.author),
            tombstones.c.target,
            [r.id for r in roots],
        )
    }
    return {r.id: r for r in roots if (r.id, r.author) not in withdrawn}


async def _newest_revisions(
    conn: AsyncConnection, shown: dict[bytes, Record]
) -> dict[bytes, bytes]:
    """Each model's newest revision (by ``created``, then the higher id) its root's author
    signed; a model without one (its own row not projected yet) is left out."""
    newest: dict[bytes, tuple[int, bytes]] = {}
    for row in await _lookup(
        conn,
        sa.select(
            model_revisions.c.root_id,
            model_revisions.c.id,
            model_revisions.c.author,
            model_revisions.c.created,
        ),
        model_revisions.c.root_id,
        shown,
    ):
        if row.author != shown[row.root_id].author:
            continue
        seen = newest.get(row.root_id)
        if seen is None or (row.created, row.id) > seen:
            newest[row.root_id] = (row.created, row.id)
    return {root_id: revision for root_id, (_, revision) in newest.items()}


async def _current_revisions(
    conn: AsyncConnection, shown: dict[bytes, Record], newest: dict[bytes, bytes]
) -> dict[bytes, Record]:
    """The record each model's row shows: its newest revision where that is a visible
    ``model`` record, else its root."""
    later = {
        row.id: decode_stored(row.raw, row.id)
        for row in await _lookup(
            conn,
            sa.select(records.c.id, records.c.raw).where(records.c.state == "visible"),
            records.c.id,
            [newest[root_id] for root_id in shown if newest[root_id] != root_id],
        )
    }
    out = {}
    for root_id, root in shown.items():
        revision = later.get(newest[root_id])
        out[root_id] = revision if revision is not None and revision.type == schemas.MODEL else root
    return out
