"""How ``model``, ``model_version``, ``image`` and ``tombstone`` records become catalog
rows, one record at a time.

Every function here depends only on the set of visible records: a model's row is
recomputed from its root and all its author's revisions each time one arrives, so the
catalog is the same whatever order records come in (tests shuffle them). ``reindex``
and :func:`refresh_roots` replay records through these; accepting a page projects it
as a set (:mod:`node.catalog.page_projection`), which must leave the same tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog import schemas
from node.catalog.ids import assign_int_id, placeholder
from node.catalog.page_projection import apply_many
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
from node.p2p.projections import Projection, RecordTypes
from node.p2p.records import Record, decode_stored
from node.p2p.rotation import identity_of
from node.p2p.tables import records


async def _visible_record(conn: AsyncConnection, record_id: bytes) -> Record | None:
    raw = await conn.scalar(
        sa.select(records.c.raw).where(records.c.id == record_id, records.c.state == "visible")
    )
    return decode_stored(raw, record_id) if raw is not None else None


# --- moderators' local overrides ------------------------------------------------------


async def override(conn: AsyncConnection, root_id: bytes) -> Override:
    row = (
        await conn.execute(sa.select(model_overrides).where(model_overrides.c.root_id == root_id))
    ).first()
    return Override() if row is None else Override.of(row)


# --- models -------------------------------------------------------------------------------


async def apply_model(conn: AsyncConnection, record: Record) -> None:
    root_id = record.body.get("root") or record.id
    await conn.execute(
        model_revisions.insert().values(
            id=record.id, root_id=root_id, author=record.author, created=record.created
        )
    )
    await refresh_model(conn, root_id)


async def refresh_model(conn: AsyncConnection, root_id: bytes) -> None:
    """Recompute a model's row from its root and its root author's newest revision.

    ``root_id`` may name anything (a tombstone's target, a revision's claimed root): only
    a visible ``model`` record that is itself a root makes a row, and only revisions its
    author's identity signed count. Anything else leaves no row and never raises.
    """
    root = await _visible_record(conn, root_id)
    if root is None or root.type != schemas.MODEL or "root" in root.body:
        await _drop_model(conn, root_id)  # no root (yet), or not a model's root
        return
    root = dataclasses.replace(root, author=await identity_of(conn, root.author))
    if await withdrawn(conn, root_id, root.author):
        await _drop_model(conn, root_id)  # withdrawn by its author
        return
    newest = await conn.scalar(
        sa.select(model_revisions.c.id)
        .where(model_revisions.c.root_id == root_id, model_revisions.c.author == root.author)
        .order_by(model_revisions.c.created.desc(), model_revisions.c.id.desc())
        .limit(1)
    )
    if newest is None:  # the root's own row is not projected yet: its turn will come
        await _drop_model(conn, root_id)
        return
    current = root if newest == root_id else await _visible_record(conn, newest)
    if current is None or current.type != schemas.MODEL:
        current = root
    local = await override(conn, root_id)
    values = model_values(root, current, local, await _downloads(conn, root_id, root.author))
    exists = await conn.scalar(sa.select(models.c.seq).where(models.c.root_id == root_id))
    if exists is None:
        await conn.execute(
            models.insert().values(root_id=root_id, int_id=placeholder(root_id), **values)
        )
        await assign_int_id(conn, models, models.c.root_id, root_id)
    else:
        await conn.execute(models.update().where(models.c.root_id == root_id).values(values))
    await conn.execute(model_tags.delete().where(model_tags.c.root_id == root_id))
    tags = tags_of(current, local)
    if tags:
        await conn.execute(model_tags.insert(), [{"root_id": root_id, "tag": t} for t in tags])
    await refresh_search_text(conn, root_id)


async def _downloads(conn: AsyncConnection, root_id: bytes, author: str) -> int:
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(model_stats.c.downloads), 0))
        .select_from(
            model_versions.join(model_stats, model_stats.c.version_id == model_versions.c.id)
        )
        .where(model_versions.c.model_root == root_id, model_versions.c.author == author)
    )
    return int(total or 0)


async def _drop_model(conn: AsyncConnection, root_id: bytes) -> None:
    await conn.execute(models.delete().where(models.c.root_id == root_id))
    await conn.execute(model_tags.delete().where(model_tags.c.root_id == root_id))


async def refresh_search_text(conn: AsyncConnection, root_id: bytes) -> None:
    """The one text column full-text search indexes: description, tags, versions' words."""
    row = (
        await conn.execute(
            sa.select(models.c.description, models.c.author).where(models.c.root_id == root_id)
        )
    ).first()
    if row is None:
        return
    # Sorted here, not by the database: PostgreSQL's collation may order them otherwise.
    tags = sorted(
        (await conn.execute(sa.select(model_tags.c.tag).where(model_tags.c.root_id == root_id)))
        .scalars()
        .all()
    )
    versions = await conn.execute(
        sa.select(model_versions.c.name, model_versions.c.trained_words)
        .where(model_versions.c.model_root == root_id, model_versions.c.author == row.author)
        .order_by(model_versions.c.created, model_versions.c.id)
    )
    await conn.execute(
        models.update()
        .where(models.c.root_id == root_id)
        .values(search_text=search_text(row.description, tags, versions))
    )


