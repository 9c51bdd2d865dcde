"""Backups of a node home, safe while the node runs, and restores into an empty home.

A backup folder holds::

    civitas-backup.json     what it is: format, time, node did, database kind, counts
    config.toml             the home's config, as written
    admin.token, keys/      the secrets, mode 0600 (folders 0700), as in the home
    civitas.db              SQLite: a consistent copy made with SQLite's online backup API
    database.pgdump         PostgreSQL: ``pg_dump --format=custom`` (one snapshot)
    files/                  with --with-files: the content-addressed store, hard-linked
                            where the backup is on the same filesystem, else copied

The database is copied first and the files after it: a file row commits only after its
file is in place, so every row in the copy has its file in the backup (a file that
arrived later is an orphan the restored node removes at start). A restore gives the log
a new epoch, so peers restart their cursor on it (DESIGN section 4), and points stored
files' rows at the new home.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from node import __version__
from node.config import Config, load_config, render_config
from node.db import Database
from node.errors import HomeError
from node.home import Home
from node.p2p.keys import check_private_file, load_key, write_private_file
from node.p2p.log import set_meta
from node.p2p.tables import blobs

MANIFEST = "civitas-backup.json"
FORMAT = 1
SQLITE_COPY = "civitas.db"
PG_DUMP = "database.pgdump"
STORE_SKIPPED = ("tmp", "incoming", "quarantine")  # unfinished or taken-down files


@dataclass
class Copied:
    files: int = 0
    linked: int = 0
    bytes: int = 0


def _secrets(home: Path) -> Iterator[Path]:
    if (home / "admin.token").exists():
        yield home / "admin.token"
    keys = home / "keys"
    if keys.is_dir():
        yield from sorted(p for p in keys.rglob("*") if p.is_file())


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _pg_url(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without its password, and the environment that carries the password."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(password=None).render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise HomeError(
            f"this node's database is PostgreSQL and {name} is not installed: install the "
            f"PostgreSQL client tools (e.g. apt install postgresql-client) or back the "
            "database up with your own tools; nothing was written"
        )
    return found


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no message"]
        raise HomeError(f"{what} failed: {lines[-1]}")


def _sqlite_path(url: str) -> Path:
    return Path(sa.engine.make_url(url).database or "")


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup: one consistent snapshot, beside a node that keeps writing."""
    if not source.is_file():
        raise HomeError(f"the database {source} does not exist")
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.backup(dst)
        check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise HomeError(f"the copy of {source} failed its integrity check: {check}")
    finally:
        dst.close()
        src.close()


