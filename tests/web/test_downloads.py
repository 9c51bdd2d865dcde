"""Torrents in the web UI: magnet links, "fetch to this node", the live Downloads page.

Two whole nodes with their own libtorrent sessions; node B's operator fetches A's model
through B's pages in Chromium and watches the Downloads page update itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.catalog.conftest import PASSWORD, lora_file
from tests.p2p.test_torrents import LiveNode, deliver_records, start_node
from tests.web.conftest import DESKTOP, new_context, shoot
from tests.web.test_browser import log_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode, dict[str, Any]]]:
    # A seeds slowly, so that B's operator sees the download in progress.
    async for a in start_node(tmp_path / "a", upload_rate_limit=700_000):
        async for b in start_node(tmp_path / "b"):
            alice = await a.node.accounts.add_user("alice", PASSWORD)
            path = lora_file(tmp_path / "fox.safetensors", 5, rank=384)  # about 3.4 MB
            published = await a.node.catalog.publish_path(alice.did, path, {"name": "Fox"})
            await deliver_records(a.node, b.node)
            await b.node.federation.add_peer(a.url)  # where B looks for files it lacks
            await b.node.accounts.add_user("alice", PASSWORD, "admin")  # B's operator
            yield a, b, published["model"]


async def test_model_page_offers_the_magnet_and_fetch_to_this_node(
    browser: Any, pair: tuple[LiveNode, LiveNode, dict[str, Any]]
) -> None:
    a, b, model = pair
    file = model["modelVersions"][0]["files"][0]
    context = await new_context(browser, viewport=DESKTOP)
    page = await context.new_page()
    try:
        # Anyone sees the magnet link and the .torrent; A holds the file.
        await page.goto(f"{a.url}/models/{model['id']}")
        magnet = page.get_by_role("link", name="Magnet link")
        assert await magnet.get_attribute("href") == file["civitas"]["magnet"]
        assert await page.get_by_role("link", name=".torrent file").count() == 1
        assert await page.get_by_role("button", name="Fetch to this node").count() == 0

        # B's operator fetches it through B's model page and watches the Downloads page.
        await log_in(page, b.url, f"/models/{model['id']}")
        await page.get_by_role("button", name="Fetch to this node").click()
        await page.wait_for_url(f"{b.url}/downloads")
        row = page.locator(f"#downloads tr[data-infohash='{file['civitas']['infohash']}']")
        await row.locator(".state", has_text=re.compile("^complete$")).wait_for(timeout=30_000)
        assert "100.0%" in await row.locator(".pct").inner_text()
        seeding = page.locator("#seeding tr", has_text="fox.safetensors")
        await seeding.locator(".state", has_text="seeding").wait_for(timeout=10_000)
        await shoot(page, "downloads-desktop")

        # Now B holds the file: its model page says so instead of offering a fetch.
        await page.goto(f"{b.url}/models/{model['id']}")
        assert await page.get_by_text("This node holds and seeds this file.").count() == 1
        stored = await b.node.store.local_path(file["civitas"]["sha256"])
        assert stored is not None
    finally:
        await context.close()


async def test_downloads_page_and_events_are_for_admins(
    pair: tuple[LiveNode, LiveNode, dict[str, Any]],
) -> None:
    _, b, _ = pair
    resp = await b.client.get("/downloads", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    resp = await b.client.get("/api/downloads/events")
    assert resp.status == 401
    resp = await b.client.get("/api/downloads/events", headers=b.admin)
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    line = await resp.content.readline()
    assert line == b"event: transfers\n"
    resp.close()
