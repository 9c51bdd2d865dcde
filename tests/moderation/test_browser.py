"""An artist files a takedown notice in a real browser (Debian's Chromium, Playwright)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from tests.catalog.conftest import PASSWORD
from tests.web.conftest import (  # noqa: F401 - fixtures, shared with the web UI's tests
    DESKTOP,
    Catalog,
    base_url,
    browser,
    chromium_path,
    new_context,
    shoot,
    site,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_artist_files_a_notice_from_a_model_page(
    browser: Any,  # noqa: F811
    site: tuple[TestClient, Node, Catalog],  # noqa: F811
) -> None:
    client, _node, catalog = site
    url, fox = base_url(client), catalog.models["fox"]
    context = await new_context(browser, viewport=DESKTOP)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(f"{url}/models/{fox['id']}")
        await page.get_by_role("link", name="Report / takedown").click()
        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(re.compile(r"/takedowns/new\?target=model"))
        targets = page.get_by_label("Targets")
        assert await targets.input_value() == f"model:{fox['civitas']['rootId']}"

        await page.get_by_label("Your name").fill("Alice Painter")
        await page.get_by_label("Contact").fill("alice@example.org")
        await page.get_by_label("Your works concerned").fill("My watercolor fox series")
        await page.get_by_label("Reason").select_option("artist_opt_out")
        await page.get_by_label("good faith").check()
        await page.get_by_label("is accurate").check()
        await shoot(page, "takedown-form", full_page=True)
        await page.get_by_role("button", name="File the notice").click()

        await page.wait_for_url(re.compile(r"/takedowns/[0-9a-f]{64}$"))
        await page.get_by_role("heading", name="Takedown notice").wait_for()
        await page.get_by_text("Your notice was filed").wait_for()
        await page.get_by_role("link", name="Watercolor Fox").wait_for()
        assert "pending" in await page.locator(".model-byline").inner_text()
        await shoot(page, "takedown-status")
    finally:
        await context.close()
    assert errors == []
