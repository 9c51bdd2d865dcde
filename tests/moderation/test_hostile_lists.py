"""A subscribed takedown list served by a hostile node: every read is bounded.

The list is a real aiohttp server on 127.0.0.1 signing with its own key; the node under
test subscribes to it by URL and reads it as it would any other node's list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.moderation import schemas
from node.moderation.list_pages import MAX_LIST_PAGES
from node.p2p.keys import SigningKey
from node.p2p.records import Record, sign_record
from tests.moderation.conftest import start_node
from tests.moderation.test_guard_rails import notice_body
from tests.p2p.test_torrents import LiveNode


class HostileList:
    """A node's takedown list that misbehaves as ``mode`` says; counts the pages asked."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.key = SigningKey.generate()
        self.pages = 0
        self.smuggled: Record | None = None
        self.honest: list[Record] = []  # the notice and decision a smuggling list also lists
        self.server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/civitas", self.well_known)
        app.router.add_get("/moderation/v1/takedowns", self.takedowns)
        return app

    async def well_known(self, request: web.Request) -> web.Response:
        return web.json_response({"did": self.key.did, "name": "hostile list"})

    def decided(self, n: int) -> tuple[Record, Record]:
        """A notice and this node's decision on it."""
        claimant = SigningKey.generate()
        target = [{"kind": "file", "value": bytes([n % 256]) * 32}]
        notice = sign_record(claimant, schemas.NOTICE, notice_body(claimant.did, target))
        decision = sign_record(
            self.key,
            schemas.DECISION,
            {
                "notice": notice.id,
                "verdict": "honor",
                "targets": target,
                "reason": "copyright",
                "action": "remove",
                "moderator": "mallory",
            },
        )
        return notice, decision

    def entry(self, seq: int, notice: Record | None, decision: Record) -> dict[str, Any]:
        return {
            "seq": seq,
            "decision": decision.raw.hex(),
            "notice": notice.raw.hex() if notice is not None else None,
        }

    async def takedowns(self, request: web.Request) -> web.Response:
        self.pages += 1
        after = int(request.query["after"])
        entries: list[dict[str, Any]] = []
        if self.mode == "stuck":  # the same entry, whose seq is the cursor, forever
            notice, decision = self.decided(0)
            entries = [self.entry(max(after, 1), notice, decision)]
        elif self.mode == "endless":  # honest-looking progress, without end
            notice, decision = self.decided(after + 1)
            entries = [self.entry(after + 1, notice, decision)]
        elif self.mode == "smuggle":  # a model record in the notice slot, then the real one
            notice, decision = self.decided(1)
            self.smuggled = sign_record(
                SigningKey.generate(), "model", {"name": "Smuggled", "type": "LORA"}
            )
            _, other = self.decided(2)
            self.honest = [notice, decision]
            entries = [self.entry(1, self.smuggled, other), self.entry(2, notice, decision)]
            return web.json_response({"node": self.key.did, "entries": entries, "next": None})
        # "empty_next": no entries, but "next" says there is more
        return web.json_response({"node": self.key.did, "entries": entries, "next": after + 1})


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    # The background loop never polls: only the test's reads, whose pages are counted.
    async for live in start_node(tmp_path / "n", torrent=False, list_interval_s=10**9):
        yield live


async def subscribed(node: LiveNode, mode: str) -> tuple[HostileList, dict[str, Any]]:
    hostile = HostileList(mode)
    hostile.server = TestServer(hostile.app(), host="127.0.0.1")
    await hostile.server.start_server()
    url = str(hostile.server.make_url("")).rstrip("/")
    async with asyncio.timeout(20):  # unbounded, it would never return
        sub = await node.node.moderation.subscribe(url, "review")
    await hostile.server.close()
    return hostile, sub


@pytest.mark.parametrize(("mode", "pages"), [("empty_next", 1), ("stuck", 2)])
async def test_a_list_that_makes_no_progress_is_left_at_once_and_reported(
    node: LiveNode, mode: str, pages: int
) -> None:
    hostile, sub = await subscribed(node, mode)
    assert hostile.pages == pages  # stuck: its first page did advance the cursor
    assert "no progress" in sub["last_error"]


async def test_an_endless_list_is_read_a_bounded_number_of_pages_per_poll(
    node: LiveNode,
) -> None:
    hostile, sub = await subscribed(node, "endless")
    assert hostile.pages == MAX_LIST_PAGES
    assert sub["cursor"] == MAX_LIST_PAGES  # kept: the next poll goes on from there
    assert sub["last_error"] is None


async def test_only_the_notice_a_decision_names_is_taken_from_a_list(node: LiveNode) -> None:
    hostile, sub = await subscribed(node, "smuggle")
    assert hostile.smuggled is not None
    assert await node.node.log.get(hostile.smuggled.id) is None  # no budget bypass
    assert "not the takedown_notice" in sub["last_error"]
    assert sub["cursor"] == 2  # the honest entry after it was read
    for record in hostile.honest:
        assert await node.node.log.get(record.id) is not None
