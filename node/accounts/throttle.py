"""Brute-force protection for password logins: growing waits per account and per address.

Every wrong password counts against the account tried and the address it came from; past
a few free ones, each further one makes that key wait twice as long (up to a cap). While
a key waits, every login for it is answered 429 with ``Retry-After`` without looking at
the password, the right one included, so guessing faster gains nothing. Logins for one
account, and from one address, are checked one at a time, so a burst of parallel guesses
is counted exactly as the same guesses in a row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from node.errors import TooManyRequests
from node.ratelimit import BackoffLimiter

MAX_WAITING = 8  # logins queued behind one account's or one address's current one


class LoginThrottle:
    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        max_delay_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accounts = BackoffLimiter(free=per_account, max_s=max_delay_s, clock=clock)
        self.addresses = BackoffLimiter(free=per_address, max_s=max_delay_s, clock=clock)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def attempt(self, name: str, address: str | None) -> AsyncIterator[None]:
        """Hold the account's (and address's) turn; raise TooManyRequests while either
        must wait, or when too many logins already queue for it."""
        async with self._turn(f"address:{address or ''}"), self._turn(f"account:{name}"):
            self.accounts.check(name, "wrong passwords for this account")
            if address:
                self.addresses.check(address, "wrong passwords from your address")
            yield

    def failed(self, name: str, address: str | None) -> None:
        self.accounts.hit(name)
        if address:
            self.addresses.hit(address)

    def succeeded(self, name: str) -> None:
        """The account's count starts again; the address's does not (one working account
        must not reset an address that guesses at others)."""
        self.accounts.reset(name)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        if users[0] > MAX_WAITING:
            raise TooManyRequests("too many logins at once; try again in a moment", 1.0)
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]
