"""Outgoing HTTP to other nodes: every call has a timeout, a response size cap and no
redirects (DESIGN.md section 4). Only peers and URLs an operator named are contacted."""

from __future__ import annotations

import aiohttp

from node.errors import CivitasError

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class PeerError(CivitasError):
    code = "peer_error"
    status = 502


async def get_capped(url: str, limit: int, limits: aiohttp.ClientTimeout = TIMEOUT) -> bytes:
    """The body of a 200 answer to ``GET url``, at most ``limit`` bytes, or PeerError."""
    try:
        async with (
            aiohttp.ClientSession(timeout=limits) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            body = await resp.content.read(limit + 1)
            if resp.status != 200:
                raise PeerError(f"{url} answered {resp.status}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PeerError(f"cannot reach {url}: {exc}") from None
    if len(body) > limit:
        raise PeerError(f"{url} sent more than {limit} bytes")
    return body
