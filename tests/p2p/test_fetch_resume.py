"""A download survives ``kill -9`` of the fetching node and resumes where it was."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.app import build_node
from node.config import load_config
from node.home import Home
from tests.catalog.conftest import PASSWORD, lora_file
from tests.p2p.test_torrents import LiveNode, deliver_records, start_node
from tests.test_cli import civitas, http_get, ok, serving

RATE = 600_000  # bytes per second A uploads, so that B is still busy when it is killed


@pytest.fixture
async def slow_seeder(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for live in start_node(tmp_path / "a", upload_rate_limit=RATE):
        yield live


async def test_a_killed_download_resumes_without_fetching_everything_again(
    slow_seeder: LiveNode, tmp_path: Path
) -> None:
    a = slow_seeder
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    path = lora_file(tmp_path / "big.safetensors", 9, rank=384)  # about 3.4 MB
    result = await a.node.catalog.publish_path(alice.did, path, {"name": "Big"})
    civitas_file = result["model"]["modelVersions"][0]["files"][0]["civitas"]
    infohash, size = civitas_file["infohash"], civitas_file["size"]
    # Without the web seed: B must get the pieces from A's rate-limited BitTorrent peer.
    magnet = re.sub(r"&ws=[^&]*", "", civitas_file["magnet"])

    home_b = tmp_path / "b"
    ok(civitas(home_b, "init", "--host", "127.0.0.1", "--port", "0"))
    b_config = load_config(home_b, environ={})
    b_node = build_node(b_config, Home(home_b))
    await deliver_records(a.node, b_node)
    await b_node.db.close()
    token = Home(home_b).admin_token()

    def status(url: str) -> dict[str, Any]:
        code, body = http_get(f"{url}/api/downloads/{infohash}", token)
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    with serving(home_b, tmp_path / "b1.err") as server:
        # The CLI runs in a thread: node A answers on this test's event loop.
        ok(await asyncio.to_thread(civitas, home_b, "fetch", magnet, "--no-wait"))
        for _ in range(300):
            before = await asyncio.to_thread(status, server.url)
            if before["done"] >= size // 2:
                break
            await asyncio.sleep(0.05)
        assert before["state"] == "downloading" and before["done"] < size, before
        server.proc.kill()  # kill -9: no clean shutdown, no resume data written now
        server.proc.wait()

    with serving(home_b, tmp_path / "b2.err") as server:
        for _ in range(600):
            after = await asyncio.to_thread(status, server.url)
            if after["state"] == "complete":
                break
            await asyncio.sleep(0.1)
        assert after["state"] == "complete", after
    stored = next((home_b / "files").glob(f"*/*/{civitas_file['sha256']}"))
    assert stored.read_bytes() == path.read_bytes()
    uploaded = a.node.engine.status(infohash).uploaded  # type: ignore[union-attr]
    # Had B started over, A would have sent at least 1.5 x the file.
    assert uploaded < 1.3 * size, (uploaded, size)
