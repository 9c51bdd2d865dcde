"""Shared fixtures: real databases (SQLite and PostgreSQL), node homes, live HTTP apps.

Database-level tests take the ``database_url`` fixture, parametrised over SQLite and
PostgreSQL. PostgreSQL needs ``CIVITAS_TEST_DATABASE_URL`` (``.ci/run`` sets it); without
it those cases are skipped with the reason, except under CI, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.app import Node, build_node, create_app, set_public_url
from node.config import Config, load_config, render_config
from node.db import sqlite_url
from node.home import Home

PG_ENV = "CIVITAS_TEST_DATABASE_URL"

pytest_plugins = ["tests.hang_report"]


async def _pg_admin(url: str):  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "test.db")
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is unset under CI: PostgreSQL cases must run")
        pytest.skip(f"{PG_ENV} is unset: PostgreSQL cases skipped")
    name = f"civitas_t_{secrets.token_hex(6)}"
    conn = await _pg_admin(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield base.rsplit("/", 1)[0] + "/" + name
    conn = await _pg_admin(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# Tests listen on 127.0.0.1 only, on free ports, without the DHT; the BitTorrent engine
# runs only in the tests that ask for it.
TEST_SETTINGS = {
    ("node", "name"): "test-node",
    ("server", "port"): 0,
    ("torrent", "enabled"): False,
    ("torrent", "listen_host"): "127.0.0.1",
    ("torrent", "listen_port"): 0,
    ("torrent", "dht"): False,
    ("torrent", "allow_lan"): True,
}


def make_home(path: Path, database_url: str | None = None) -> tuple[Home, Config]:
    """Create a home the way ``civitas init`` does (without migrating)."""
    home = Home(path)
    config = load_config(home.path, TEST_SETTINGS, environ={})
    if database_url:
        config.database.url = database_url
    home.create(render_config(config))
    return home, config


@pytest.fixture
async def node(tmp_path: Path, database_url: str) -> AsyncIterator[Node]:
    """A node's services on a migrated database, without an HTTP server."""
    home, config = make_home(tmp_path / "home", database_url)
    built = build_node(config, home)
    await built.db.migrate()
    await built.log.ensure_epoch()
    yield built
    await built.db.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient]:
    """A live HTTP server for ``node`` on 127.0.0.1 and a client for it."""
    app = create_app(node, node.home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        set_public_url(app, str(test_client.make_url("")))
        yield test_client


@pytest.fixture
def admin_headers(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.home.admin_token()}"}


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests choose their own settings: an operator's CIVITAS_* variables must not leak in."""
    for var in list(os.environ):
        if var.startswith("CIVITAS_") and var != PG_ENV:
            monkeypatch.delenv(var)
    yield
