"""``/api/docs``: the OpenAPI document rendered by the node itself, linked from every page."""

from __future__ import annotations

import html
import re

from aiohttp.test_utils import TestClient

from node.openapi import document


async def test_the_docs_page_lists_every_operation_without_outside_assets(
    client: TestClient,
) -> None:
    resp = await client.get("/api/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = html.unescape(await resp.text())
    doc = document()
    operations = [
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    ]
    missing = [f"{m} {p}" for m, p in operations if f"<code>{m} {p}</code>" not in page]
    assert missing == []
    assert f"{len(operations)} operations" in page
    assert (
        "/api/v1/models/by-hash/{hash}" in page or "/api/v1/model-versions/by-hash/{hash}" in page
    )
    # Everything it loads comes from this node: no CDN, no outside script or style.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith(("/", "#")) for s in sources), sources
    assert "<code>limit</code>" in page  # parameters are listed


async def test_every_page_links_to_the_docs(client: TestClient) -> None:
    home = await (await client.get("/")).text()
    assert 'href="/api/docs"' in home
