"""Publishing: a safetensors file (by path or streamed upload) becomes signed records.

The file is checked (no pickle; strict header) before anything is kept, read **once**
(hashed while it is copied into the store, or hashed where it lies for in-place
seeding), and then the ``model`` / ``model_version`` / ``image`` records, the store row
and the file's details are committed in one transaction. Publishing the same file twice
by the same author is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from node.catalog import schemas
from node.catalog.detect import Detection, detect
from node.catalog.hashing import FileHashes, StreamHasher, hash_file_async
from node.catalog.images import ImageInfo, inspect_image, served_copy
from node.catalog.ingest_limits import ImageDecodes, IngestSlots, checked_start
from node.catalog.safetensors import SafetensorsHeader, read_header, refuse_pickle
from node.catalog.tables import file_details, model_versions, models, version_files
from node.db import Database
from node.errors import AuthorBlocked, BadRequest, Forbidden, NotFound, SourceChanged
from node.p2p.filestore import FileStore, store_error
from node.p2p.keys import SigningKey
from node.p2p.log import RecordLog
from node.p2p.records import Record, sign_record
from node.p2p.rotation import identity_of
from node.p2p.torrent_routes import save_torrent
from node.p2p.torrentmeta import TorrentMeta, make_torrent, piece_length_for

BLOCK = 4 * 1024 * 1024
DEFAULT_COMMERCIAL_USE = ("Image", "RentCivit", "Rent", "Sell")


class IngestGate(Protocol):
    """Asked before a file is accepted (moderation implements it: listed SHA256s)."""

    async def refuse_file(self, sha256: str) -> str | None: ...


@dataclass
class ModelFields:
    name: str
    type: str | None = None  # None: what detection says
    description: str = ""
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    rating: str = "PG"
    poi: bool = False
    allow_no_credit: bool = True
    allow_commercial_use: list[str] = field(default_factory=lambda: list(DEFAULT_COMMERCIAL_USE))
    allow_derivatives: bool = True
    allow_different_license: bool = True

    def body(self, detected_type: str | None) -> dict[str, Any]:
        model_type = self.type or detected_type
        if model_type is None:
            raise BadRequest("could not tell what kind of model this is: say --type")
        return {
            "name": self.name,
            "type": model_type,
            "description": self.description,
            "tags": self.tags,
            "rating": self.rating,
            "poi": self.poi,
            **({"license": self.license} if self.license else {}),
            "permissions": {
                "allow_no_credit": self.allow_no_credit,
                "allow_commercial_use": self.allow_commercial_use,
                "allow_derivatives": self.allow_derivatives,
                "allow_different_license": self.allow_different_license,
            },
        }


@dataclass
class VersionFields:
    name: str = "v1"
    base_model: str | None = None  # None: what detection says
    description: str = ""
    trained_words: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more body fields (attestation)


@dataclass(frozen=True)
class Published:
    model_root: bytes
    version_id: bytes
    sha256: str
    new: bool
    warnings: tuple[str, ...] = ()
    image_ids: tuple[bytes, ...] = ()


def _warnings(model: ModelFields, version: VersionFields, found: Detection) -> list[str]:
    notes = []
    if model.type and found.model_type and model.type != found.model_type:
        notes.append(f"you said type {model.type}, the file looks like {found.model_type}")
    if version.base_model and found.base_model and version.base_model != found.base_model:
        notes.append(
            f"you said base model {version.base_model}, the file looks like {found.base_model}"
        )
    return notes


def _file_entry(
    name: str, hashes: FileHashes, found: Detection, torrent: TorrentMeta
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "size": hashes.size,
        "sha256": bytes.fromhex(hashes.sha256),
        "blake3": bytes.fromhex(hashes.blake3),
        "crc32": bytes.fromhex(hashes.crc32),
        "format": "SafeTensor",
        "primary": True,
        "infohash": bytes.fromhex(torrent.infohash),
        "piece_length": torrent.piece_length,
    }
    if hashes.autov1:
        entry["autov1"] = bytes.fromhex(hashes.autov1)
    if hashes.autov3_full:
        entry["autov3"] = bytes.fromhex(hashes.autov3_full)
    if found.precision in schemas.PRECISIONS:
        entry["fp"] = found.precision
    if found.size in schemas.SIZES:
        entry["size_type"] = found.size
    return entry


@dataclass(frozen=True)
class _Ingested:
    """A file read once: what its header says, its hashes, and where it now lies."""

    filename: str
    header: SafetensorsHeader
    hashes: FileHashes
    temp: Path | None  # in the store's temp folder, until committed
    in_place: Path | None  # kept where the operator has it


def _prepare_previews(images: Sequence[bytes]) -> list[tuple[bytes, ImageInfo]]:
    """Strip location data first, so that what is stored and named is the clean copy."""
    out = []
    for data in images:
        clean = served_copy(data)  # refuses non-images and bombs before rewriting anything
        out.append((clean, inspect_image(clean)))
    return out


def _checked_header(path: Path, filename: str) -> SafetensorsHeader:
    """Refuse pickles by name and magic, then validate the safetensors header (blocking)."""
    with open(path, "rb") as handle:
        refuse_pickle(handle.read(16), filename)
    return read_header(path)


def copy_and_hash(
    source: Path, temp: Path | None, header: SafetensorsHeader
) -> tuple[FileHashes, int]:
    """The single read: every block goes to the hashers (torrent pieces included) and,
    unless the file is seeded in place, to the copy in the store.

    A file still being written, truncated or replaced meanwhile is refused: the bytes read
    must be the length its (already validated) header describes, and its size and mtime
    must be the same before and after the read. Returns the hashes and the mtime (ns) they
    hold for, by which a file seeded in place is later seen to change."""
    before = os.stat(source)
    _same_length(source, before.st_size, header)
    hasher = StreamHasher(piece_length=piece_length_for(header.file_size))
    read = 0
    try:
        with open(source, "rb") as src:
            out = open(temp, "wb") if temp else None
            try:
                while block := src.read(BLOCK):
                    read += len(block)
                    if read > header.file_size:
                        break  # growing: refused below, without reading the rest
                    hasher.update(block)
                    if out:
                        out.write(block)
            finally:
                if out:
                    out.close()
            after = os.fstat(src.fileno())
        _same_length(source, read, header)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise SourceChanged(
                f"{source} changed while it was being published ({before.st_size} bytes, "
                f"then {after.st_size}, modified meanwhile): wait until it is fully "
                "written, then publish it again"
            )
        return hasher.finish(), before.st_mtime_ns
    except BaseException:
        hasher.abort()
        raise


def _same_length(source: Path, length: int, header: SafetensorsHeader) -> None:
    if length != header.file_size:
        raise SourceChanged(
            f"{source} is {length} bytes but its safetensors header describes "
            f"{header.file_size}: it is truncated or still being written; publish it "
            "again once it is complete"
        )


class Publisher:
    def __init__(
        self,
        db: Database,
        log: RecordLog,
        store: FileStore,
        gate: IngestGate | None = None,
        on_stored: Callable[[TorrentMeta, Path, str], None] | None = None,
        slots: IngestSlots | None = None,
        decodes: ImageDecodes | None = None,
    ) -> None:
        self.slots = slots or IngestSlots()
        self.decodes = decodes or ImageDecodes()  # every image decode, node-wide
        self.db = db
        self.log = log
        self.store = store
        self.gate = gate
        self.on_stored = on_stored  # the torrent engine seeds what is stored

    async def publish_file(
        self,
        author: SigningKey,
        source: Path,
        model: ModelFields,
        version: VersionFields,
        *,
        model_root: bytes | None = None,
        images: Sequence[bytes] = (),
        in_place: bool = False,
    ) -> Published:
        """Publish a file on this node's disk (copied into the store, or kept in place)."""
        if not await asyncio.to_thread(source.is_file):
            raise NotFound(f"{source} is not a file on the node's disk")
        async with self.slots.hold(wait=True):
            return await self._publish_file(
                author, source, model, version, model_root, images, in_place
            )

    async def _publish_file(
        self,
        author: SigningKey,
        source: Path,
        model: ModelFields,
        version: VersionFields,
        model_root: bytes | None,
        images: Sequence[bytes],
        in_place: bool,
    ) -> Published:
        header = await asyncio.to_thread(_checked_header, source, source.name)
        previews = await self.decodes.run(_prepare_previews, images)
        temp = None if in_place else self.store.temp_path()
        try:
            with self._storing():
                hashes, mtime_ns = await asyncio.to_thread(copy_and_hash, source, temp, header)
            ingested = _Ingested(source.name, header, hashes, temp, source if in_place else None)
            published = await self._commit(author, ingested, model, version, model_root, previews)
            if in_place:  # the state it was hashed in: a later change is seen on serve
                self.store.stamp(hashes.sha256, hashes.size, mtime_ns)
            return published
        finally:
            if temp is not None:
                self.store.discard(temp)

    async def publish_stream(
        self,
        author: SigningKey,
        filename: str,
        chunks: AsyncIterator[bytes],
        model: ModelFields,
        version: VersionFields,
        *,
        model_root: bytes | None = None,
        images: Sequence[bytes] = (),
        expected_size: int | None = None,
    ) -> Published:
        """Publish an upload, hashed and written to the store as it streams in.

        Torrent pieces are hashed in the same pass when ``expected_size`` (the request's
        length) picks the same piece length as the real size; otherwise they take a
        second read of the stored file. An HTTP route holds the upload's slot and paces
        its whole body (:meth:`IngestSlots.upload`) before it calls this.
        """
        refuse_pickle(b"", filename)
        async with self.slots.hold(wait=False):
            return await self._publish_stream(
                author,
                filename,
                checked_start(chunks, filename),
                model,
                version,
                model_root,
                images,
                expected_size,
            )

    async def _publish_stream(
        self,
        author: SigningKey,
        filename: str,
        chunks: AsyncIterator[bytes],
        model: ModelFields,
        version: VersionFields,
        model_root: bytes | None,
        images: Sequence[bytes],
        expected_size: int | None,
    ) -> Published:
        previews = await self.decodes.run(_prepare_previews, images)
        temp = self.store.temp_path()
        guess = piece_length_for(expected_size or 0)
        hasher = StreamHasher(piece_length=guess)
        try:
            with self._storing():
                out = await asyncio.to_thread(open, temp, "wb")
                try:
                    async for chunk in chunks:
                        await hasher.aupdate(chunk)
                        await asyncio.to_thread(out.write, chunk)
                finally:
                    await asyncio.to_thread(out.close)
            hashes = await hasher.afinish()
            if piece_length_for(hashes.size) != guess:
                hashes = await hash_file_async(temp, piece_length=piece_length_for(hashes.size))
            header = await asyncio.to_thread(_checked_header, temp, filename)
            ingested = _Ingested(filename, header, hashes, temp, None)
            return await self._commit(author, ingested, model, version, model_root, previews)
        except BaseException:
            hasher.abort()
            raise
        finally:
            self.store.discard(temp)

    async def _commit(
        self,
        author: SigningKey,
        ingested: _Ingested,
        model: ModelFields,
        version: VersionFields,
        model_root: bytes | None,
        previews: list[tuple[bytes, ImageInfo]],
    ) -> Published:
        hashes, header = ingested.hashes, ingested.header
        if self.gate is not None and (reason := await self.gate.refuse_file(hashes.sha256)):
            raise Forbidden(reason)
        if await self.log.blocked_among([author.did]):  # before anything is stored
            raise AuthorBlocked("this node blocked your author key; you cannot publish here")
        existing = await self._existing_version(author.did, hashes.sha256)
        if existing is not None:
            return Published(existing[0], existing[1], hashes.sha256, new=False)
        found = detect(header)
        notes = _warnings(model, version, found)
        assert hashes.piece_length is not None
        torrent = make_torrent(ingested.filename, hashes.size, hashes.piece_length, hashes.pieces)
        batch: list[Record] = []
        if model_root is None:
            model_record = sign_record(author, schemas.MODEL, model.body(found.model_type))
            batch.append(model_record)
            model_root = model_record.id
        else:
            await self._check_owner(author.did, model_root)
        base_model = version.base_model or found.base_model
        if base_model is None:
            raise BadRequest("could not tell the base model: say --base-model")
        version_record = sign_record(
            author,
            schemas.MODEL_VERSION,
            {
                "model": model_root,
                "name": version.name,
                "base_model": base_model,
                "description": version.description,
                "trained_words": version.trained_words,
                "files": [_file_entry(ingested.filename, hashes, found, torrent)],
                **version.extra,
            },
        )
        batch.append(version_record)
        image_records = [
            sign_record(author, schemas.IMAGE, _image_body(info, version_record.id, model.rating))
            for _, info in previews
        ]
        batch += image_records
        for record in batch:
            self.log.types.check_body(record)
        # Files reach their content address before the rows that name them commit.
        with self._storing():
            if ingested.in_place is not None:
                stored_at = ingested.in_place
            else:
                assert ingested.temp is not None
                stored_at = await asyncio.to_thread(
                    self.store.commit_temp, ingested.temp, hashes.sha256
                )
            image_paths = [await self._store_bytes(data, info.sha256) for data, info in previews]
        async with self.db.write() as conn:
            await self.store.add_row(
                conn, hashes.sha256, hashes.size, stored_at, in_place=ingested.in_place is not None
            )
            for (_, info), path in zip(previews, image_paths, strict=True):
                await self.store.add_row(conn, info.sha256, info.size, path, in_place=False)
            await self._save_details(conn, hashes.sha256, header, found)
            await save_torrent(conn, torrent, hashes.sha256)
            for record in batch:
                await self.log.append_in(conn, record)
        if self.on_stored is not None:
            self.on_stored(torrent, stored_at, hashes.sha256)
        return Published(
            model_root,
            version_record.id,
            hashes.sha256,
            new=True,
            warnings=tuple(notes),
            image_ids=tuple(r.id for r in image_records),
        )

    async def publish_image(
        self,
        author: SigningKey,
        data: bytes,
        version_id: bytes,
        *,
        rating: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Record, ImageInfo]:
        """One image shown under a model version, by the rules an upload's previews follow:
        decoded and checked; refused if a takedown lists it or the author is blocked; rated
        as its model is (a stricter ``rating`` stated by the author wins); appended through
        the moderation gate (the node's rating policy, takedown and look-alike holds)."""
        if rating is not None and rating not in schemas.RATINGS:
            raise BadRequest(f"'rating' must be one of {', '.join(schemas.RATINGS)}")
        info = await self.decodes.run(inspect_image, data)
        if self.gate is not None and (reason := await self.gate.refuse_file(info.sha256)):
            raise Forbidden(reason)
        if await self.log.blocked_among([author.did]):
            raise AuthorBlocked("this node blocked your author key; you cannot publish here")
        async with self.db.read() as conn:
            model_rating = await conn.scalar(
                sa.select(models.c.rating)
                .join(model_versions, model_versions.c.model_root == models.c.root_id)
                .where(model_versions.c.id == version_id)
            )
        if model_rating is None:
            raise NotFound("this node has no such model version")
        chosen = max((r for r in (model_rating, rating) if r), key=_rating_rank)
        body = {**_image_body(info, version_id, chosen), **(extra or {})}
        record = sign_record(author, schemas.IMAGE, body)
        self.log.types.check_body(record)
        path = await self._store_bytes(data, info.sha256)
        async with self.db.write() as conn:
            await self.store.add_row(conn, info.sha256, info.size, path, in_place=False)
            await self.log.append_in(conn, record)
        return record, info

    @contextlib.contextmanager
    def _storing(self) -> Iterator[None]:
        """A full or read-only store while writing to it: one line naming the store."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            raise store_error(exc, self.store.root, "the file store") from None

    async def _store_bytes(self, data: bytes, sha256: str) -> Path:
        temp = self.store.temp_path()
        await asyncio.to_thread(temp.write_bytes, data)
        return await asyncio.to_thread(self.store.commit_temp, temp, sha256)

    async def _save_details(
        self, conn: Any, sha256: str, header: SafetensorsHeader, found: Detection
    ) -> None:
        exists = await conn.scalar(
            sa.select(file_details.c.sha256).where(file_details.c.sha256 == sha256)
        )
        if exists is None:
            await conn.execute(
                file_details.insert().values(
                    sha256=sha256,
                    header_metadata=json.dumps(header.metadata),
                    detected_type=found.model_type,
                    detected_base_model=found.base_model,
                )
            )

    async def _existing_version(self, author: str, sha256: str) -> tuple[bytes, bytes] | None:
        async with self.db.read() as conn:
            author = await identity_of(conn, author)  # rows name identities, not keys
            row = (
                await conn.execute(
                    sa.select(model_versions.c.model_root, model_versions.c.id)
                    .join(version_files, version_files.c.version_id == model_versions.c.id)
                    # only a model still shown counts: a withdrawn one may be published anew
                    .join(models, models.c.root_id == model_versions.c.model_root)
                    .where(version_files.c.sha256 == sha256, model_versions.c.author == author)
                    .limit(1)
                )
            ).first()
        return (row.model_root, row.id) if row is not None else None

    async def _check_owner(self, author: str, root: bytes) -> None:
        async with self.db.read() as conn:
            author = await identity_of(conn, author)
            owner = await conn.scalar(sa.select(models.c.author).where(models.c.root_id == root))
        if owner is None:
            raise NotFound("no such model on this node")
        if owner != author:
            raise Forbidden("only the model's author may add versions or edit it")

    async def withdraw(self, author: SigningKey, root: bytes, reason: str | None = None) -> bytes:
        """Withdraw a model with everything under it: a signed, final ``tombstone``."""
        await self._check_owner(author.did, root)
        body: dict[str, Any] = {"target": root}
        if reason:
            body["reason"] = reason
        record = sign_record(author, schemas.TOMBSTONE, body)
        return (await self.log.accept_verified([record]))[0].record.id

    async def revise_model(self, author: SigningKey, root: bytes, fields: ModelFields) -> bytes:
        """Publish a revision of a model (an edit): a new ``model`` record naming its root."""
        await self._check_owner(author.did, root)
        async with self.db.read() as conn:
            current_type = await conn.scalar(
                sa.select(models.c.type).where(models.c.root_id == root)
            )
        record = sign_record(author, schemas.MODEL, {**fields.body(current_type), "root": root})
        appended = (await self.log.accept_verified([record]))[0]
        return appended.record.id


def _rating_rank(rating: str) -> int:
    return schemas.RATINGS.index(rating) if rating in schemas.RATINGS else len(schemas.RATINGS)


def _image_body(info: ImageInfo, version_id: bytes, rating: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sha256": bytes.fromhex(info.sha256),
        "width": info.width,
        "height": info.height,
        "mime": info.mime,
        "size": info.size,
        "rating": rating,
        "model_version": version_id,
        "meta": record_safe(info.meta or {}),
    }
    if info.pdq is not None:
        body["pdq"] = info.pdq
        body["pdq_quality"] = info.pdq_quality
    resources = (info.meta or {}).get("resources")
    if isinstance(resources, list):
        body["resources"] = [_resource(r) for r in resources[:64] if isinstance(r, dict)]
    return body


def _resource(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(res.get("name"), str):
        out["name"] = res["name"][:255]
    if res.get("type") in schemas.RESOURCE_TYPES:
        out["type"] = res["type"]
    if isinstance(res.get("hash"), str):
        out["hash"] = res["hash"][:64]
    if isinstance(res.get("weight"), int | float) and not isinstance(res.get("weight"), bool):
        out["weight"] = str(res["weight"])
    return out


def record_safe(value: Any, depth: int = 0) -> Any:
    """Generation metadata as a record can carry it: floats as decimal strings, bounded."""
    if depth > 5:
        return None
    if isinstance(value, float):
        return (
            repr(value) if value == value and value not in (float("inf"), float("-inf")) else None
        )
    if isinstance(value, dict):
        return {
            str(k)[:64]: record_safe(v, depth + 1)
            for k, v in list(value.items())[:100]
            if k != "comfy"  # the ComfyUI graph stays in the image file
        }
    if isinstance(value, list | tuple):
        return [record_safe(v, depth + 1) for v in list(value)[:64]]
    if isinstance(value, str):
        return value[:8000]
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)
    return str(value)[:200]
