"""Database access: one async SQLAlchemy engine, SQLite (WAL) by default or PostgreSQL.

Tables are SQLAlchemy Core tables on the shared :data:`metadata`; each package declares
its own. Schema changes go through the Alembic migrations in ``node/migrations``.
Writes go through :meth:`Database.write`, which serialises writers inside the process
(the node is the only writer of its home) and, on SQLite, opens ``BEGIN IMMEDIATE`` so a
write transaction never fails half-way on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from node.errors import DatabaseError

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A 64-bit integer primary key that still autoincrements on SQLite (which wants INTEGER).
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_WRITE_OPTION = "civitas_write"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The node's database: an engine plus one serialised writer."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(
                f"database.url {url!r}: only sqlite+aiosqlite:// and postgresql+asyncpg:// "
                "are supported"
            )
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=5, pool_pre_ping=True)
        try:
            self.engine = create_async_engine(url, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise DatabaseError(f"database.url {url!r} is not usable: {exc}") from None
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine)
        self._write_lock = asyncio.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction; committed when the block ends without an exception.

        Callables appended to ``conn.info["after_commit"]`` run once it has committed.
        """
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                yield conn
            hooks = conn.info.pop("after_commit", [])
        for hook in hooks:
            hook()

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, in-memory)."""
        if not self.is_sqlite:
            return None
        name = sa.engine.make_url(self.url).database
        return Path(name) if name and name != ":memory:" else None

    async def check(self) -> None:
        """Raise DatabaseError unless the database answers."""
        path = self.sqlite_path
        if path is not None and path.is_file() and path.stat().st_size == 0:
            # Checked before connecting: opening it in WAL mode would make it an empty
            # database, and "the schema is at nothing: run civitas migrate" would then
            # start this node over with no records.
            raise DatabaseError(
                f"the database file {path} is empty (0 bytes): it was truncated or replaced. "
                "Restore it from a backup; to start over with no records, delete it and "
                "run `civitas migrate`"
            )
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise DatabaseError(f"cannot reach the database at {self.safe_url}: {exc}") from None

    async def integrity_problems(self, limit: int = 20) -> list[str]:
        """SQLite's ``PRAGMA quick_check``: what it finds wrong (empty when the file is
        sound, or on PostgreSQL, which checks its own pages)."""
        if not self.is_sqlite:
            return []
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.exec_driver_sql(f"PRAGMA quick_check({int(limit)})")).all()
        except sa.exc.DatabaseError as exc:  # too broken to check at all
            return [str(exc.orig).strip().splitlines()[0]]
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    async def migrate(self) -> str:
        """Apply every pending Alembic migration; return the schema revision now in force."""
        await self.check()
        async with self.write() as conn:
            return await conn.run_sync(_upgrade_to_head)

    async def current_revision(self) -> str | None:
        async with self.read() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()


def _alembic_config(sync_conn: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = sync_conn
    return config


def _upgrade_to_head(sync_conn: sa.Connection) -> str:
    from alembic import command

    command.upgrade(_alembic_config(sync_conn), "head")
    return _current_revision(sync_conn) or ""


def _current_revision(sync_conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
