"""What `civitas serve` and `civitas reindex` say when the home is damaged: one line each,
naming what failed, where, and what to do, never a traceback (issue 14.5)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from tests.test_cli import (
    civitas,
    home,  # noqa: F401  (fixture: a private copy of an initialised home)
    initialised,  # noqa: F401  (fixture)
    refused,
    serve_expecting_failure,
)


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_a_full_disk_when_writing_node_json_is_one_line(home: Path) -> None:  # noqa: F811
    (home / "node.json.tmp").symlink_to("/dev/full")  # a real ENOSPC for that one file
    line = _one_line(serve_expecting_failure(home))
    assert "node.json" in line and "No space left on device" in line


def test_an_unwritable_temp_folder_is_one_line(home: Path) -> None:  # noqa: F811
    (home / "files").mkdir(exist_ok=True)
    (home / "files" / "tmp").write_text("not a folder")  # root ignores modes; this it cannot
    line = _one_line(serve_expecting_failure(home))
    assert str(home / "files" / "tmp") in line and "cannot be written" in line


def test_an_empty_database_file_is_not_told_to_migrate(home: Path) -> None:  # noqa: F811
    (home / "civitas.db").write_bytes(b"")
    for extra in ("civitas.db-wal", "civitas.db-shm"):
        (home / extra).unlink(missing_ok=True)
    line = _one_line(serve_expecting_failure(home))
    assert "is empty (0 bytes)" in line and "backup" in line
    assert (home / "civitas.db").stat().st_size == 0  # left as found


def _corrupt_table(db: Path, table: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page = root.fetchone()[0]
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * page_size)
        handle.write(b"\xa5" * page_size)  # a page in the middle of the file, garbage


def test_a_corrupt_page_is_one_line_and_reindex_does_not_claim_success(
    home: Path,  # noqa: F811
) -> None:
    _corrupt_table(home / "civitas.db", "blobs")  # read at every start
    line = _one_line(serve_expecting_failure(home))
    assert "corrupt" in line and "backup" in line
    err = refused(civitas(home, "reindex"))
    assert "Traceback" not in err
    assert "corrupt" in _one_line(err)