# --- versions -----------------------------------------------------------------------------


async def withdrawn(conn: AsyncConnection, target: bytes, author: str) -> bool:
    """Whether ``author`` signed a tombstone for ``target`` (final: nothing undoes it)."""
    found = await conn.scalar(
        sa.select(tombstones.c.id)
        .where(tombstones.c.target == target, tombstones.c.author == author)
        .limit(1)
    )
    return found is not None


async def apply_tombstone(conn: AsyncConnection, record: Record) -> None:
    target = record.body["target"]
    await conn.execute(
        tombstones.insert().values(id=record.id, target=target, author=record.author)
    )
    await refresh_model(conn, target)
    version_root = await conn.scalar(
        sa.select(model_versions.c.model_root).where(
            model_versions.c.id == target, model_versions.c.author == record.author
        )
    )
    if version_root is not None:
        await conn.execute(version_files.delete().where(version_files.c.version_id == target))
        await conn.execute(model_versions.delete().where(model_versions.c.id == target))
        await refresh_search_text(conn, version_root)
        await refresh_downloads(conn, version_root)
    image = images.c.id == target
    if await conn.scalar(sa.select(images.c.id).where(image, images.c.author == record.author)):
        await conn.execute(image_resources.delete().where(image_resources.c.image_id == target))
        await conn.execute(images.delete().where(image))


async def apply_model_version(conn: AsyncConnection, record: Record) -> None:
    body = record.body
    if await withdrawn(conn, record.id, record.author):
        return
    version, files = version_rows(record, (await override(conn, body["model"])).terms)
    await conn.execute(model_versions.insert().values(**version))
    await assign_int_id(conn, model_versions, model_versions.c.id, record.id)
    await conn.execute(version_files.insert(), files)
    await refresh_search_text(conn, body["model"])
    await refresh_downloads(conn, body["model"])


async def refresh_downloads(conn: AsyncConnection, root_id: bytes) -> None:
    author = await conn.scalar(sa.select(models.c.author).where(models.c.root_id == root_id))
    if author is not None:
        await conn.execute(
            models.update()
            .where(models.c.root_id == root_id)
            .values(downloads=await _downloads(conn, root_id, author))
        )


# --- images -------------------------------------------------------------------------------


async def apply_image(conn: AsyncConnection, record: Record) -> None:
    if await withdrawn(conn, record.id, record.author):
        return
    image, resources = image_rows(record, (await override(conn, record.id)).rating)
    await conn.execute(images.insert().values(**image))
    await assign_int_id(conn, images, images.c.id, record.id)
    if resources:
        await conn.execute(image_resources.insert(), resources)


# --- targeted re-derivation ---------------------------------------------------------------


async def _ids(conn: AsyncConnection, query: Any) -> set[bytes]:
    return set((await conn.execute(query)).scalars())


async def _root_of(conn: AsyncConnection, record: Record) -> bytes | None:
    """The model (root id) a catalog record belongs to, if it can be told."""
    body = record.body
    if record.type == schemas.MODEL:
        return body.get("root") or record.id
    if record.type == schemas.MODEL_VERSION:
        return body.get("model")
    if record.type == schemas.IMAGE:
        version = body.get("model_version")
    elif record.type == schemas.TOMBSTONE:
        version = body.get("target")
        if await conn.scalar(sa.select(models.c.root_id).where(models.c.root_id == version)):
            return version
        image_version = await conn.scalar(
            sa.select(images.c.version_id).where(images.c.id == version)
        )
        version = image_version or version
    else:
        return None
    if not isinstance(version, bytes):
        return None
    root = await conn.scalar(
        sa.select(model_versions.c.model_root).where(model_versions.c.id == version)
    )
    if root is None:  # the version is not shown: its record still names the model
        raw = await conn.scalar(sa.select(records.c.raw).where(records.c.id == version))
        if raw is not None:
            root = decode_stored(raw, version).body.get("model")
    return root


