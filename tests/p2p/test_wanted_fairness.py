"""Wanted files are fetched fairly: a peer whose blob endpoint stalls holds one request
slot, never all of them, and its backlog (however long) takes turns with the files of
other peers; a blob that sends nothing for the read timeout fails, one that keeps
flowing does not.

Real nodes and a fake peer (a real aiohttp server) on 127.0.0.1; the fake peer pushes
image records naming files that only it claims to hold, as a push flood would.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from node.p2p.records import verify_record
from tests.p2p.hostile import forger
from tests.p2p.hostile.fakepeer import FakePeer, push
from tests.p2p.test_torrents import LiveNode, start_node, wait_for
from tests.p2p.test_wanted import failed_once, held, publish_with_previews


def images(signer_label: str, files: list[bytes]) -> list[bytes]:
    """Image records (no version: a flood needs none) naming these files."""
    signer = forger.key(signer_label)
    return [
        forger.forge(
            signer,
            "image",
            {
                "sha256": hashlib.sha256(data).digest(),
                "size": len(data),
                "width": 8,
                "height": 8,
                "mime": "image/png",
            },
        )
        for data in files
    ]


async def pushed(peer: FakePeer, node: LiveNode, raws: list[bytes]) -> None:
    for at in range(0, len(raws), 50):
        status, answer = await push(peer, node.url, node.node.node_key.did, raws[at : at + 50])
        assert status == 200, answer


def asked(peer: FakePeer) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return sum(peer.blobs_asked.values()) >= 1

    return check


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[[str], Coroutine[Any, Any, FakePeer]]]:
    started: list[FakePeer] = []

    async def make(label: str) -> FakePeer:
        peer = await FakePeer("good", label=label).start()
        started.append(peer)
        return peer

    yield make
    for peer in started:
        await peer.stop()  # releases what stalls


async def test_a_stalling_peers_backlog_does_not_starve_another_peers_preview(
    tmp_path: Path, fakes: Callable[[str], Coroutine[Any, Any, FakePeer]]
) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for n in start_node(tmp_path / "n", enabled=False):
            fed = n.node.federation
            await fed.stop()  # pushes still land; rounds run only when the test says
            stalling = await fakes("stalling")
            stalling.blob_stall_s = 120  # every blob request hangs (until it stops)
            await fed.add_peer(stalling.url)
            await fed.add_peer(a.url)
            flood = [os.urandom(64) for _ in range(200)]  # files nobody holds
            await pushed(stalling, n, images("flooder", flood))

            await wait_for(asked(stalling), "the first blob request to the stalling peer")
            (sha,) = await publish_with_previews(a, tmp_path)  # after the flood
            await fed.sync_all(force=True)

            await wait_for(held(n, sha), "the honest peer's preview, behind the flood")
            assert sum(stalling.blobs_asked.values()) == 1  # one slot, still stalled
            total = await (await n.client.get("/api/admin/wanted", headers=n.admin)).json()
            assert total["count"] == 200  # the flood waits its turns


async def test_a_blob_that_sends_nothing_fails_and_one_that_keeps_flowing_arrives(
    tmp_path: Path, fakes: Callable[[str], Coroutine[Any, Any, FakePeer]]
) -> None:
    async for n in start_node(tmp_path / "n", enabled=False):
        n.node.wanted.read_timeout_s = 0.5
        n.node.wanted.retry_base_s = 3600.0  # one try each here
        fed = n.node.federation
        await fed.stop()
        silent, flowing = await fakes("silent"), await fakes("flowing")
        silent.blob_stall_s = 120
        big = os.urandom(256 * 1024)  # 16 chunks, 0.2 s apart: > 3 read timeouts in all
        flowing.blob_chunk_s = 0.2
        for peer, data in ((silent, os.urandom(1000)), (flowing, big)):
            peer.blobs[hashlib.sha256(data).hexdigest().upper()] = data
            await fed.add_peer(peer.url)
        (quiet,) = images("silent author", [next(iter(silent.blobs.values()))])
        (slow,) = images("flowing author", [big])
        await pushed(silent, n, [quiet])
        await pushed(flowing, n, [slow])

        slow_sha = verify_record(slow).body["sha256"].hex().upper()
        path = await wait_for(held(n, slow_sha), "the slow but flowing file")
        assert path.read_bytes() == big
        quiet_sha = verify_record(quiet).body["sha256"].hex().upper()
        entry = await wait_for(failed_once(n, quiet_sha), "the silent peer's file failing")
        assert "Timeout on reading data" in entry["last_error"], entry
