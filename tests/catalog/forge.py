"""Build exact catalog records (valid by schema, signed by any key) for acceptance tests.

A forger is just a key: these helpers sign whatever body a test names, with the
``created`` it names, so a test can feed a node poison, back-dated or foreign records.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.tables import (
    image_resources,
    images,
    model_revisions,
    model_tags,
    model_versions,
    models,
    tombstones,
    version_files,
)
from node.p2p.keys import SigningKey
from node.p2p.records import Record, sign_record

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z, after the protocol's earliest `created`


def key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"civitas forge {label}".encode()).digest())


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def profile(signer: SigningKey, name: str, created: int = T0) -> Record:
    """A profile that commits to a next key (derived from the signer's did), as every
    node-held author's does: with it, a foreign key can no longer pass as that next key."""
    next_key = sha(f"next key of {signer.did}")
    return sign_record(signer, "profile", {"name": name, "next_key": next_key}, created=created)


def model(
    signer: SigningKey, name: str, created: int = T0, root: bytes | None = None, **extra: Any
) -> Record:
    body: dict[str, Any] = {"name": name, "type": "LORA", "tags": ["forge"], **extra}
    if root is not None:
        body["root"] = root
    return sign_record(signer, "model", body, created=created)


def version(
    signer: SigningKey,
    model_root: bytes,
    file_sha: bytes,
    created: int = T0,
    name: str = "v1",
    words: tuple[str, ...] = ("forge",),
) -> Record:
    body = {
        "model": model_root,
        "name": name,
        "base_model": "SD 1.5",
        "trained_words": list(words),
        "files": [
            {
                "name": "forge.safetensors",
                "size": 1234,
                "sha256": file_sha,
                "blake3": sha(f"blake3 {file_sha.hex()}"),
                "crc32": file_sha[:4],
                "format": "SafeTensor",
            }
        ],
    }
    return sign_record(signer, "model_version", body, created=created)


def image(signer: SigningKey, version_id: bytes | None, label: str, created: int = T0) -> Record:
    body: dict[str, Any] = {
        "sha256": sha(f"image {label}"),
        "width": 8,
        "height": 8,
        "size": 100,
        "mime": "image/png",
    }
    if version_id is not None:
        body["model_version"] = version_id
    return sign_record(signer, "image", body, created=created)


def tombstone(signer: SigningKey, target: bytes, created: int = T0) -> Record:
    return sign_record(signer, "tombstone", {"target": target}, created=created)


CATALOG_TABLES = (
    models,
    model_revisions,
    model_tags,
    model_versions,
    version_files,
    images,
    image_resources,
    tombstones,
)


async def catalog_rows(conn: AsyncConnection, *, shown_only: bool = False) -> dict[str, Any]:
    """Every catalog row (sorted, without local sequence numbers); ``shown_only``: only
    the tables a reader sees (not the bookkeeping of revisions and tombstones)."""
    out = {}
    for table in CATALOG_TABLES:
        if shown_only and table in (model_revisions, tombstones):
            continue
        columns = [c for c in table.c if c.name != "seq"]
        rows = await conn.execute(sa.select(*columns))
        out[table.name] = sorted(tuple(row) for row in rows)
    return out
