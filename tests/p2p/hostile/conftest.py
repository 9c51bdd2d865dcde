"""A node under test (background loops stopped: the test drives the rounds), with small
pull budgets, and fake peers that are stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from node.p2p.federation.budgets import PullLimits
from tests.p2p.hostile import forger
from tests.p2p.hostile.fakepeer import FakePeer
from tests.p2p.test_torrents import LiveNode, start_node

LIMITS = PullLimits(
    pages_per_round=5,
    records_per_round=1000,
    pages_per_minute=50,
    records_per_minute=10_000,
    unknown_types_per_minute=50,
    request_timeout_s=1.0,
    round_time_s=5.0,
)

MakePeer = Callable[..., Awaitable[FakePeer]]


def profiles(label: str, n: int) -> list[bytes]:
    signer = forger.key(f"author {label}")
    return [forger.forge(signer, "profile", {"name": f"{label} {i}"}) for i in range(n)]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for node in start_node(tmp_path / "n", enabled=False):
        node.node.federation.limits = LIMITS
        yield node


@pytest.fixture
async def idle(live: LiveNode) -> LiveNode:
    """The node with its federation loops stopped: only the test's rounds run."""
    await live.node.federation.stop()
    return live


@pytest.fixture
async def fake_peer() -> AsyncIterator[MakePeer]:
    started: list[FakePeer] = []

    async def make(
        mode: str = "good", records: list[bytes] | None = None, label: str = ""
    ) -> FakePeer:
        peer = await FakePeer(mode, records or [], label=label or mode).start()
        started.append(peer)
        return peer

    yield make
    for peer in started:
        await peer.stop()
