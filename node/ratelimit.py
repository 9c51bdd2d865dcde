"""Rate limits: who a client address counts as, and a backoff limiter.

Every per-address limit (failed logins, takedown notices, reports) keys its client by
:func:`client_key`: an IPv4 client by its address, an IPv6 client by its /64 (what one
host or customer is given; counting each of its 2^64 addresses alone would give one
attacker as many budgets), an IPv4-mapped IPv6 address as the IPv4 address it is.

:class:`BackoffLimiter` is used for failed logins (per account and address, per address,
per account); reusable for any quota that should slow an abuser down more the longer they
keep at it, rather than cut everyone off at a fixed rate. State is in memory, bounded by
``max_keys`` (the oldest keys are forgotten first): with several API processes, each
counts on its own.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiohttp import web

from node.errors import TooManyRequests
from node.http import client_address

IPV6_PREFIX = 64


def address_key(address: str) -> str:
    """The key a client address is counted under: an IPv4 address as it is, an IPv6 one
    as its /64 network (``2001:db8:1:2::/64``), an IPv4-mapped IPv6 address as its IPv4
    address. Anything else (no address, a Unix socket, a key already) stays as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def client_key(request: web.Request) -> str:
    """The request's client (see :func:`node.http.client_address`) as per-address limits
    count it: :func:`address_key` of its address."""
    return address_key(client_address(request))


@dataclass
class _Entry:
    events: int
    last: float
    blocked_until: float


class BackoffLimiter:
    """Counts events per key; after ``free`` of them, each further event blocks the key
    for ``base_s`` seconds, doubled for every event since, up to ``max_s``. A key with no
    event for ``forget_s`` seconds starts again from zero."""

    def __init__(
        self,
        *,
        free: int,
        base_s: float = 1.0,
        max_s: float = 900.0,
        forget_s: float = 3600.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free < 0 or base_s <= 0 or max_s < base_s or forget_s <= 0 or max_keys <= 0:
            raise ValueError("free >= 0, 0 < base_s <= max_s, forget_s > 0, max_keys > 0")
        self.free, self.base_s, self.max_s = free, base_s, max_s
        self.forget_s, self.max_keys = forget_s, max_keys
        self.clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may act again (0: now)."""
        entry = self._live(key)
        return max(0.0, entry.blocked_until - self.clock()) if entry is not None else 0.0

    def check(self, key: Hashable, what: str = "requests") -> None:
        """Raise :class:`TooManyRequests` while ``key`` is blocked."""
        wait = self.retry_after(key)
        if wait > 0:
            raise TooManyRequests(f"too many {what}; try again in {_seconds(wait)}", wait)

    def hit(self, key: Hashable) -> float:
        """Count one event for ``key``; return how long it is now blocked (0: not)."""
        now = self.clock()
        entry = self._live(key)
        if entry is None:
            entry = _Entry(0, now, 0.0)
            self._entries[key] = entry
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        entry.events += 1
        entry.last = now
        self._entries.move_to_end(key)
        over = entry.events - self.free
        if over <= 0:
            return 0.0
        delay = min(self.max_s, self.base_s * 2.0 ** min(over - 1, 64))
        entry.blocked_until = max(entry.blocked_until, now + delay)
        return delay

    def reset(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def _live(self, key: Hashable) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now - entry.last >= self.forget_s and now >= entry.blocked_until:
            del self._entries[key]
            return None
        return entry

    def __len__(self) -> int:
        return len(self._entries)


def _seconds(wait: float) -> str:
    whole = int(wait) + (wait > int(wait))
    return f"{whole} second{'s' if whole != 1 else ''}"
