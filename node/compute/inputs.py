"""Training images: read from an upload (files or a zip), checked, kept by SHA256.

Captions come from the job's ``captions`` map (file name → text) or, kohya-style, from a
``.txt`` file with the same stem beside each image in the zip. Every image is decoded
(:func:`node.catalog.images.inspect_image`) before it is kept, and a zip is read entry by
entry with its declared sizes checked first, so a zip bomb is refused unread.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from node.catalog.images import MAX_IMAGE_BYTES, inspect_image
from node.compute.queue import TrainImage
from node.errors import BadRequest, PayloadTooLarge
from node.p2p.filestore import FileStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_CAPTION = 2000


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def unzip(data: bytes, max_images: int) -> tuple[list[Upload], dict[str, str]]:
    """The images and ``.txt`` captions (by image stem) in a zip archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BadRequest("the 'zip' part is not a zip archive") from None
    images: list[Upload] = []
    captions: dict[str, str] = {}
    with archive:
        for entry in archive.infolist():
            path = PurePosixPath(entry.filename)
            if entry.is_dir() or path.name.startswith("."):
                continue
            suffix = path.suffix.lower()
            if suffix not in (*IMAGE_SUFFIXES, ".txt"):
                continue
            if entry.file_size > MAX_IMAGE_BYTES:
                raise PayloadTooLarge(f"{entry.filename} in the zip is too large")
            if suffix == ".txt":
                text = archive.read(entry)[: MAX_CAPTION * 4].decode("utf-8", "replace")
                captions[path.stem] = text.strip()[:MAX_CAPTION]
                continue
            if len(images) >= max_images:
                raise BadRequest(f"a training job takes at most {max_images} images")
            images.append(Upload(path.name, archive.read(entry)))
    return images, captions


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


async def keep_images(
    store: FileStore, uploads: list[Upload], captions: Mapping[str, str], zipped: Mapping[str, str]
) -> list[TrainImage]:
    """Check every image, then store each by SHA256 (files first, rows in one transaction)."""
    checked = []
    for upload in uploads:
        info = await asyncio.to_thread(inspect_image, upload.data)
        checked.append((upload, info, caption_for(upload.name, captions, zipped)))
    kept = []
    paths = []
    for upload, info, _ in checked:
        temp = store.temp_path()
        await asyncio.to_thread(temp.write_bytes, upload.data)
        paths.append(await asyncio.to_thread(store.commit_temp, temp, info.sha256))
    async with store.db.write() as conn:
        for (upload, info, caption), path in zip(checked, paths, strict=True):
            await store.add_row(conn, info.sha256, info.size, path, in_place=False)
            kept.append(TrainImage(upload.name, info.sha256, caption))
    return kept
