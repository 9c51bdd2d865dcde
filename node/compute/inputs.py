"""Training images: streamed from an upload (image parts or a zip) to temp files, checked,
then kept by SHA256.

Captions come from the job's ``captions`` map (file name → text) or, kohya-style, from a
``.txt`` file with the same stem beside each image in the zip. Nothing is held in memory
whole but one image while it is decoded (:func:`node.catalog.images.inspect_image`).

A zip is an attacker's favourite input, so it is read in this order, refusing early:
the end record (entry count, central directory size) before :mod:`zipfile` parses
anything; then every entry's declared size, method and compression ratio from the
central directory, and their sum against the job's byte budget, before anything is
inflated; then each entry is streamed to a temp file while the bytes that actually come
out are counted, never more than the entry declared, the per-image cap or the budget.
Every temp file is removed on every failure (:meth:`TrainingInputs.discard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from node.catalog.images import MAX_IMAGE_BYTES, ImageInfo, inspect_image
from node.catalog.ingest_limits import ImageDecodes
from node.compute.queue import TrainImage
from node.errors import BadRequest, PayloadTooLarge
from node.p2p.filestore import FileStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_CAPTION = 2000
MAX_CAPTION_FILE = 64 * 1024  # a .txt caption entry, as stored
RATIO_FLOOR = 1024 * 1024  # entries inflating to less than this are never a bomb
CHUNK = 1024 * 1024
MAX_NAME_BYTES = 1024  # per central directory entry, name and extras included

_EOCD = struct.Struct("<4sHHHHLLH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQHHLLQQQQ")


@dataclass(frozen=True)
class InputLimits:
    max_images: int
    max_bytes: int  # all of a job's images (and captions) together, as decoded
    max_ratio: int  # most uncompressed bytes per compressed byte of one zip entry

    @property
    def max_entries(self) -> int:
        """Entries a zip may list: images, captions, and room for macOS ``._`` twins."""
        return 4 * self.max_images + 64


@dataclass(frozen=True)
class Upload:
    name: str
    path: Path  # a temp file until it is kept
    size: int


def _end_record(handle: BinaryIO, size: int) -> tuple[int, int]:
    """The entry count and central directory size the zip's end record declares.

    Found as :mod:`zipfile` finds it (the last 22 bytes, else the last signature in the
    final 64 KiB), so the numbers checked are the ones zipfile then uses.
    """
    tail_len = min(size, _EOCD.size + 0xFFFF + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = len(tail) - _EOCD.size
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise BadRequest("the 'zip' part is not a zip archive")
    _, _, _, _, entries, directory, _, _ = _EOCD.unpack_from(tail, at)
    locator = at - _ZIP64_LOCATOR.size
    if locator >= _ZIP64_EOCD.size and tail[locator : locator + 4] == b"PK\x06\x07":
        record = tail[locator - _ZIP64_EOCD.size : locator]
        if record[:4] == b"PK\x06\x06":
            fields = _ZIP64_EOCD.unpack(record)
            entries, directory = fields[7], fields[8]
    return entries, directory


@dataclass
class TrainingInputs:
    """One job's training images on their way in, under one byte budget."""

    temp_dir: Path
    limits: InputLimits
    uploads: list[Upload] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)  # from the zip, by image stem
    used: int = 0  # bytes taken from the budget so far
    _temps: list[Path] = field(default_factory=list)

    # --- the budget and temp files ---------------------------------------------------

    def _temp(self) -> Path:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        path = self.temp_dir / f"{uuid.uuid4().hex}.part"
        self._temps.append(path)
        return path

    def _charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"a training job's images may total at most {self.limits.max_bytes:,} bytes "
                "(compute.max_train_bytes)"
            )

    def _add_image(self, name: str, path: Path, size: int) -> None:
        if len(self.uploads) >= self.limits.max_images:
            raise BadRequest(f"a training job takes at most {self.limits.max_images} images")
        self.uploads.append(Upload(name, path, size))

    def discard(self) -> None:
        """Remove every temp file still here (kept images were moved out already)."""
        for path in self._temps:
            path.unlink(missing_ok=True)
        self._temps.clear()

    # --- multipart parts -------------------------------------------------------------

    async def _spool(
        self,
        read_chunk: Callable[[int], Awaitable[bytes]],
        cap: int,
        what: str,
        *,
        charge: bool,
    ) -> tuple[Path, int]:
        """Stream a part to a temp file; images are charged to the budget as they come."""
        path = self._temp()
        size = 0
        handle = await asyncio.to_thread(open, path, "wb")
        try:
            while chunk := await read_chunk(CHUNK):
                size += len(chunk)
                if size > cap:
                    raise PayloadTooLarge(f"{what} is larger than {cap:,} bytes")
                if charge:
                    self._charge(len(chunk))
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        return path, size

    async def add_image_part(
        self, name: str, read_chunk: Callable[[int], Awaitable[bytes]]
    ) -> None:
        if len(self.uploads) >= self.limits.max_images:
            raise BadRequest(f"a training job takes at most {self.limits.max_images} images")
        path, size = await self._spool(read_chunk, MAX_IMAGE_BYTES, f"image {name!r}", charge=True)
        self._add_image(name, path, size)

    async def add_zip_part(self, read_chunk: Callable[[int], Awaitable[bytes]]) -> None:
        path, _ = await self._spool(
            read_chunk,
            self.limits.max_bytes,
            "the 'zip' part (compute.max_train_bytes)",
            charge=False,
        )
        try:
            await asyncio.to_thread(self.add_zip, path)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    # --- zips (blocking: run in a thread) --------------------------------------------

    def add_zip(self, path: Path) -> None:
        """The images and ``.txt`` captions of the zip at ``path``, each to a temp file.

        On any refusal every temp file of this upload is removed before the error rises.
        """
        try:
            with open(path, "rb") as handle:
                self._check_end_record(handle, path.stat().st_size)
                with zipfile.ZipFile(handle) as archive:
                    wanted = self._check_directory(archive)
                    for entry, is_caption in wanted:
                        self._extract(archive, entry, is_caption)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error) as exc:
            self.discard()
            raise BadRequest(f"the zip archive is damaged: {exc}") from None
        except BaseException:
            self.discard()  # a refused zip refuses the whole upload: nothing stays behind
            raise

    def _check_end_record(self, handle: BinaryIO, size: int) -> None:
        entries, directory = _end_record(handle, size)
        most = self.limits.max_entries
        if entries > most or directory > most * MAX_NAME_BYTES:
            raise BadRequest(
                f"the zip lists {entries:,} entries in {directory:,} bytes; at most {most:,} "
                f"entries are read (4 x compute.max_train_images + 64)"
            )

    def _check_directory(self, archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, bool]]:
        """What to extract, after every declared size, method and ratio passed."""
        wanted: list[tuple[zipfile.ZipInfo, bool]] = []
        images = self.limits.max_images - len(self.uploads)
        declared = 0
        for entry in archive.infolist()[: self.limits.max_entries + 1]:
            path = PurePosixPath(entry.filename)
            if entry.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
                continue
            suffix = path.suffix.lower()
            if suffix not in (*IMAGE_SUFFIXES, ".txt"):
                continue
            is_caption = suffix == ".txt"
            if entry.flag_bits & 0x1:
                raise BadRequest(f"{entry.filename} in the zip is encrypted")
            if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BadRequest(f"{entry.filename}: zip entries must be stored or deflated")
            cap = MAX_CAPTION_FILE if is_caption else MAX_IMAGE_BYTES
            if entry.file_size > cap:
                raise PayloadTooLarge(f"{entry.filename} in the zip is over {cap:,} bytes")
            if entry.file_size > max(RATIO_FLOOR, entry.compress_size * self.limits.max_ratio):
                raise PayloadTooLarge(
                    f"{entry.filename} in the zip claims a compression ratio over "
                    f"{self.limits.max_ratio}:1 (compute.max_zip_ratio): refused unread"
                )
            if not is_caption:
                images -= 1
                if images < 0:
                    raise BadRequest(
                        f"a training job takes at most {self.limits.max_images} images"
                    )
            declared += entry.file_size
            wanted.append((entry, is_caption))
        if self.used + declared > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"the zip's images come to {declared:,} bytes; a training job's images may "
                f"total at most {self.limits.max_bytes:,} bytes (compute.max_train_bytes)"
            )
        return wanted

    def _extract(self, archive: zipfile.ZipFile, entry: zipfile.ZipInfo, is_caption: bool) -> None:
        """Stream one entry out, counting the bytes that really come out of it."""
        cap = min(entry.file_size, MAX_CAPTION_FILE if is_caption else MAX_IMAGE_BYTES)
        path = PurePosixPath(entry.filename)
        target = None if is_caption else self._temp()
        text = bytearray()
        read = 0
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(archive.open(entry))
            out = stack.enter_context(open(target, "wb")) if target is not None else None
            while chunk := source.read(CHUNK):
                read += len(chunk)
                if read > cap:
                    raise PayloadTooLarge(f"{entry.filename} inflates past its declared size")
                self._charge(len(chunk))
                if out is None:
                    text += chunk
                else:
                    out.write(chunk)
        if target is None:
            self.captions[path.stem] = text.decode("utf-8", "replace").strip()[:MAX_CAPTION]
        else:
            self._add_image(path.name, target, read)

    # --- keeping ---------------------------------------------------------------------

    async def keep(
        self, store: FileStore, captions: Mapping[str, str], decodes: ImageDecodes
    ) -> list[TrainImage]:
        """Decode every image (one at a time, in the node's decode pool), then store each
        by SHA256."""
        checked = []
        for upload in self.uploads:
            info = await decodes.run(_inspect_file, upload.path)
            checked.append((upload, info, caption_for(upload.name, captions, self.captions)))
        paths = [
            await asyncio.to_thread(store.commit_temp, upload.path, info.sha256)
            for upload, info, _ in checked
        ]
        kept = []
        async with store.db.write() as conn:
            for (upload, info, caption), path in zip(checked, paths, strict=True):
                await store.add_row(conn, info.sha256, info.size, path, in_place=False)
                kept.append(TrainImage(upload.name, info.sha256, caption))
        return kept


def _inspect_file(path: Path) -> ImageInfo:
    return inspect_image(path.read_bytes())


def caption_for(name: str, captions: Mapping[str, str], zip_captions: Mapping[str, str]) -> str:
    stem = PurePosixPath(name).stem
    caption = captions.get(name, captions.get(stem, zip_captions.get(stem, "")))
    if not isinstance(caption, str) or len(caption) > MAX_CAPTION:
        raise BadRequest(f"the caption of {name} must be a string of at most {MAX_CAPTION}")
    return caption


def captions_of(data: Mapping[str, Any]) -> dict[str, str]:
    captions = data.get("captions", {})
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise BadRequest("'captions' must map image file names to caption text")
    return captions
