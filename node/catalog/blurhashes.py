"""Blurhashes of images (Civitai's ``images[].hash``), computed once from the file.

An image's file may arrive long after its record (a peer's preview is fetched in the
background), so the hash is computed on the first answer that shows the image once
this node holds the file, then kept in ``image_blurhashes``: one code path for images
published here and for federated ones. Each answer computes a bounded number, in a
thread; the rest show ``null`` until a later answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from node.catalog.images import ImageError, blurhash_of
from node.catalog.ingest_limits import ImageDecodes
from node.catalog.tables import image_blurhashes
from node.db import Database
from node.p2p.filestore import FileStore

MAX_PER_ANSWER = 16  # computed for one answer (about 10 ms each); the rest later


class Blurhashes:
    def __init__(self, db: Database, store: FileStore, decodes: ImageDecodes | None = None) -> None:
        self.db = db
        self.store = store
        self.decodes = decodes or ImageDecodes()

    async def of(self, sha256s: Iterable[str]) -> dict[str, str]:
        """The blurhash of each image file that has one (computing a few missing ones)."""
        wanted = list(dict.fromkeys(sha256s))
        if not wanted:
            return {}
        async with self.db.read() as conn:
            known = dict(
                (
                    await conn.execute(
                        sa.select(image_blurhashes.c.sha256, image_blurhashes.c.blurhash).where(
                            image_blurhashes.c.sha256.in_(wanted)
                        )
                    )
                ).all()
            )
        made: dict[str, str] = {}
        for sha256 in [s for s in wanted if s not in known][:MAX_PER_ANSWER]:
            path = await self.store.local_path(sha256)
            if path is None:
                continue  # not here yet: a later answer computes it
            try:
                made[sha256] = await self.decodes.run(blurhash_of, path)
            except (ImageError, OSError):
                made[sha256] = ""  # undecodable: shown as null, never tried again
        if made:
            await self._keep(made)
        return {s: h for s, h in {**known, **made}.items() if h}

    async def _keep(self, made: dict[str, str]) -> None:
        try:
            await self._insert(made)
        except sa.exc.IntegrityError:
            pass  # another answer computed the same file at once and kept it first

    async def _insert(self, made: dict[str, str]) -> None:
        async with self.db.write() as conn:
            present = set(
                (
                    await conn.execute(
                        sa.select(image_blurhashes.c.sha256).where(
                            image_blurhashes.c.sha256.in_(list(made))
                        )
                    )
                ).scalars()
            )
            rows = [{"sha256": s, "blurhash": h} for s, h in made.items() if s not in present]
            if rows:
                await conn.execute(image_blurhashes.insert(), rows)

    async def fill(self, items: Sequence[dict[str, Any]]) -> None:
        """Set ``hash`` on every image in Civitai-shaped answers (models, versions or
        images), in place."""
        found = [image for item in items for image in _images(item)]
        hashes = await self.of(image["civitas"]["sha256"] for image in found)
        for image in found:
            image["hash"] = hashes.get(image["civitas"]["sha256"])


def _images(item: dict[str, Any]) -> list[dict[str, Any]]:
    if "modelVersions" in item:
        return [i for v in item["modelVersions"] for i in v["images"]]
    if "images" in item and "files" in item:
        return list(item["images"])
    return [item] if "hash" in item and "civitas" in item else []
