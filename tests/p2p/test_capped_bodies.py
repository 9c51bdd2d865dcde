"""Bodies that arrive in several pieces are read whole, up to their cap and no further.

One ``StreamReader.read(n)`` returns only what has arrived: a peer's 181 KB records page
came back as 128 KB, a push over 64 KB failed its signature, a 788 KB preview never
federated. These servers send their bodies in pieces, with pauses between them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from node.http import error_middleware, read_capped
from node.p2p.federation import wire
from node.p2p.federation.routes import MAX_INBOX_BYTES
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey
from node.p2p.outgoing import PeerError, get_capped
from node.p2p.records import sign_record
from tests.p2p.test_federation import pair  # noqa: F401  (a fixture)
from tests.p2p.test_torrents import LiveNode

PIECE = 16 * 1024


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]
        await asyncio.sleep(0.005)  # the network, not the test, is slow


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[TestServer, dict[str, bytes]]]:
    """Answers ``GET /{name}`` with ``bodies[name]``, sent in pieces; ``POST /echo`` reads
    its body with :func:`read_capped` (cap in ``?cap=``) and answers its length."""
    bodies: dict[str, bytes] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        async for piece in _pieces(bodies[request.match_info["name"]]):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def echo(request: web.Request) -> web.Response:
        body = await read_capped(request.content, int(request.query["cap"]), "the echo body")
        return web.json_response({"size": len(body)})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/{name}", serve)
    app.router.add_post("/echo", echo)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, bodies


@pytest.mark.parametrize("size", [181_000, 788_000])
async def test_get_capped_reads_a_body_sent_in_pieces(
    slow_server: tuple[TestServer, dict[str, bytes]], size: int
) -> None:
    server, bodies = slow_server
    bodies["page"] = os.urandom(size)
    assert await get_capped(str(server.make_url("/page")), 1024 * 1024) == bodies["page"]


async def test_get_capped_takes_its_cap_exactly_and_refuses_one_byte_more(
    slow_server: tuple[TestServer, dict[str, bytes]],
) -> None:
    server, bodies = slow_server
    bodies["blob"] = os.urandom(100_000)
    url = str(server.make_url("/blob"))
    assert await get_capped(url, 100_000) == bodies["blob"]
    with pytest.raises(PeerError, match="more than the limit of 99999 bytes"):
        await get_capped(url, 99_999)


async def test_a_request_body_sent_in_pieces_is_read_whole_up_to_its_cap(
    slow_server: tuple[TestServer, dict[str, bytes]],
) -> None:
    server, _ = slow_server
    data = os.urandom(200_000)
    async with ClientSession() as session:
        for cap, status in ((200_000, 200), (199_999, 413)):
            url = server.make_url("/echo").with_query(cap=cap)
            async with session.post(url, data=_pieces(data)) as resp:
                assert resp.status == status
                answer = await resp.json()
            if status == 200:
                assert answer == {"size": len(data)}
            else:
                assert answer["error"] == "payload_too_large"
                assert "199999 bytes" in answer["message"]


async def test_a_push_over_64_kb_sent_in_pieces_is_accepted(
    pair: tuple[LiveNode, LiveNode],  # noqa: F811
) -> None:
    a, b = pair
    key = SigningKey.from_seed(b"c" * 32)
    batch = [sign_record(key, "profile", {"name": f"p{i}", "bio": "b" * 3900}) for i in range(30)]
    body = wire.encode_batch([r.raw for r in batch])
    assert len(body) > 100_000
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    async with ClientSession() as session:
        async with session.post(
            f"{b.url}/federation/v1/inbox", data=_pieces(body), headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"accepted": 30, "rejected": []}


async def test_an_inbox_batch_over_its_cap_is_refused_with_413(
    pair: tuple[LiveNode, LiveNode],  # noqa: F811
) -> None:
    a, b = pair
    body = b"\x00" * (MAX_INBOX_BYTES + 1)
    headers = sign_request(
        a.node.node_key, "POST", "/federation/v1/inbox", body, b.node.node_key.did
    )
    async with ClientSession() as session:
        async with session.post(f"{b.url}/federation/v1/inbox", data=body, headers=headers) as resp:
            assert resp.status == 413
            answer = await resp.json()
    assert answer["error"] == "payload_too_large"
    assert f"{MAX_INBOX_BYTES}" in answer["message"]