async def refresh_records(conn: AsyncConnection, changed: Sequence[Record]) -> None:
    """Re-derive the catalog rows of the models ``changed`` records belong to (their state
    changed), from those models' visible records: the same rows a full rebuild gives,
    without replaying the whole log."""
    roots = {root for r in changed if (root := await _root_of(conn, r)) is not None}
    await refresh_roots(conn, roots, {r.id for r in changed})


async def refresh_roots(
    conn: AsyncConnection,
    roots: set[bytes],
    extra: set[bytes] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Delete and replay every catalog row of these models (and the ``extra`` records)."""
    # ``roots`` may name any record (a revision's claimed root can be a version): the rows
    # of every named record go too, whatever table they are in; each is replayed once.
    root_list, extra_list = list(roots), list(roots | extra)
    versions = await _ids(
        conn,
        sa.select(model_versions.c.id).where(
            sa.or_(model_versions.c.model_root.in_(root_list), model_versions.c.id.in_(extra_list))
        ),
    )
    image_ids = await _ids(
        conn,
        sa.select(images.c.id).where(
            sa.or_(images.c.version_id.in_(list(versions)), images.c.id.in_(extra_list))
        ),
    )
    revisions = await _ids(
        conn,
        sa.select(model_revisions.c.id).where(
            sa.or_(model_revisions.c.root_id.in_(root_list), model_revisions.c.id.in_(extra_list))
        ),
    )
    targets = list(roots | versions | image_ids | extra)
    tombs = await _ids(
        conn,
        sa.select(tombstones.c.id).where(
            sa.or_(tombstones.c.target.in_(targets), tombstones.c.id.in_(extra_list))
        ),
    )
    # Records of these models that are not shown now (suppressed before) may be again.
    related = roots | versions | image_ids | revisions | tombs | set(extra)
    images_gone = list(image_ids)
    await conn.execute(image_resources.delete().where(image_resources.c.image_id.in_(images_gone)))
    await conn.execute(images.delete().where(images.c.id.in_(images_gone)))
    await conn.execute(version_files.delete().where(version_files.c.version_id.in_(list(versions))))
    await conn.execute(model_versions.delete().where(model_versions.c.id.in_(list(versions))))
    await conn.execute(model_tags.delete().where(model_tags.c.root_id.in_(root_list)))
    await conn.execute(models.delete().where(models.c.root_id.in_(root_list)))
    await conn.execute(model_revisions.delete().where(model_revisions.c.id.in_(list(revisions))))
    await conn.execute(tombstones.delete().where(tombstones.c.id.in_(list(tombs))))
    rows = (
        await conn.execute(
            sa.select(records.c.id, records.c.raw)
            .where(records.c.id.in_(list(related)), records.c.state == "visible")
            .where(records.c.type.in_(list(_APPLY)))
            .order_by(records.c.seq)
        )
    ).all()
    for row in rows:
        await _apply(conn, decode_stored(row.raw, row.id))


def register(types: RecordTypes) -> None:
    types.register_rule(schemas.MODEL, schemas.check_model)
    types.register_rule(schemas.MODEL_VERSION, schemas.check_model_version)
    types.register_rule(schemas.IMAGE, schemas.check_image)
    types.register_rule(schemas.TOMBSTONE, schemas.check_tombstone)
    # Only a root's author revises it; only a record's author withdraws it.
    types.register_acts_on(schemas.MODEL, lambda body: body.get("root"))
    types.register_acts_on(schemas.TOMBSTONE, lambda body: body.get("target"))
    # Versions feed a model's search text and tombstones hide any of them: one projection.
    types.register_projection(
        Projection(
            "catalog",
            frozenset({schemas.MODEL, schemas.MODEL_VERSION, schemas.IMAGE, schemas.TOMBSTONE}),
            (
                models,
                model_revisions,
                model_tags,
                model_versions,
                version_files,
                images,
                image_resources,
                tombstones,
            ),
            _apply,
            refresh=refresh_records,
            apply_many=apply_many,
        )
    )


_APPLY = {
    schemas.MODEL: apply_model,
    schemas.MODEL_VERSION: apply_model_version,
    schemas.IMAGE: apply_image,
    schemas.TOMBSTONE: apply_tombstone,
}


async def _apply(conn: AsyncConnection, record: Record) -> None:
    # Rows name the author's identity (its first key): records signed after a key
    # rotation are the same author's (DESIGN.md section 1).
    identity = await identity_of(conn, record.author)
    if identity != record.author:
        record = dataclasses.replace(record, author=identity)
    await _APPLY[record.type](conn, record)
