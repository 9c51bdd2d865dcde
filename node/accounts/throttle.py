"""Brute-force protection for password logins, keyed so that a guesser cannot lock the
owner out.

A wrong password counts against three keys, each with growing waits past a few free ones
(twice as long each time, up to a cap):

- the account *from that address* (``per_account``): one address guessing one password;
- the address (``per_address``): one address guessing at many accounts;
- the account from addresses that never logged into it (``per_account_overall``): many
  addresses guessing one password. An address that has logged into the account before
  is let through this one, so a crowd of guessers elsewhere slows down only other
  strangers, not the owner at home. The throttle remembers such addresses in memory; the
  account service also keeps them in the database (:mod:`node.accounts.login_addresses`)
  and tells the throttle again after a restart.

Addresses are keyed by :func:`node.ratelimit.address_key` (an IPv6 client by its /64).
While a key waits, every login it covers is answered 429 with ``Retry-After`` without
looking at the password, the right one included, so guessing faster gains nothing.
Logins from one address, and strangers' logins for one account, are checked one at a
time, so a burst of parallel guesses is counted exactly as the same guesses in a row; a
known address does not queue behind strangers.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from node.errors import TooManyRequests
from node.ratelimit import BackoffLimiter, address_key

MAX_WAITING = 8  # logins queued behind one address's, or one account's, current one
MAX_KNOWN = 100_000  # (account, address) pairs remembered as having logged in
OVERALL_FACTOR = 10  # per_account_overall when not given: this many times per_account


class LoginThrottle:
    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        per_account_overall: int | None = None,
        max_delay_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        overall = (
            per_account * OVERALL_FACTOR if per_account_overall is None else per_account_overall
        )
        self.pairs = BackoffLimiter(free=per_account, max_s=max_delay_s, clock=clock)
        self.addresses = BackoffLimiter(free=per_address, max_s=max_delay_s, clock=clock)
        self.accounts = BackoffLimiter(free=overall, max_s=max_delay_s, clock=clock)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def known(self, name: str, address: str | None) -> bool:
        """Whether ``address`` has logged into account ``name`` before."""
        return bool(address) and (name, address_key(address or "")) in self._known

    @asynccontextmanager
    async def attempt(self, name: str, address: str | None) -> AsyncIterator[None]:
        """Hold the address's turn (and, for an address new to the account, the account's);
        raise TooManyRequests while a key it counts against must wait, or when too many
        logins already queue for one."""
        key = address_key(address or "")
        known = self.known(name, key)
        async with AsyncExitStack() as turns:
            await turns.enter_async_context(self._turn(f"address:{key}"))
            if not known:
                await turns.enter_async_context(self._turn(f"account:{name}"))
            self.pairs.check((name, key), "wrong passwords for this account")
            if key:
                self.addresses.check(key, "wrong passwords from your address")
            if not known:
                self.accounts.check(name, "wrong passwords for this account from new addresses")
            yield

    def failed(self, name: str, address: str | None) -> None:
        key = address_key(address or "")
        self.pairs.hit((name, key))
        if key:
            self.addresses.hit(key)
        if not self.known(name, key):
            self.accounts.hit(name)

    def succeeded(self, name: str, address: str | None) -> None:
        """The account's count from this address starts again, and the address is known to
        the account from now on. The address's own count does not start again (one working
        account must not reset an address that guesses at others), nor does the account's
        count from strangers (the owner logging in must not give guessers a fresh start)."""
        self.pairs.reset((name, address_key(address or "")))
        self.remember(name, address)

    def remember(self, name: str, address: str | None) -> None:
        """Know ``address`` as one that logged into account ``name`` (as after a login; the
        service calls this for addresses its database remembers from before a restart)."""
        key = address_key(address or "")
        if key:
            self._known[(name, key)] = None
            self._known.move_to_end((name, key))
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)

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
