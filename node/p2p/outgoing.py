"""Outgoing HTTP to other nodes: every call has a timeout, a response size cap and no
redirects (DESIGN.md section 4). Only peers and URLs an operator named are contacted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp

from node.errors import CivitasError, PayloadTooLarge
from node.http import read_capped

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
            if resp.status != 200:
                raise PeerError(f"{url} answered {resp.status}")
            return await read_capped(resp.content, limit)
    except PayloadTooLarge:
        raise PeerError(f"{url} sent more than the limit of {limit} bytes") from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PeerError(f"cannot reach {url}: {exc}") from None


async def refuse_private(url: str) -> None:
    """PeerError unless every address ``url``'s host resolves to is public (DESIGN.md
    section 4: private, loopback and link-local addresses only for peers an operator
    named). Checked when connecting, so a name that later resolves inward is caught."""
    host = urlsplit(url).hostname
    if not host:
        raise PeerError(f"{url} names no host")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PeerError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PeerError(f"{host} resolves to a non-public address ({address})")
