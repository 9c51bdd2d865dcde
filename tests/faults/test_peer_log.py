"""A peer going down, backing off and recovering is logged once per change, with the
reason and the next try (issue 14.6)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.p2p.test_torrents import free_port, start_node


def _events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "civitas.federation" and r.getMessage().startswith("peer ")
    ]


async def test_peer_down_backoff_and_recovery_are_each_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="civitas.federation")
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            fed = b.node.federation
            for live in (a, b):  # rounds run only when the test says
                await live.node.federation.stop()
            await a.node.federation.add_peer(b.url)  # peering is both ways
            peer = await fed.add_peer(a.url)
            await fed.sync_all(force=True)
            assert _events(caplog) == [], [(r.peer, r.why) for r in _events(caplog)]  # type: ignore[attr-defined]

            dead = f"http://127.0.0.1:{free_port()}"
            await fed._update(peer.did, url=dead)  # A goes away
            await fed.sync_all(force=True)
            await fed.sync_all(force=True)
            await fed._update(peer.did, url=a.url)  # and comes back
            await fed.sync_all(force=True)
            await fed.sync_all(force=True)

            down, again, back = _events(caplog)
            assert down.getMessage() == "peer down" and down.levelno == logging.WARNING
            assert f"cannot reach {dead}" in down.why  # type: ignore[attr-defined]
            assert down.failures == 1 and down.next_try  # type: ignore[attr-defined]
            assert again.getMessage() == "peer still down, backing off"
            assert again.failures == 2 and again.next_try > down.next_try  # type: ignore[attr-defined]
            assert back.getMessage() == "peer recovered" and back.failures == 2  # type: ignore[attr-defined]
