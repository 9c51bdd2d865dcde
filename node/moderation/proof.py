"""Checking a claimant's proof URLs: does the page they name carry their did:key?

A claimant shows they control a public identity (an artist's website, a social profile)
by publishing their did:key there. The node fetches each URL under the outgoing rules of
DESIGN.md section 4: a size cap, timeouts, no redirects, and — unless the operator
allows it (tests, private networks) — no private, loopback or link-local addresses,
checked on the lookup the connection itself uses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from node.p2p.outgoing import PeerError, get_capped

MAX_PAGE = 512 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


@dataclass(frozen=True)
class ProofResult:
    url: str
    verified: bool
    detail: str

    def public(self) -> dict[str, Any]:
        return {"url": self.url, "verified": self.verified, "detail": self.detail}


async def check_url(url: str, did: str, *, allow_private: bool = False) -> ProofResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ProofResult(url, False, "not an http(s) URL")
    try:
        page = await get_capped(url, MAX_PAGE, TIMEOUT, public_only=not allow_private)
    except PeerError as exc:
        return ProofResult(url, False, exc.message)
    if did.encode() in page:
        return ProofResult(url, True, "the page shows the claimant's did:key")
    return ProofResult(url, False, "the page does not show the claimant's did:key")


async def check_all(urls: list[str], did: str, *, allow_private: bool = False) -> list[ProofResult]:
    return list(
        await asyncio.gather(*(check_url(u, did, allow_private=allow_private) for u in urls))
    )
