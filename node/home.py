"""The node home: config, keys, admin token, database file and the one-process lock.

Layout::

    HOME/config.toml          every setting, commented
    HOME/civitas.db           the SQLite database (unless database.url says otherwise)
    HOME/keys/node.key        the node's Ed25519 key (0600)
    HOME/keys/authors/*.key   author keys the node holds for its users (0600)
    HOME/admin.token          the CLI's token for the running node's API (0600)
    HOME/node.lock            held by the one node process serving this home
    HOME/node.json            where that process listens (pid, url)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any

from node.errors import HomeError, KeyFileError
from node.p2p.keys import (
    SigningKey,
    check_private_file,
    load_key,
    public_key_from_did,
    save_key,
    write_private_file,
)

ADMIN_TOKEN_PREFIX = "cva_"


def default_home() -> Path:
    return Path(os.environ.get("CIVITAS_HOME", ".civitas"))


class NodeLock:
    """An exclusive flock on ``HOME/node.lock``, held for the life of the node process."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


class Home:
    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()

    config_file = property(lambda self: self.path / "config.toml")
    key_dir = property(lambda self: self.path / "keys")
    node_key_file = property(lambda self: self.path / "keys" / "node.key")
    admin_token_file = property(lambda self: self.path / "admin.token")
    lock_file = property(lambda self: self.path / "node.lock")
    runtime_file = property(lambda self: self.path / "node.json")

    def exists(self) -> bool:
        return self.config_file.exists() or self.node_key_file.exists()

    def require(self) -> None:
        if not self.exists():
            raise HomeError(
                f"{self.path} is not a Civitas home; "
                f"create it with `civitas --home {self.path} init`"
            )

    # --- creation -----------------------------------------------------------------

    def create(self, config_text: str) -> SigningKey:
        """Write config, node key and admin token. Refuses to touch an existing home."""
        if self.exists():
            raise HomeError(f"{self.path} is a Civitas home already")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key_dir.mkdir(mode=0o700, exist_ok=True)
        self.config_file.write_text(config_text, encoding="utf-8")
        key = SigningKey.generate()
        save_key(self.node_key_file, key)
        write_private_file(self.admin_token_file, self.new_admin_token().encode())
        return key

    @staticmethod
    def new_admin_token() -> str:
        return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)

    # --- secrets --------------------------------------------------------------------

    def node_key(self) -> SigningKey:
        return load_key(self.node_key_file)

    def admin_token(self) -> str:
        check_private_file(self.admin_token_file)
        token = self.admin_token_file.read_text(encoding="utf-8").strip()
        if len(token) < 32:
            raise KeyFileError(f"{self.admin_token_file} holds no usable token")
        return token

    def author_key_file(self, did: str, *, following: bool = False) -> Path:
        public_key_from_did(did)  # refuse anything but a well-formed did in a path
        suffix = ".next.key" if following else ".key"
        return self.key_dir / "authors" / (did.removeprefix("did:key:") + suffix)

    def save_author_key(self, key: SigningKey, *, following_of: str | None = None) -> Path:
        """Save an author key; ``following_of`` saves it as that did's pre-committed next key."""
        path = (
            self.author_key_file(following_of, following=True)
            if following_of
            else self.author_key_file(key.did)
        )
        (self.key_dir / "authors").mkdir(parents=True, exist_ok=True, mode=0o700)
        save_key(path, key, overwrite=True)
        return path

    def author_key(self, did: str) -> SigningKey:
        path = self.author_key_file(did)
        if not path.exists():
            raise KeyFileError(f"this node holds no private key for {did}")
        return load_key(path)

    # --- the running node -----------------------------------------------------------

    def lock(self) -> NodeLock:
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise HomeError(
                f"another node (pid {pid}) is serving {self.path}; stop it first "
                "(one node process per home)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return NodeLock(handle)

    def running(self) -> dict[str, Any] | None:
        """Where the node serving this home listens, or None when no node holds the lock."""
        if not self.lock_file.exists():
            return None
        with open(self.lock_file, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                return None
        try:
            info: dict[str, Any] = json.loads(self.runtime_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"pid": None, "url": None}
        return info

    def write_runtime(self, url: str) -> None:
        temp = self.runtime_file.with_suffix(".json.tmp")
        try:
            temp.write_text(json.dumps({"pid": os.getpid(), "url": url}), encoding="utf-8")
            os.replace(temp, self.runtime_file)  # readers never see half a file
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise HomeError(
                f"cannot write {self.runtime_file} ({exc.strerror or exc}): the home's disk "
                "is full or read-only; free space or fix it, then start the node again"
            ) from None

    def clear_runtime(self) -> None:
        self.runtime_file.unlink(missing_ok=True)
