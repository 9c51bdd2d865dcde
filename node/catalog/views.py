"""Read models, versions, files and images out of the catalog, in Civitai's shapes.

Field names follow Civitai's public API so that existing tools can point their base URL
at a node. Our own additions sit under a ``civitas`` key beside Civitai's fields, never
in their place.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.blurhashes import Blurhashes
from node.catalog.civitai import (
    NSFW_LEVELS,
    image_columns,
    post_id,
    supports_generation,
    with_version,
)
from node.catalog.claims import claims, disputes, winners_by_sha256
from node.catalog.image_search import ImageQuery, image_statement, next_cursor
from node.catalog.names import dids_named, usernames
from node.catalog.needed_files import image_shown
from node.catalog.tables import (
    file_details,
    image_resources,
    images,
    model_overrides,
    model_stats,
    model_tags,
    model_versions,
    models,
    shown_versions,
    version_files,
)
from node.db import Database
from node.p2p.tables import authors, blobs, identities, records
from node.p2p.torrent_routes import TorrentIndex
from node.p2p.torrentmeta import magnet

NSFW_LEVEL_NAME = {"PG": "None", "PG13": "Soft", "R": "Mature", "X": "X"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
NUMERIC_META = ("cfgScale", "Denoising strength", "Hires upscale", "clipSkip")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


def civitai_meta(meta_json: str) -> dict[str, Any] | None:
    meta: dict[str, Any] = json.loads(meta_json)
    for key in NUMERIC_META:
        value = meta.get(key)
        if isinstance(value, str):
            try:
                meta[key] = float(value)
            except ValueError:
                pass
    return meta or None


MAX_PEER_HINTS = 8
FILE_TYPE = "Model"  # every file of a version is the model itself (no training data etc.)


@dataclass(frozen=True)
class FileChoice:
    """Civitai's download parameters; None: any. Compared without regard to case."""

    type: str | None = None
    format: str | None = None
    size: str | None = None
    fp: str | None = None

    def matches(self, row: Any) -> bool:
        wanted = (
            (self.type, FILE_TYPE),
            (self.format, row.format),
            (self.size, row.size_type),
            (self.fp, row.fp),
        )
        return all(w is None or (have or "").lower() == w.lower() for w, have in wanted)