def _copy_tree(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Copied:
    """Hard-link every file of ``source`` under ``target`` (copy across filesystems)."""
    done = Copied()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in skip or not path.is_file() or path.is_symlink():
            continue
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
            done.linked += 1
        except OSError:
            shutil.copy2(path, out)
        done.files += 1
        done.bytes += path.stat().st_size
    return done


def _copy_secrets(source: Path, target: Path) -> int:
    count = 0
    for path in _secrets(source):
        out = target / path.relative_to(source)
        for folder in reversed(out.relative_to(target).parents[:-1]):
            (target / folder).mkdir(mode=0o700, exist_ok=True)
        write_private_file(out, path.read_bytes())
        count += 1
    return count


def backup_home(home: Home, config: Config, dest: Path, *, with_files: bool) -> dict[str, Any]:
    """Copy ``home`` (running or not) into the new folder ``dest``; what was copied."""
    home.require()
    for path in _secrets(home.path):
        try:
            check_private_file(path)
        except HomeError as exc:
            raise HomeError(f"refusing to back up {home.path}: {exc.message}") from None
    dest = dest.expanduser().resolve()
    if not _is_empty(dest):
        raise HomeError(f"{dest} is not empty: back up into a new or empty folder")
    if dest.is_relative_to(home.path):
        raise HomeError(f"{dest} is inside the home {home.path}: back up somewhere else")
    work = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        work.mkdir(mode=0o700, parents=True)
        manifest = _write_backup(home, config, work, with_files)
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)  # a backup folder is complete or absent
    except OSError as exc:
        raise HomeError(
            f"cannot write the backup in {dest.parent}: {exc.strerror or exc}"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _write_backup(home: Home, config: Config, work: Path, with_files: bool) -> dict[str, Any]:
    db = Database(config.database_url)
    started = time.time()
    if db.dialect == "sqlite":
        _sqlite_copy(_sqlite_path(config.database_url), work / SQLITE_COPY)
    else:
        url, env = _pg_url(config.database_url)
        out = str(work / PG_DUMP)
        _run(
            [_tool("pg_dump"), "--format=custom", "--no-owner", "--file", out, "--dbname", url],
            env,
            "pg_dump",
        )
    shutil.copy2(home.config_file, work / "config.toml")
    secret_count = _copy_secrets(home.path, work)
    files = (
        _copy_tree(home.path / "files", work / "files", skip=STORE_SKIPPED) if with_files else None
    )
    if with_files and (home.path / "compute" / "outputs").is_dir():
        _copy_tree(home.path / "compute" / "outputs", work / "compute" / "outputs")
    manifest = {
        "format": FORMAT,
        "software": __version__,
        "created": int(started),
        "home": str(home.path),
        "node": load_key(home.node_key_file).did,
        "database": db.dialect,
        "secrets": secret_count,
        "files": None if files is None else {"count": files.files, "bytes": files.bytes},
        "hard_linked": None if files is None else files.linked,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HomeError(f"{src} is not a Civitas backup (it has no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise HomeError(f"{src / MANIFEST} cannot be read: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise HomeError(f"{src} is a backup of format {manifest.get('format')}, not {FORMAT}")
    return manifest


def restore_home(src: Path, home: Home, *, database_url: str | None = None) -> dict[str, Any]:
    """Restore the backup ``src`` into the empty ``home``; the restored log's new epoch."""
    src = src.expanduser().resolve()
    manifest = read_manifest(src)
    if not _is_empty(home.path):
        raise HomeError(f"{home.path} is not empty: restore only into a new or empty home")
    config_text = (src / "config.toml").read_text(encoding="utf-8")
    if database_url is not None:
        staged = load_config(src, {("database", "url"): database_url}, environ={})
        config_text = render_config(staged)
    home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        (home.path / "config.toml").write_text(config_text, encoding="utf-8")
        _copy_secrets(src, home.path)
        config = load_config(home.path, environ={})
        db = Database(config.database_url)
        if manifest["database"] != db.dialect:
            raise HomeError(
                f"the backup holds a {manifest['database']} database but the restored config "
                f"names {db.dialect}: give --database-url"
            )
        if db.dialect == "sqlite":
            target = _sqlite_path(config.database_url)
            if target.exists():
                raise HomeError(f"{target} exists already: restore into a new database")
            target.parent.mkdir(parents=True, exist_ok=True)
            _sqlite_copy(src / SQLITE_COPY, target)
        else:
            url, env = _pg_url(config.database_url)
            dump = str(src / PG_DUMP)
            _run(
                [_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={url}", dump],
                env,
                "pg_restore (into an empty database)",
            )
        if (src / "files").is_dir():
            _copy_tree(src / "files", home.path / "files")
        if (src / "compute" / "outputs").is_dir():
            _copy_tree(src / "compute" / "outputs", home.path / "compute" / "outputs")
    except OSError as exc:
        raise HomeError(f"cannot restore into {home.path}: {exc.strerror or exc}") from None
    return manifest


async def renew_restored(db: Database, files_root: Path) -> str:
    """A restored log's new epoch (peers restart their cursor) and its files' new paths."""
    epoch = secrets.token_hex(16)
    async with db.write() as conn:
        await set_meta(conn, "log_epoch", epoch)
        rows = (
            await conn.execute(sa.select(blobs.c.sha256).where(blobs.c.in_place.is_(False)))
        ).scalars()
        for sha256 in list(rows):
            path = files_root / sha256[:2] / sha256[2:4] / sha256
            await conn.execute(
                blobs.update().where(blobs.c.sha256 == sha256).values(path=str(path))
            )
    return epoch
