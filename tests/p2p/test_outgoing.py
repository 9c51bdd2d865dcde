"""Outgoing connections that must reach only public addresses connect to exactly the
address that was checked: a name that answers one address to a check and another to the
connection (DNS rebinding) cannot steer the node inward.

The tests stand 127.0.0.2 in for "a public address" (no test may leave 127.0.0.1/8): the
address policy is the resolver's input, like the resolver it wraps.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from node.moderation.proof import check_url
from node.p2p.outgoing import Address, CheckedResolver, PeerError, get_capped

STAND_IN_PUBLIC = ipaddress.ip_address("127.0.0.2")


def stand_in_public(address: Address) -> bool:
    return address == STAND_IN_PUBLIC


class Rebinding(AbstractResolver):
    """Answers each lookup of any name with the next address of ``answers``."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def _server(host: str, text: str, port: int = 0) -> TestServer:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=text)

    app = web.Application()
    app.router.add_get("/", answer)
    return TestServer(app, host=host, port=port)


@pytest.fixture
async def two_hosts() -> AsyncIterator[int]:
    """The same port on the stand-in public address and on 127.0.0.1 (the inside)."""
    public = await _server("127.0.0.2", "public page")
    await public.start_server()
    assert public.port is not None
    inside = await _server("127.0.0.1", "INSIDE: admin page", public.port)
    try:
        await inside.start_server()
    except OSError:
        await public.close()
        pytest.skip("the port is taken on 127.0.0.1")
    yield public.port
    await inside.close()
    await public.close()


async def test_the_connection_goes_to_the_address_that_was_checked(two_hosts: int) -> None:
    url = f"http://rebind.example:{two_hosts}/"
    rebinding = Rebinding("127.0.0.2", "127.0.0.1")  # checked: public; then: inside
    resolver = CheckedResolver(stand_in_public, rebinding)
    assert await get_capped(url, 1024, resolver=resolver) == b"public page"
    assert rebinding.lookups == 1  # one lookup, both for the check and the connection
    # The next connection's lookup answers the inside address: refused, not connected.
    with pytest.raises(PeerError, match=r"non-public address \(127\.0\.0\.1\)"):
        await get_capped(url, 1024, resolver=CheckedResolver(stand_in_public, rebinding))


async def test_public_only_refuses_private_names_and_ip_literals(two_hosts: int) -> None:
    for url in (f"http://127.0.0.1:{two_hosts}/", f"http://localhost:{two_hosts}/"):
        with pytest.raises(PeerError, match="non-public address"):
            await get_capped(url, 1024, public_only=True)
    assert await get_capped(f"http://127.0.0.1:{two_hosts}/", 1024) == b"INSIDE: admin page"


async def test_proof_urls_are_fetched_from_public_addresses_only(two_hosts: int) -> None:
    result = await check_url(f"http://localhost:{two_hosts}/", "did:key:z6Mk")
    assert not result.verified and "non-public address" in result.detail
