"""How ``model``, ``model_version`` and ``image`` records become catalog rows.

Every function here depends only on the set of visible records: a model's row is
recomputed from its root and all its author's revisions each time one arrives, so the
catalog is the same whatever order records come in (tests shuffle them).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog import schemas
from node.catalog.ids import assign_int_id, candidate, file_int_id, placeholder
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
from node.p2p.tables import identities, records


def hexu(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


async def _visible_record(conn: AsyncConnection, record_id: bytes) -> Record | None:
    raw = await conn.scalar(
        sa.select(records.c.raw).where(records.c.id == record_id, records.c.state == "visible")
    )
    return decode_stored(raw, record_id) if raw is not None else None


# --- moderators' local overrides ------------------------------------------------------


@dataclass(frozen=True)
class Override:
    rating: str | None = None
    poi: bool | None = None
    minor: bool = False
    terms: tuple[str, ...] = ()


async def override(conn: AsyncConnection, root_id: bytes) -> Override:
    row = (
        await conn.execute(sa.select(model_overrides).where(model_overrides.c.root_id == root_id))
    ).first()
    if row is None:
        return Override()
    return Override(row.rating, row.poi, row.minor, tuple(json.loads(row.hidden_terms)))


def redact(text: str, terms: Sequence[str]) -> str:
    """``text`` with every term (any case) replaced by "[removed]"."""
    for term in terms:
        text = re.sub(re.escape(term), "[removed]", text, flags=re.IGNORECASE)
    return text


def redact_list(items: Sequence[str], terms: Sequence[str]) -> list[str]:
    """Items that mention none of the terms (tags, trigger words)."""
    lowered = [t.lower() for t in terms]
    return [i for i in items if i.strip() and not any(t in i.lower() for t in lowered)]


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
    body = current.body
    permissions = body.get("permissions", {})
    local = await override(conn, root_id)
    values = {
        "author": root.author,
        "revision_id": current.id,
        "name": redact(body["name"], local.terms) or "[removed]",
        "type": body["type"],
        "description": redact(body.get("description", ""), local.terms),
        "rating": local.rating or body.get("rating", "PG"),
        "license": body.get("license"),
        "poi": local.poi if local.poi is not None else body.get("poi", False),
        "allow_no_credit": permissions.get("allow_no_credit", True),
        "allow_commercial_use": ",".join(permissions.get("allow_commercial_use", [])),
        "allow_derivatives": permissions.get("allow_derivatives", True),
        "allow_different_license": permissions.get("allow_different_license", True),
        "created": root.created,
        "updated": current.created,
        "downloads": await _downloads(conn, root_id, root.author),
    }
    exists = await conn.scalar(sa.select(models.c.seq).where(models.c.root_id == root_id))
    if exists is None:
        await conn.execute(
            models.insert().values(root_id=root_id, int_id=placeholder(root_id), **values)
        )
        await assign_int_id(conn, models, models.c.root_id, root_id)
    else:
        await conn.execute(models.update().where(models.c.root_id == root_id).values(values))
    await conn.execute(model_tags.delete().where(model_tags.c.root_id == root_id))
    tags = sorted({t.strip().lower() for t in redact_list(body.get("tags", []), local.terms)})
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
    tags = (
        await conn.execute(
            sa.select(model_tags.c.tag)
            .where(model_tags.c.root_id == root_id)
            .order_by(model_tags.c.tag)
        )
    ).scalars()
    versions = await conn.execute(
        sa.select(model_versions.c.name, model_versions.c.trained_words)
        .where(model_versions.c.model_root == root_id, model_versions.c.author == row.author)
        .order_by(model_versions.c.created, model_versions.c.id)
    )
    parts = [row.description, " ".join(tags)]
    for version in versions:
        parts += [version.name, " ".join(json.loads(version.trained_words))]
    await conn.execute(
        models.update()
        .where(models.c.root_id == root_id)
        .values(search_text="\n".join(p for p in parts if p))
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


def _version_rows(
    record: Record, terms: Sequence[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A version's ``model_versions`` row (placeholder int_id) and its ``version_files``."""
    body = record.body
    version = {
        "id": record.id,
        "int_id": placeholder(record.id),
        "model_root": body["model"],
        "author": record.author,
        "name": redact(body["name"], terms) or "[removed]",
        "base_model": body["base_model"],
        "description": redact(body.get("description", ""), terms),
        "trained_words": json.dumps(redact_list(body.get("trained_words", []), terms)),
        "created": record.created,
    }
    rows: list[dict[str, Any]] = []
    for position, item in enumerate(body["files"]):
        sha256 = hexu(item["sha256"])
        assert sha256 is not None
        rows.append(
            {
                "version_id": record.id,
                "sha256": sha256,
                "int_id": file_int_id(sha256),
                "position": position,
                "name": item["name"],
                "size": item["size"],
                "autov1": hexu(item.get("autov1")),
                "autov2": sha256[:10],
                "autov3": hexu(item.get("autov3")),
                "blake3": hexu(item["blake3"]),
                "crc32": hexu(item["crc32"]),
                "format": item["format"],
                "fp": item.get("fp"),
                "size_type": item.get("size_type"),
                "is_primary": item.get("primary", position == 0),
                "infohash": item["infohash"].hex() if item.get("infohash") else None,
                "piece_length": item.get("piece_length"),
            }
        )
    return version, rows


