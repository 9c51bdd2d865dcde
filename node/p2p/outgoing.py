"""Outgoing HTTP to other nodes: every call has a timeout, a response size cap and no
redirects (DESIGN.md section 4). Only peers and URLs an operator named are contacted.

Where only public addresses may be reached (announced peers, claimants' proof URLs), the
check is made by the resolver of the connection itself (:class:`CheckedResolver`): the
name is resolved once, every address checked, and only those addresses are connected
to. Checking first and letting the client resolve again at connect time left a window
in which a name could answer a public address to the check and 127.0.0.1 to the
connection (DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from node.errors import CivitasError, PayloadTooLarge
from node.http import read_capped

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerError(CivitasError):
    code = "peer_error"
    status = 502


def is_public(address: Address) -> bool:
    return address.is_global


class CheckedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and answers only with
    addresses ``allowed`` takes; a name with any other address is refused as a whole."""

    def __init__(
        self,
        allowed: Callable[[Address], bool] = is_public,
        inner: AbstractResolver | None = None,
    ) -> None:
        self.allowed = allowed
        self.inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        for answer in answers:
            self.check(host, ipaddress.ip_address(answer["host"]))
        return answers

    def check(self, host: str, address: Address) -> None:
        if not self.allowed(address):
            raise PeerError(f"{host} resolves to a non-public address ({address})")

    async def close(self) -> None:
        await self.inner.close()


class CheckedConnector(aiohttp.TCPConnector):
    """A connector whose every connection goes to an address its resolver checked; a URL
    that names an IP address (no lookup to check) is checked here."""

    def __init__(self, resolver: CheckedResolver, **kwargs: Any) -> None:
        super().__init__(resolver=resolver, **kwargs)
        self.checked_by = resolver

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        host = req.url.raw_host or ""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            self.checked_by.check(host, literal)
        return await super().connect(req, traces, timeout)


def client_session(
    limits: aiohttp.ClientTimeout = TIMEOUT,
    *,
    public_only: bool = False,
    resolver: CheckedResolver | None = None,
) -> aiohttp.ClientSession:
    """A client session; ``public_only`` (or a ``resolver`` of the caller's): it connects
    only to addresses its resolver checked."""
    if resolver is None and public_only:
        resolver = CheckedResolver()
    connector = CheckedConnector(resolver) if resolver is not None else None
    return aiohttp.ClientSession(timeout=limits, connector=connector)


async def get_capped(
    url: str,
    limit: int,
    limits: aiohttp.ClientTimeout = TIMEOUT,
    *,
    public_only: bool = False,
    resolver: CheckedResolver | None = None,
) -> bytes:
    """The body of a 200 answer to ``GET url``, at most ``limit`` bytes, or PeerError.
    ``public_only``: refused unless every address ``url``'s host has is public, checked
    on the connection's own lookup."""
    try:
        async with (
            client_session(limits, public_only=public_only, resolver=resolver) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise PeerError(f"{url} answered {resp.status}")
            return await read_capped(resp.content, limit)
    except PayloadTooLarge:
        raise PeerError(f"{url} sent more than the limit of {limit} bytes") from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PeerError(unreachable(url, exc, limits)) from None


def unreachable(url: str, exc: BaseException, limits: aiohttp.ClientTimeout) -> str:
    """``cannot reach URL: why``; a timeout (whose text is empty) says after how long."""
    if isinstance(exc, TimeoutError) and not str(exc):
        after = limits.total or limits.sock_read or limits.connect
        return f"cannot reach {url}: timed out" + (f" after {after:g} s" if after else "")
    return f"cannot reach {url}: {exc or type(exc).__name__}"


async def refuse_private(url: str) -> None:
    """PeerError unless every address ``url``'s host resolves to is public (DESIGN.md
    section 4: private, loopback and link-local addresses only for peers an operator
    named). An early, clear refusal only: what protects a connection is that it is made
    with ``public_only`` (the address checked is the address connected to)."""
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
