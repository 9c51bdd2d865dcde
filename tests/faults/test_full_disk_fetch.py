"""A fetch that meets a full disk says so and resumes when space returns (issue 14.4).

The full disk is a real one: a small tmpfs mounted over the fetching node's file store
(HOME/files, where libtorrent writes the download), enlarged later with ``remount``. This
needs root (CI runs as root); elsewhere the test is skipped with the reason. A symlink to
/dev/full, which the other full-disk tests use, does not suit libtorrent: it sizes and
maps its files.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

from node.app import build_node
from node.config import load_config
from node.home import Home
from tests.catalog.conftest import PASSWORD, lora_file
from tests.faults.test_storage_errors import mounted_tmpfs
from tests.p2p.test_torrents import LiveNode, deliver_records, start_node
from tests.test_cli import civitas, http_get, ok, refused, serving


async def test_a_full_disk_pauses_the_fetch_says_so_and_it_resumes(tmp_path: Path) -> None:
    home_b = tmp_path / "b"
    ok(civitas(home_b, "init", "--host", "127.0.0.1", "--port", "0"))
    async for a in start_node(tmp_path / "a"):
        await _run(a, home_b, tmp_path)


async def _run(a: LiveNode, home_b: Path, tmp_path: Path) -> None:
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    path = lora_file(tmp_path / "big.safetensors", 9, rank=384)  # about 3.4 MB
    result = await a.node.catalog.publish_path(alice.did, path, {"name": "Big"})
    file = result["model"]["modelVersions"][0]["files"][0]["civitas"]
    magnet = re.sub(r"&ws=[^&]*", "", file["magnet"])  # BitTorrent only: no web seed
    b_node = build_node(load_config(home_b, environ={}), Home(home_b))
    await deliver_records(a.node, b_node)
    await b_node.db.close()
    token = Home(home_b).admin_token()

    def status(url: str) -> dict[str, Any]:
        code, body = http_get(f"{url}/api/downloads/{file['infohash']}", token)
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    with (
        mounted_tmpfs(home_b / "files", "size=1m"),
        serving(home_b, tmp_path / "b.err") as server,
    ):
        fetched = await asyncio.to_thread(civitas, home_b, "fetch", magnet, "--timeout", "60")
        err = refused(fetched)  # exits non-zero, with libtorrent's reason
        assert "fetch paused" in err and "No space left on device" in err, err
        paused = await asyncio.to_thread(status, server.url)
        assert paused["state"] == "paused" and "disk is full" in paused["error"], paused
        code, listing = await asyncio.to_thread(http_get, f"{server.url}/api/downloads", token)
        assert code == 200 and listing["downloads"][0]["error"] == paused["error"]
        page = await asyncio.to_thread(_page, f"{server.url}/downloads", token)
        assert "No space left on device" in page  # the web UI's downloads page says it too

        remount = ["mount", "-o", "remount,size=64m", str(home_b / "files")]
        await asyncio.to_thread(subprocess.run, remount, check=True)  # space returns
        for _ in range(300):
            after = await asyncio.to_thread(status, server.url)
            if after["state"] == "complete":
                break
            await asyncio.sleep(0.1)
        assert after["state"] == "complete" and after["error"] is None, after
        stored = next((home_b / "files").glob(f"*/*/{file['sha256']}"))
        assert stored.read_bytes() == path.read_bytes()


def _page(url: str, token: str) -> str:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as resp:
        return resp.read().decode()
