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
from collections import deque
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
    wait for one, more are told to come back (429) instead of piling up.

    A check marked ``known`` (a login from an address that has logged into the account
    before) waits in a queue of its own, bounded the same way and served first: however
    many strangers send wrong passwords, from however many addresses, they fill only
    theirs, and the owner's login takes the next free thread."""

    def __init__(self, concurrency: int = 2, queue: int = 32) -> None:
        self.concurrency, self.queue = concurrency, queue
        self._pool: ThreadPoolExecutor | None = None  # started by the first password
        self._running = 0  # threads given out
        # waiting for a thread: known logins first, then everyone else
        self._queues: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    @property
    def waiting(self) -> int:
        """Hashes running or queued now."""
        return self._running + sum(len(queue) for queue in self._queues)

    async def _run(self, fn: Callable[..., T], *args: str, known: bool = False) -> T:
        await self._take(self._queues[0 if known else 1])
        try:
            if self._pool is None:
                self._pool = background_pool(self.concurrency, "civitas-scrypt")
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._give_back()

    async def _take(self, queue: deque[asyncio.Future[None]]) -> None:
        if self._running < self.concurrency and not any(self._queues):
            self._running += 1
            return
        if len(queue) >= self.queue:
            raise TooManyRequests("too many logins at once; try again in a moment", 1.0)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn  # _give_back hands its thread over: _running stays as it is
        except asyncio.CancelledError:
            if turn in queue:
                queue.remove(turn)
            elif turn.done() and not turn.cancelled():
                self._give_back()  # handed a thread, but gone: pass it on
            raise

    def _give_back(self) -> None:
        for queue in self._queues:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._running -= 1

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def verify(self, password: str, stored: str, *, known: bool = False) -> bool:
        """Check ``password``; ``known``: a login from an address known to the account."""
        return await self._run(verify_password, password, stored, known=known)

    def close(self) -> None:
        """Let the threads go (a later password starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
