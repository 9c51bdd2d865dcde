"""Password hashing with scrypt (stdlib), in a self-describing string.

Format: ``scrypt$N$r$p$salt_b64$hash_b64``; verification is constant-time. scrypt takes
tens of milliseconds and 16 MiB by design: :class:`PasswordHasher` runs it in a few
threads (hashlib releases the GIL) so the event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from node.background import background_pool
from node.errors import TooManyRequests

T = TypeVar("T")

N, R, P = 2**14, 8, 1
DKLEN = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=DKLEN)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def token_digest(token: str) -> bytes:
    """API tokens and session ids are random; one SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).digest()


class PasswordHasher:
    """Hashes and checks passwords in ``concurrency`` threads; at most ``queue`` callers
    wait for one, more are told to come back (429) instead of piling up."""

    def __init__(self, concurrency: int = 2, queue: int = 32) -> None:
        self.concurrency, self.queue = concurrency, queue
        self._pool: ThreadPoolExecutor | None = None  # started by the first password
        self._waiting = 0

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._waiting >= self.concurrency + self.queue:
            raise TooManyRequests("too many logins at once; try again in a moment", 1.0)
        if self._pool is None:
            self._pool = background_pool(self.concurrency, "civitas-scrypt")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._waiting -= 1

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def verify(self, password: str, stored: str) -> bool:
        return await self._run(verify_password, password, stored)

    def close(self) -> None:
        """Let the threads go (a later password starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