class CatalogViews:
    def __init__(self, db: Database, blurhashes: Blurhashes | None = None) -> None:
        self.db = db
        self.blurhashes = blurhashes  # None: images show no blurhash (hash: null)
        self.base_url = ""  # set by the app once the public URL is known
        self.torrent_index: TorrentIndex | None = None

    # --- URLs -----------------------------------------------------------------------

    def download_url(self, version_int: int) -> str:
        return f"{self.base_url}/api/download/models/{version_int}"

    def image_url(self, sha256: str, int_id: int, mime: str, width: int | None = None) -> str:
        transform = f"width={width}" if width else "original=true"
        return f"{self.base_url}/images/{sha256}/{transform}/{int_id}.{EXTENSIONS.get(mime, 'png')}"

    def magnet_for(self, row: Any) -> str:
        """A magnet for a file this node does not hold: its tracker and the peers' BitTorrent
        addresses (the node that published it is among them), no web seed."""
        trackers = self.torrent_index.trackers() if self.torrent_index else []
        return magnet(row.infohash, row.name, row.size, trackers, [], self._remote_hints())

    def _remote_hints(self) -> list[str]:
        index = self.torrent_index
        return sorted(set(index.remote_hints.values()))[:MAX_PEER_HINTS] if index else []

    def _torrent_links(self, row: Any) -> dict[str, str]:
        if not row.infohash:
            return {}
        index = self.torrent_index
        trackers = index.trackers() if index else []
        seeds = index.web_seeds(row.sha256) if index else []
        peers = (index.peer_hints if index else []) + self._remote_hints()
        return {
            "magnet": magnet(row.infohash, row.name, row.size, trackers, seeds, peers),
            "torrentUrl": f"{self.base_url}/federation/v1/torrents/{row.infohash}",
        }

    # --- images ---------------------------------------------------------------------

    def _image(self, row: Any, with_meta: bool = True) -> dict[str, Any]:
        return {
            "id": row.int_id,
            "url": self.image_url(row.sha256, row.int_id, row.mime, row.width),
            "nsfwLevel": NSFW_LEVELS.get(row.rating, 1),
            "nsfw": NSFW_LEVEL_NAME.get(row.rating, "None"),
            "width": row.width,
            "height": row.height,
            "hash": None,
            "type": "image",
            "createdAt": iso(row.created),
            "postId": post_id(row),
            "meta": civitai_meta(row.meta) if with_meta else None,
            "civitas": {"recordId": row.id.hex(), "sha256": row.sha256, "author": row.author},
        }

    async def images_for_versions(
        self, conn: AsyncConnection, version_ids: Sequence[bytes]
    ) -> dict[bytes, list[dict[str, Any]]]:
        out: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        if not version_ids:
            return out
        rows = await conn.execute(
            with_version(sa.select(*image_columns()))
            .where(images.c.version_id.in_(version_ids), image_shown())
            .order_by(images.c.created, images.c.id)
        )
        for row in rows:
            out[row.version_id].append(self._image(row))
        return out

    # --- versions -------------------------------------------------------------------

    def _file(
        self, row: Any, version: Any, details: dict[str, Any], local: set[str]
    ) -> dict[str, Any]:
        hashes = {
            "AutoV1": row.autov1,
            "AutoV2": row.autov2,
            "AutoV3": row.autov3[:12] if row.autov3 else None,
            "SHA256": row.sha256,
            "CRC32": row.crc32,
            "BLAKE3": row.blake3,
        }
        return {
            "id": row.int_id,
            "sizeKB": row.size / 1024,
            "name": row.name,
            "type": FILE_TYPE,
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            # Checked (safetensors only, header validated; nothing unpickled) by the node
            # that published the version, before it signed it.
            "scannedAt": iso(version.created),
            "metadata": {"format": row.format, "size": row.size_type, "fp": row.fp},
            "hashes": {k: v for k, v in hashes.items() if v},
            "downloadUrl": self.download_url(version.int_id),
            "primary": row.is_primary,
            "civitas": {
                "sha256": row.sha256,
                "size": row.size,
                "infohash": row.infohash,
                "pieceLength": row.piece_length,
                **self._torrent_links(row),
                "headerMetadata": details.get(row.sha256, {}),
                "local": row.sha256 in local,
            },
        }

    async def versions(
        self, conn: AsyncConnection, where: Any, *, with_model: bool = False
    ) -> list[dict[str, Any]]:
        """Versions matching ``where`` whose author is their model's author, newest first."""
        rows = (
            await conn.execute(
                sa.select(
                    model_versions,
                    models.c.int_id.label("model_int"),
                    models.c.name.label("model_name"),
                    models.c.type.label("model_type"),
                    models.c.allow_commercial_use.label("model_uses"),
                    models.c.rating.label("model_rating"),
                    models.c.poi.label("model_poi"),
                    sa.func.coalesce(model_stats.c.downloads, 0).label("downloads"),
                )
                .join(
                    models,
                    sa.and_(
                        models.c.root_id == model_versions.c.model_root,
                        models.c.author == model_versions.c.author,
                    ),
                )
                .outerjoin(model_stats, model_stats.c.version_id == model_versions.c.id)
                .where(where)
                .order_by(model_versions.c.created.desc(), model_versions.c.id.desc())
            )
        ).all()
        ids = [row.id for row in rows]
        files: dict[bytes, list[Any]] = defaultdict(list)
        details: dict[str, Any] = {}
        local: set[str] = set()  # files this node holds
        if ids:
            for f in await conn.execute(
                sa.select(version_files)
                .where(version_files.c.version_id.in_(ids))
                .order_by(version_files.c.position)
            ):
                files[f.version_id].append(f)
            shas = [f.sha256 for fs in files.values() for f in fs]
            for d in await conn.execute(
                sa.select(file_details).where(file_details.c.sha256.in_(shas))
            ):
                details[d.sha256] = json.loads(d.header_metadata)
            local = set(
                (
                    await conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256.in_(shas)))
                ).scalars()
            )
        gallery = await self.images_for_versions(conn, ids)
        out = []
        for row in rows:
            version: dict[str, Any] = {
                "id": row.int_id,
                "modelId": row.model_int,
                "name": row.name,
                "createdAt": iso(row.created),
                "updatedAt": iso(row.created),
                "publishedAt": iso(row.created),
                "status": "Published",
                "availability": "Public",
                "supportsGeneration": supports_generation(
                    row.model_type, row.model_uses.split(",")
                ),
                "trainedWords": json.loads(row.trained_words),
                "baseModel": row.base_model,
                "baseModelType": None,
                "description": row.description,
                "stats": {
                    "downloadCount": row.downloads,
                    "ratingCount": 0,
                    "rating": 0,
                    "thumbsUpCount": 0,
                    "thumbsDownCount": 0,
                },
                "files": [self._file(f, row, details, local) for f in files[row.id]],
                "images": gallery[row.id],
                "downloadUrl": self.download_url(row.int_id),
                "civitas": {"recordId": row.id.hex(), "modelRoot": row.model_root.hex()},
            }
            if with_model:
                version["model"] = {
                    "name": row.model_name,
                    "type": row.model_type,
                    "nsfw": row.model_rating in ("R", "X"),
                    "poi": row.model_poi,
                }
            out.append(version)
        return out

    # --- models ---------------------------------------------------------------------

    async def models_by_root(self, roots: Sequence[bytes]) -> list[dict[str, Any]]:
        """Full Civitai model objects for ``roots``, in the given order."""
        if not roots:
            return []
        async with self.db.read() as conn:
            rows = {
                row.root_id: row
                for row in await conn.execute(sa.select(models).where(models.c.root_id.in_(roots)))
            }
            names = await usernames(conn, list({row.author for row in rows.values()}))
            tags: dict[bytes, list[str]] = defaultdict(list)
            for t in await conn.execute(
                sa.select(model_tags)
                .where(model_tags.c.root_id.in_(roots))
                .order_by(model_tags.c.tag)
            ):
                tags[t.root_id].append(t.tag)
            versions = await self.versions(conn, model_versions.c.model_root.in_(roots))
            sources = {
                r.id: r.source
                for r in await conn.execute(
                    sa.select(records.c.id, records.c.source).where(records.c.id.in_(roots))
                )
            }
            flagged_minor = set(
                (
                    await conn.execute(
                        sa.select(model_overrides.c.root_id).where(
                            model_overrides.c.root_id.in_(roots), model_overrides.c.minor
                        )
                    )
                ).scalars()
            )
            frozen = set(
                (
                    await conn.execute(
                        sa.select(identities.c.identity).where(
                            identities.c.frozen,
                            identities.c.identity.in_({r.author for r in rows.values()}),
                        )
                    )
                ).scalars()
            )
        by_model: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for version in versions:
            by_model[version["modelId"]].append(version)
        out = []
        for root in roots:
            row = rows.get(root)
            if row is None:
                continue
            mine = by_model[row.int_id]
            uses = [u for u in row.allow_commercial_use.split(",") if u]
            out.append(
                {
                    "id": row.int_id,
                    "name": row.name,
                    "description": row.description,
                    "type": row.type,
                    "poi": row.poi,
                    "nsfw": row.rating in ("R", "X"),
                    "nsfwLevel": NSFW_LEVELS.get(row.rating, 1),
                    "allowNoCredit": row.allow_no_credit,
                    "allowCommercialUse": uses,
                    "allowDerivatives": row.allow_derivatives,
                    "allowDifferentLicense": row.allow_different_license,
                    # Taken down or withdrawn models are not served at all: never a mode.
                    "mode": None,
                    "availability": "Public",
                    "supportsGeneration": supports_generation(row.type, uses),
                    "stats": {
                        "downloadCount": sum(v["stats"]["downloadCount"] for v in mine),
                        "favoriteCount": 0,
                        "thumbsUpCount": 0,
                        "thumbsDownCount": 0,
                        "commentCount": 0,
                        "ratingCount": 0,
                        "rating": 0,
                        "tippedAmountCount": 0,
                    },
                    "creator": {"username": names[row.author], "image": None},
                    "tags": tags[root],
                    "modelVersions": [
                        {k: v for k, v in ver.items() if k != "modelId"} for ver in mine
                    ],
                    "civitas": {
                        "rootId": root.hex(),
                        "revisionId": row.revision_id.hex(),
                        "author": row.author,
                        # Every record in the log passed signature verification on arrival.
                        "signatureVerified": True,
                        "receivedFrom": sources.get(root),  # a peer's did; null: published here
                        # A moderator of this node flagged it for minor safety.
                        "minorSafety": root in flagged_minor,
                        # Its author's key rotated two ways: nothing new is accepted from
                        # them until an operator settles it.
                        "identityFrozen": row.author in frozen,
                        "license": row.license,
                        "rating": row.rating,
                        "createdAt": iso(row.created),
                        "updatedAt": iso(row.updated),
                    },
                }
            )
        return out

    async def with_blurhashes(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` (Civitai models, versions or images) with each image's ``hash``."""
        if self.blurhashes is not None:
            await self.blurhashes.fill(items)
        return items

    async def root_for_int(self, int_id: int) -> bytes | None:
        async with self.db.read() as conn:
            return await conn.scalar(sa.select(models.c.root_id).where(models.c.int_id == int_id))

    async def version(self, int_id: int) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            found = await self.versions(conn, model_versions.c.int_id == int_id, with_model=True)
        return found[0] if found else None

    async def version_by_hash(self, value: str) -> dict[str, Any] | None:
        """The version that answers for a file with this hash (any Civitai hash type, any
        case): where several authors claim the file, the first-seen claim (see
        :mod:`node.catalog.claims`); the others under ``civitas.disputedBy``."""
        value = value.strip().upper()
        by_length: dict[int, list[Any]] = {
            8: [version_files.c.autov1, version_files.c.crc32],
            10: [version_files.c.autov2],
            12: [sa.func.substr(version_files.c.autov3, 1, 12)],
            64: [version_files.c.sha256, version_files.c.autov3, version_files.c.blake3],
        }
        columns = by_length.get(len(value))
        if not columns or not all(c in "0123456789ABCDEF" for c in value):
            return None
        async with self.db.read() as conn:
            found_claims = await claims(conn, sa.or_(*(c == value for c in columns)))
            if not found_claims:
                return None
            winner = found_claims[0]
            found = await self.versions(
                conn, model_versions.c.id == winner.version_id, with_model=True
            )
        if not found:
            return None
        found[0]["civitas"]["disputedBy"] = disputes(found_claims, winner)
        return found[0]

    async def versions_by_sha256(self, hashes: Sequence[str]) -> list[dict[str, Any]]:
        """For each SHA256, the version that answers for it (as :meth:`version_by_hash`)."""
        wanted = [h.strip().upper() for h in hashes]
        async with self.db.read() as conn:
            found_claims = await claims(conn, version_files.c.sha256.in_(wanted))
            winners = winners_by_sha256(found_claims)
            ids = list(dict.fromkeys(c.version_id for c in winners.values()))
            found = await self.versions(conn, model_versions.c.id.in_(ids), with_model=True)
        by_id = {v["civitas"]["recordId"]: v for v in found}
        for winner in winners.values():
            version = by_id.get(winner.version_id.hex())
            if version is not None:
                disputed = version["civitas"].setdefault("disputedBy", [])
                disputed += [d for d in disputes(found_claims, winner) if d not in disputed]
        return found

    async def model_file_hashes(self, root: bytes) -> list[str]:
        """The SHA256s of every file of the model's versions (shown or not)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(version_files.c.sha256)
                .join(model_versions, model_versions.c.id == version_files.c.version_id)
                .where(model_versions.c.model_root == root)
                .distinct()
            )
            return list(rows.scalars())

    async def primary_file(self, version_int: int) -> Any | None:
        return await self.version_file(version_int, FileChoice())

    async def version_file(self, version_int: int, choice: FileChoice) -> Any | None:
        """The version's file that ``choice`` picks (Civitai's download ``type``,
        ``format``, ``size``, ``fp``): the primary one among those that match, else the
        first. None when the version is unknown or not shown (its model withdrawn) or no
        file matches."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(version_files, model_versions.c.id.label("vid"))
                    .select_from(
                        version_files.join(
                            shown_versions, model_versions.c.id == version_files.c.version_id
                        )
                    )
                    .where(model_versions.c.int_id == version_int)
                    .order_by(version_files.c.is_primary.desc(), version_files.c.position)
                )
            ).all()
        return next((row for row in rows if choice.matches(row)), None)

    async def count_download(self, version_id: bytes) -> None:
        async with self.db.write() as conn:
            updated = await conn.execute(
                model_stats.update()
                .where(model_stats.c.version_id == version_id)
                .values(downloads=model_stats.c.downloads + 1)
            )
            if updated.rowcount == 0:
                await conn.execute(model_stats.insert().values(version_id=version_id, downloads=1))
            version = model_versions.c.id == version_id
            await conn.execute(
                models.update()
                .where(
                    models.c.root_id
                    == sa.select(model_versions.c.model_root).where(version).scalar_subquery(),
                    models.c.author
                    == sa.select(model_versions.c.author).where(version).scalar_subquery(),
                )
                .values(downloads=models.c.downloads + 1)
            )

    async def image_by_sha(self, sha256: str) -> Any | None:
        """A shown image with this file (see :func:`image_shown`), or None."""
        async with self.db.read() as conn:
            return (
                await conn.execute(
                    sa.select(images)
                    .where(images.c.sha256 == sha256.upper(), image_shown())
                    .order_by(images.c.created, images.c.id)
                    .limit(1)
                )
            ).first()

    async def image_id_for_int(self, int_id: int) -> bytes | None:
        async with self.db.read() as conn:
            return await conn.scalar(sa.select(images.c.id).where(images.c.int_id == int_id))

    async def image(self, sha256: str) -> dict[str, Any] | None:
        """One image as its page shows it, or None.

        Civitai's image fields and ``username``, ``modelVersionId`` (the version it was
        published with), and under ``civitas``: its ``rating``, that version
        (``modelVersion``, with its ``model``) and the ``resources`` it was made with,
        each with the catalog's ``modelVersion`` where a hash matches one.
        """
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    with_version(sa.select(*image_columns()))
                    .where(images.c.sha256 == sha256.upper(), image_shown())
                    .order_by(images.c.created, images.c.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            author = (await usernames(conn, [row.author]))[row.author]
            resources = (await self.resources(conn, [row.id]))[row.id]
            linked = {r["modelVersionId"] for r in resources if r["modelVersionId"]}
            found = await self.versions(
                conn,
                sa.or_(
                    model_versions.c.id == row.version_id,
                    model_versions.c.int_id.in_(linked),
                ),
                with_model=True,
            )
        by_int = {v["id"]: v for v in found}
        own_id = row.version_id.hex() if row.version_id else None
        own = next((v for v in found if v["civitas"]["recordId"] == own_id), None)
        item = self._image(row)
        item["username"] = author
        item["modelVersionId"] = own["id"] if own else None
        item["civitas"]["rating"] = row.rating
        item["civitas"]["modelVersion"] = own
        item["civitas"]["resources"] = [
            {**r, "modelVersion": by_int.get(r["modelVersionId"])} for r in resources
        ]
        return item

    async def resources(
        self, conn: AsyncConnection, image_ids: Sequence[bytes]
    ) -> dict[bytes, list[dict[str, Any]]]:
        """What each image was made with, linked to catalog versions where a hash matches."""
        out: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        rows = (
            await conn.execute(
                sa.select(image_resources)
                .where(image_resources.c.image_id.in_(image_ids))
                .order_by(image_resources.c.image_id, image_resources.c.position)
            )
        ).all()
        linked = await self._versions_for_hashes(conn, {r.hash for r in rows if r.hash})
        for r in rows:
            version = linked.get(r.hash or "")
            out[r.image_id].append(
                {
                    "name": r.name,
                    "type": r.type,
                    "hash": r.hash,
                    "weight": r.weight,
                    "modelVersionId": version[0] if version else None,
                    "modelId": version[1] if version else None,
                }
            )
        return out

    async def _versions_for_hashes(
        self, conn: AsyncConnection, hashes: set[str]
    ) -> dict[str, tuple[int, int]]:
        """hash -> (version int id, model int id), for hashes of any Civitai type."""
        if not hashes:
            return {}
        by_len: dict[int, set[str]] = defaultdict(set)
        for h in hashes:
            by_len[len(h)].add(h)
        column_for = {
            8: version_files.c.autov1,
            10: version_files.c.autov2,
            12: sa.func.substr(version_files.c.autov3, 1, 12),
            64: version_files.c.sha256,
        }
        clauses = [column_for[n].in_(hs) for n, hs in by_len.items() if n in column_for]
        if not clauses:
            return {}
        out: dict[str, tuple[int, int]] = {}
        for claim in await claims(conn, sa.or_(*clauses)):  # best claim first
            for value in (claim.autov1, claim.autov2, (claim.autov3 or "")[:12], claim.sha256):
                if value in hashes:
                    out.setdefault(value, (claim.version_int, claim.model_int))
        return out

    async def image_list(
        self, q: ImageQuery, username: str | None, with_meta: bool
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of shown images (see :mod:`node.catalog.image_search` and
        :func:`image_shown`) and, when more follow, the cursor of the next page."""
        async with self.db.read() as conn:
            if username is not None:  # a local name, or name@node
                q.authors = await dids_named(conn, username)
            rows = (await conn.execute(image_statement(q).where(image_shown()))).all()
            names = await usernames(conn, list({r.author for r in rows}))
            resources = await self.resources(conn, [r.id for r in rows])
        out = []
        for row in rows[: q.limit]:
            item = self._image(row, with_meta)
            item["username"] = names[row.author]
            item["civitas"]["resources"] = resources[row.id]
            out.append(item)
        return out, next_cursor(rows[q.limit - 1]) if len(rows) > q.limit else None

    async def creators(self, query: str | None, limit: int, page: int) -> list[dict[str, Any]]:
        count = sa.func.count(models.c.root_id)
        stmt = (
            sa.select(authors.c.did, count.label("models"))
            .select_from(authors.join(models, models.c.author == authors.c.did))
            .group_by(authors.c.did)
            .order_by(count.desc(), authors.c.did)
            .limit(limit)
            .offset((page - 1) * limit)
        )
        if query:
            stmt = stmt.where(sa.func.lower(authors.c.name).contains(query.lower()))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
            names = await usernames(conn, [r.did for r in rows])
        return [
            {
                "username": names[r.did],
                "modelCount": r.models,
                "link": f"{self.base_url}/api/v1/models?username={quote(names[r.did])}",
                "image": None,
                "civitas": {"did": r.did},
            }
            for r in rows
        ]

    async def creator_count(self, query: str | None) -> int:
        """How many creators :meth:`creators` pages through."""
        stmt = sa.select(sa.func.count(sa.distinct(models.c.author))).select_from(
            authors.join(models, models.c.author == authors.c.did)
        )
        if query:
            stmt = stmt.where(sa.func.lower(authors.c.name).contains(query.lower()))
        async with self.db.read() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def tag_count(self, query: str | None) -> int:
        """How many tags :meth:`tags` pages through."""
        stmt = sa.select(sa.func.count(sa.distinct(model_tags.c.tag)))
        if query:
            stmt = stmt.where(model_tags.c.tag.contains(query.lower()))
        async with self.db.read() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def tags(self, query: str | None, limit: int, page: int) -> list[dict[str, Any]]:
        count = sa.func.count(model_tags.c.root_id)
        stmt = (
            sa.select(model_tags.c.tag, count.label("models"))
            .group_by(model_tags.c.tag)
            .order_by(count.desc(), model_tags.c.tag)
            .limit(limit)
            .offset((page - 1) * limit)
        )
        if query:
            stmt = stmt.where(model_tags.c.tag.contains(query.lower()))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            {
                "name": r.tag,
                "modelCount": r.models,
                "link": f"{self.base_url}/api/v1/models?tag={r.tag}",
            }
            for r in rows
        ]