async def apply_model_version(conn: AsyncConnection, record: Record) -> None:
    body = record.body
    if await withdrawn(conn, record.id, record.author):
        return
    version, files = _version_rows(record, (await override(conn, body["model"])).terms)
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


def _image_rows(record: Record, rating: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An image's ``images`` row (placeholder int_id) and its ``image_resources``."""
    body = record.body
    image = {
        "id": record.id,
        "int_id": placeholder(record.id),
        "author": record.author,
        "sha256": hexu(body["sha256"]),
        "width": body["width"],
        "height": body["height"],
        "mime": body["mime"],
        "size": body["size"],
        "rating": rating or body.get("rating", "PG"),
        "version_id": body.get("model_version"),
        "meta": json.dumps(body.get("meta", {})),
        "pdq": body.get("pdq"),
        "pdq_quality": body.get("pdq_quality"),
        "created": record.created,
    }
    resources = [
        {
            "image_id": record.id,
            "position": i,
            "name": res.get("name"),
            "type": res.get("type"),
            "hash": res["hash"].upper() if res.get("hash") else None,
            "weight": res.get("weight"),
        }
        for i, res in enumerate(body.get("resources", []))
    ]
    return image, resources


async def apply_image(conn: AsyncConnection, record: Record) -> None:
    if await withdrawn(conn, record.id, record.author):
        return
    image, resources = _image_rows(record, (await override(conn, record.id)).rating)
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


LOOKUP_CHUNK = 500


async def _lookup(
    conn: AsyncConnection, query: Any, column: Any, values: Sequence[Any]
) -> list[Any]:
    """Rows of ``query`` where ``column`` is one of ``values`` (500 at a time)."""
    values = list(dict.fromkeys(values))
    out: list[Any] = []
    for start in range(0, len(values), LOOKUP_CHUNK):
        out += (
            await conn.execute(query.where(column.in_(values[start : start + LOOKUP_CHUNK])))
        ).all()
    return out


async def _insert_with_int_ids(
    conn: AsyncConnection, table: sa.Table, key: sa.Column, rows: list[dict[str, Any]]
) -> None:
    """Insert rows whose ``int_id`` is a placeholder in one statement, each given its first
    candidate where nobody holds it; the rest (a collision: 2^-53 per pair) go through
    :func:`assign_int_id`, which settles who keeps the number."""
    if not rows:
        return
    first = {row["id"]: candidate(row["id"]) for row in rows}
    taken = {
        row.int_id
        for row in await _lookup(
            conn, sa.select(table.c.int_id), table.c.int_id, list(first.values())
        )
    }
    repeated = {n for n, count in Counter(first.values()).items() if count > 1}
    slow = []
    for row in rows:
        number = first[row["id"]]
        if number in taken or number in repeated:
            slow.append(row["id"])
        else:
            row["int_id"] = number
    await conn.execute(table.insert(), rows)
    for record_id in slow:
        await assign_int_id(conn, table, key, record_id)


async def apply_many(conn: AsyncConnection, batch: Sequence[Record]) -> None:
    """Project a page of catalog records with a bounded number of statements for its
    versions and images: one lookup each for identities, tombstones and overrides, one
    multi-row insert per table, then one pass over the models whose versions changed.
    Models and tombstones (a model's row is recomputed from all its records) still go
    one by one. The tables end as applying each record in turn leaves them."""
    identity = {
        row.did: row.identity
        for row in await _lookup(
            conn,
            sa.select(identities.c.did, identities.c.identity),
            identities.c.did,
            [r.author for r in batch],
        )
    }
    batch = [
        dataclasses.replace(r, author=identity[r.author]) if r.author in identity else r
        for r in batch
    ]
    for record in batch:  # first, so a version or image withdrawn in this page is skipped
        if record.type in (schemas.MODEL, schemas.TOMBSTONE):
            await _APPLY[record.type](conn, record)
    versions = [r for r in batch if r.type == schemas.MODEL_VERSION]
    pictures = [r for r in batch if r.type == schemas.IMAGE]
    if not versions and not pictures:
        return
    withdrawn_pairs = {
        (row.target, row.author)
        for row in await _lookup(
            conn,
            sa.select(tombstones.c.target, tombstones.c.author),
            tombstones.c.target,
            [r.id for r in versions + pictures],
        )
    }
    versions = [r for r in versions if (r.id, r.author) not in withdrawn_pairs]
    pictures = [r for r in pictures if (r.id, r.author) not in withdrawn_pairs]
    local = {
        row.root_id: Override(row.rating, row.poi, row.minor, tuple(json.loads(row.hidden_terms)))
        for row in await _lookup(
            conn,
            sa.select(model_overrides),
            model_overrides.c.root_id,
            [r.body["model"] for r in versions] + [r.id for r in pictures],
        )
    }
    version_rows, file_rows = [], []
    for record in versions:
        version, files = _version_rows(record, local.get(record.body["model"], Override()).terms)
        version_rows.append(version)
        file_rows += files
    await _insert_with_int_ids(conn, model_versions, model_versions.c.id, version_rows)
    if file_rows:
        await conn.execute(version_files.insert(), file_rows)
    image_rows, resource_rows = [], []
    for record in pictures:
        image, resources = _image_rows(record, local.get(record.id, Override()).rating)
        image_rows.append(image)
        resource_rows += resources
    await _insert_with_int_ids(conn, images, images.c.id, image_rows)
    if resource_rows:
        await conn.execute(image_resources.insert(), resource_rows)
    await _refresh_many(conn, [r.body["model"] for r in versions])


async def _refresh_many(conn: AsyncConnection, roots: Sequence[bytes]) -> None:
    """:func:`refresh_search_text` and :func:`refresh_downloads` for many models at once:
    four lookups and one executemany update, whatever their number."""
    shown = {
        row.root_id: row
        for row in await _lookup(
            conn,
            sa.select(models.c.root_id, models.c.description, models.c.author),
            models.c.root_id,
            roots,
        )
    }
    if not shown:
        return
    wanted = list(shown)
    tags: dict[bytes, list[str]] = {root: [] for root in wanted}
    for row in await _lookup(
        conn,
        sa.select(model_tags.c.root_id, model_tags.c.tag).order_by(model_tags.c.tag),
        model_tags.c.root_id,
        wanted,
    ):
        tags[row.root_id].append(row.tag)
    words: dict[bytes, list[str]] = {root: [] for root in wanted}
    for row in await _lookup(
        conn,
        sa.select(
            model_versions.c.model_root,
            model_versions.c.author,
            model_versions.c.name,
            model_versions.c.trained_words,
        ).order_by(model_versions.c.created, model_versions.c.id),
        model_versions.c.model_root,
        wanted,
    ):
        if row.author == shown[row.model_root].author:
            words[row.model_root] += [row.name, " ".join(json.loads(row.trained_words))]
    downloads: dict[bytes, int] = {}
    for row in await _lookup(
        conn,
        sa.select(
            model_versions.c.model_root,
            model_versions.c.author,
            sa.func.coalesce(sa.func.sum(model_stats.c.downloads), 0).label("downloads"),
        )
        .select_from(
            model_versions.join(model_stats, model_stats.c.version_id == model_versions.c.id)
        )
        .group_by(model_versions.c.model_root, model_versions.c.author),
        model_versions.c.model_root,
        wanted,
    ):
        if row.author == shown[row.model_root].author:
            downloads[row.model_root] = int(row.downloads or 0)
    updates = []
    for root, row in shown.items():
        parts = [row.description, " ".join(tags[root]), *words[root]]
        updates.append(
            {
                "b_root": root,
                "search_text": "\n".join(p for p in parts if p),
                "downloads": downloads.get(root, 0),
            }
        )
    await conn.execute(models.update().where(models.c.root_id == sa.bindparam("b_root")), updates)


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
