"""``civitas backup`` / ``restore``: a consistent copy of a node that keeps writing."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from node.app import Node, build_node
from node.backup import backup_home, renew_restored, restore_home
from node.catalog.tables import models
from node.config import load_config
from node.db import Database, sqlite_url
from node.home import Home
from node.p2p.tables import blobs, records
from tests.catalog.conftest import PASSWORD, lora_file
from tests.conftest import PG_ENV, _pg_admin
from tests.ops.helpers import clean_env

CIVITAS = Path(sys.executable).parent / "civitas"


@pytest.fixture
async def empty_database(node: Node, tmp_path: Path) -> AsyncIterator[str]:
    """A second, empty database of the node's kind, to restore into."""
    if node.db.dialect == "sqlite":
        yield sqlite_url(tmp_path / "restored.db")
        return
    base = os.environ[PG_ENV]
    name = f"civitas_r_{secrets.token_hex(6)}"
    conn = await _pg_admin(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield base.rsplit("/", 1)[0] + "/" + name
    conn = await _pg_admin(base)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _log(db: Database) -> list[tuple[int, bytes]]:
    async with db.read() as conn:
        rows = await conn.execute(sa.select(records.c.seq, records.c.id).order_by(records.c.seq))
        return [(row.seq, row.id) for row in rows]


async def test_a_backup_made_during_writes_restores_to_a_consistent_node(
    node: Node, tmp_path: Path, empty_database: str
) -> None:
    alice = await node.accounts.add_user("alice", PASSWORD)
    published = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors"), {"name": "Fox"}
    )
    sha256 = published["sha256"]
    before = await _log(node.db)
    stop, progress = asyncio.Event(), asyncio.Event()
    written = 0

    async def writes(count: int) -> None:
        target = written + count
        while written < target:
            progress.clear()
            await progress.wait()

    async def keep_writing() -> None:
        nonlocal written
        while not stop.is_set():
            await node.accounts.add_user(f"user{written}", PASSWORD)  # a record + a key file
            written += 1
            progress.set()

    writer = asyncio.create_task(keep_writing())
    try:
        await writes(2)
        manifest = await asyncio.to_thread(
            backup_home, node.home, node.config, tmp_path / "backup", with_files=True
        )
        await writes(2)  # the node goes on writing after the copy
    finally:
        stop.set()
        await writer
    assert manifest["node"] == node.node_key.did and manifest["files"]["count"] == 1

    restored = Home(tmp_path / "restored")
    restore_home(tmp_path / "backup", restored, database_url=empty_database)
    config = load_config(restored.path, environ={})
    again = build_node(config, restored)
    try:
        await again.db.migrate()
        new_epoch = await renew_restored(again.db, restored.path / "files")
        original, copy = await _log(node.db), await _log(again.db)
        assert before == copy[: len(before)]  # everything from before the backup
        assert copy == original[: len(copy)]  # a prefix of the log: nothing torn or reordered
        assert len(before) < len(copy) < len(original)
        assert new_epoch != await node.log.epoch() and await again.log.epoch() == new_epoch
        assert again.node_key.did == node.node_key.did
        for user in await again.accounts.list_users():  # every user's key came along
            assert again.home.author_key(user.did).did == user.did
        async with again.db.read() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(models)) == 1
            path = await conn.scalar(sa.select(blobs.c.path).where(blobs.c.sha256 == sha256))
        assert Path(path) == restored.path / "files" / sha256[:2] / sha256[2:4] / sha256
        assert await again.store.local_path(sha256) == Path(path)
        for secret in [restored.admin_token_file, *restored.key_dir.rglob("*.key")]:
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert stat.S_IMODE(restored.key_dir.stat().st_mode) == 0o700
    finally:
        await again.db.close()


def civitas(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CIVITAS), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line
    for word in words:
        assert word in result.stderr, result.stderr


def test_the_commands_back_up_restore_and_refuse_what_they_must(tmp_path: Path) -> None:
    home, copy = tmp_path / "home", tmp_path / "backup"
    assert civitas(home, "init", "--port", "0").returncode == 0
    done = civitas(home, "backup", str(copy))
    assert done.returncode == 0, done.stderr
    assert "files: not copied" in done.stdout
    refused(civitas(home, "backup", str(copy)), "is not empty")
    refused(civitas(home, "restore", str(copy)), "is not empty")  # the home itself
    refused(civitas(tmp_path / "other", "restore", str(home)), "not a Civitas backup")

    restored = civitas(tmp_path / "restored", "restore", str(copy))
    assert restored.returncode == 0, restored.stderr
    assert "new log epoch" in restored.stdout
    assert Home(tmp_path / "restored").node_key().did == Home(home).node_key().did

    (home / "keys" / "node.key").chmod(0o644)
    refused(civitas(home, "backup", str(tmp_path / "b2")), "node.key", "0644")
    assert not (tmp_path / "b2").exists()
