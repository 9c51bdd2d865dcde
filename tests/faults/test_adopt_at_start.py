"""Killed between moving a verified download into the store and the database write: at
the next start the file is adopted (verified), not deleted and fetched again (issue 14.2)."""

from __future__ import annotations

import hashlib
import json
import os

import sqlalchemy as sa

from node.app import Node
from node.p2p.records import now_ms
from node.p2p.tables import blobs, downloads, wanted_files


async def _waiting_download(node: Node, sha256: str, infohash: str) -> None:
    async with node.db.write() as conn:
        await conn.execute(
            downloads.insert().values(
                infohash=infohash,
                sha256=sha256,
                name="fox.safetensors",
                size=1,
                state="downloading",
                sources=json.dumps({}),
                added=now_ms(),
            )
        )


async def test_a_stored_file_a_download_waits_for_is_adopted_not_deleted(node: Node) -> None:
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest().upper()
    await _waiting_download(node, sha, "a" * 40)
    stored = node.store.path_for(sha)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data)  # renamed into the store; the node died before the commit

    orphan = node.store.path_for("B" * 64)  # nobody waits for it: still removed
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left over")
    node.store.prepare()
    (node.store.tmp / "half.part").write_bytes(b"half")

    assert await node.store.clean() == 2
    assert stored.read_bytes() == data and not orphan.exists()
    assert not list(node.store.tmp.iterdir())
    assert await node.store.local_path(sha) == stored
    async with node.db.read() as conn:
        row = (await conn.execute(sa.select(downloads))).one()
    assert row.state == "complete" and row.error is None


async def test_a_stored_file_that_is_not_what_its_name_says_is_removed(node: Node) -> None:
    sha = hashlib.sha256(b"the real file").hexdigest().upper()
    await _waiting_download(node, sha, "c" * 40)
    stored = node.store.path_for(sha)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"torn")  # not the file the record names
    assert await node.store.clean() == 1
    assert not stored.exists()
    async with node.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(blobs)) == 0
        assert (await conn.execute(sa.select(downloads.c.state))).scalar() == "downloading"


async def test_a_stored_preview_a_wanted_file_waits_for_is_adopted(node: Node) -> None:
    data = b"\x89PNG preview bytes"
    sha = hashlib.sha256(data).hexdigest().upper()
    async with node.db.write() as conn:
        await conn.execute(
            wanted_files.insert().values(sha256=sha, size=len(data), added=now_ms(), next_try=0)
        )
    stored = node.store.path_for(sha)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data)
    assert await node.store.clean() == 0
    assert await node.store.local_path(sha) == stored
    async with node.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(wanted_files)) == 0
