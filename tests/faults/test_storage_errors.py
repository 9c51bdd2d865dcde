"""Storage outages answer one clear line, never "internal error" (issue 14.5): a full disk
is 507 Insufficient Storage, a full database too, a read-only store 503; a peer's timeout
is stored with its reason.

A full disk without mounting anything: a temp file that is a symlink to /dev/full gives a
real ENOSPC from the kernel (as tests/p2p/test_wanted.py does). A read-only store needs a
read-only filesystem, since chmod does not stop root: a tmpfs mounted ``ro`` over the
store, where this process may mount (root, as in CI); skipped elsewhere, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.p2p.outgoing import PeerError, get_capped


def _publish_body(path: Path) -> dict[str, Any]:
    return {"path": str(path), "user": "alice", "name": "Fox", "base_model": "SD 1.5"}


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[None]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_disk_while_publishing_is_507_naming_the_store(
    node: Node,
    client: TestClient,
    alice: User,
    admin_headers: dict[str, str],
    make_lora: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = tmp_path / "full.part"
    full.symlink_to("/dev/full")
    monkeypatch.setattr(node.store, "temp_path", lambda: full)
    before = await node.log.count()
    resp = await client.post(
        "/api/models/publish-path", json=_publish_body(make_lora()), headers=admin_headers
    )
    assert resp.status == 507, await resp.text()
    body = await resp.json()
    assert body["error"] == "insufficient_storage"
    assert "full disk" in body["message"] and str(node.store.root) in body["message"]
    assert not full.is_symlink()  # the temp file is gone
    assert await node.log.count() == before  # nothing published


async def test_a_full_database_is_507(
    node: Node,
    client: TestClient,
    alice: User,
    admin_headers: dict[str, str],
    make_lora: Callable[..., Path],
) -> None:
    if not node.db.is_sqlite:
        pytest.skip("SQLite's max_page_count makes a real 'database or disk is full'")
    await node.db.engine.dispose()
    assert node.db.sqlite_path is not None
    with contextlib.closing(sqlite3.connect(node.db.sqlite_path)) as raw:
        raw.execute("VACUUM")  # no free page left to fill
        pages = raw.execute("PRAGMA page_count").fetchone()[0]

    @sa.event.listens_for(node.db.engine.sync_engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    # a long description needs overflow pages: new pages, past the cap
    body = {**_publish_body(make_lora()), "description": "A watercolor fox. " * 1000}
    resp = await client.post("/api/models/publish-path", json=body, headers=admin_headers)
    assert resp.status == 507, (await resp.text())[:300]
    body = await resp.json()
    assert body["error"] == "insufficient_storage" and "database" in body["message"]


async def test_a_read_only_store_is_503_saying_so(
    node: Node,
    client: TestClient,
    alice: User,
    admin_headers: dict[str, str],
    make_lora: Callable[..., Path],
) -> None:
    source = make_lora()
    with mounted_tmpfs(node.store.root, "ro,size=1m"):
        resp = await client.post(
            "/api/models/publish-path", json=_publish_body(source), headers=admin_headers
        )
        assert resp.status == 503, await resp.text()
        body = await resp.json()
        assert body["error"] == "storage_unavailable" and "read-only" in body["message"]


async def test_a_peer_timeout_says_it_timed_out_and_after_how_long() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)  # accepts, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/federation/v1/records"
    try:
        with pytest.raises(PeerError) as failed:
            await get_capped(url, 1000, aiohttp.ClientTimeout(total=0.3))
    finally:
        server.close()
    assert str(failed.value) == f"cannot reach {url}: timed out after 0.3 s"
