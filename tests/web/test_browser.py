"""The web UI in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from node.app import Node
from node.catalog.genmeta import format_a1111
from node.render import CSP
from tests.catalog.conftest import PASSWORD, lora_file, png_bytes
from tests.web.conftest import DESKTOP, PHONE, Catalog, base_url, new_context, shoot

pytestmark = pytest.mark.asyncio(loop_scope="module")
Site = tuple[TestClient, Node, Catalog]


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh browser context; it fails the test on script errors or CSP reports."""
    context = await new_context(browser, viewport=DESKTOP)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    opened.on("pageerror", lambda e: problems.append(str(e)))
    yield opened
    await context.close()
    assert problems == []


async def log_in(page: Any, url: str, next_path: str = "/") -> None:
    await page.goto(f"{url}/login?next={next_path}")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{url}{next_path}")


def card_names(page: Any) -> Any:
    return page.locator(".cards .card-title").all_inner_texts()


async def test_browse_search_and_filter(page: Any, site: Site) -> None:
    client, _node, _catalog = site
    url = base_url(client)
    response = await page.goto(url + "/")
    assert response.headers["content-security-policy"] == CSP
    assert sorted(await card_names(page)) == ["Bad Hands Embedding", "Neon City", "Watercolor Fox"]
    card = page.locator(".card", has_text="Watercolor Fox")
    for text in ("LORA", "SD 1.5", "PG", "alice"):
        await card.get_by_text(text, exact=True).first.wait_for()
    assert await card.locator("img").get_attribute("alt") == "Preview image of Watercolor Fox"

    await page.get_by_role("searchbox", name="Search models").fill("neon")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"\?q=neon"))
    assert await card_names(page) == ["Neon City"]

    await page.goto(url + "/")
    await page.get_by_label("Type").select_option("TextualInversion")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"type=TextualInversion"))
    assert await card_names(page) == ["Bad Hands Embedding"]

    await page.goto(url + "/tags")
    await page.get_by_role("link", name=re.compile("^animals")).click()
    assert await card_names(page) == ["Watercolor Fox"]


async def test_model_page_hashes_download_and_permissions(page: Any, site: Site) -> None:
    client, _node, catalog = site
    fox = catalog.models["fox"]
    version = fox["modelVersions"][0]
    await page.goto(base_url(client) + "/")
    await page.get_by_role("link", name=re.compile("Watercolor Fox")).first.click()
    await page.wait_for_url(f"**/models/{fox['id']}")
    assert await page.locator("h1").inner_text() == "Watercolor Fox"
    sha = page.locator('code[data-hash="SHA256"]')
    assert await sha.inner_text() == version["files"][0]["hashes"]["SHA256"]
    download = page.get_by_role("link", name=re.compile("^Download"))
    assert await download.get_attribute("href") == f"/api/download/models/{version['id']}"
    async with page.expect_download() as waiting:
        await download.click()
    saved = await (await waiting.value).path()
    size = await asyncio.to_thread(os.path.getsize, saved)
    assert size == version["files"][0]["civitas"]["size"]
    permissions = page.locator(".permissions")
    allowed = await permissions.locator(".allowed").all_inner_texts()
    assert any("Sell images they generate" in a for a in allowed)
    denied = await permissions.locator(".denied").all_inner_texts()
    assert any("Share merges using this model" in d for d in denied)
    assert await page.locator(".trigger-words code").all_inner_texts() == [
        "foxstyle",
        "watercolor fox",
    ]
    assert await page.locator(".prose strong").inner_text() == "watercolor"
    assert await page.locator(".gallery img").count() == 2


async def test_xss_in_a_description_stays_inert(page: Any, site: Site, tmp_path: Path) -> None:
    client, node, catalog = site
    alice = await node.accounts.get_user("alice")
    evil = await node.catalog.publish_path(
        alice.did,
        lora_file(tmp_path / "evil.safetensors", 7),
        {"name": "<img src=x onerror=alert(2)>", "description": "<script>alert(3)</script>"},
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    await page.goto(f"{base_url(client)}/models/{catalog.models['neon']['id']}")
    prose = page.locator(".prose")
    assert "Try this:" in await prose.inner_text()
    assert await prose.locator("strong").inner_text() == "bold"
    assert await prose.locator("script").count() == 0
    assert await page.locator("[onerror]").count() == 0
    assert await prose.locator("a[href^='javascript']").count() == 0
    await page.goto(f"{base_url(client)}/models/{evil['model']['id']}")
    assert await page.locator("h1").inner_text() == "<img src=x onerror=alert(2)>"
    await page.goto(base_url(client) + "/")
    await page.wait_for_timeout(200)
    assert dialogs == []


async def test_image_page_shows_and_copies_generation_data(browser: Any, site: Site) -> None:
    client, _node, catalog = site
    context = await new_context(
        browser, viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    try:
        page = await context.new_page()
        await page.goto(f"{base_url(client)}/models/{catalog.models['neon']['id']}")
        await page.locator(".gallery a").first.click()
        await page.wait_for_url("**/images/*")
        assert "a watercolor fox in a forest" in await page.locator(".prompt").first.inner_text()
        params = await page.locator(".params").inner_text()
        assert "1234" in params and "Euler a" in params and "7.5" in params
        linked = page.locator(".resources a")
        assert await linked.inner_text() == "Watercolor Fox · v1"
        await linked.click()
        await page.wait_for_url(f"**/models/{catalog.models['fox']['id']}?version=*")
        await page.go_back()

        meta = catalog.models["neon"]["modelVersions"][0]["images"][0]["meta"]
        button = page.get_by_role("button", name="Copy generation data (A1111 format)")
        assert await button.get_attribute("data-copy") == format_a1111(meta)
        await button.click()
        await (
            page.get_by_role("button", name="Copy generation data (A1111 format)")
            .filter(has_text="Copied")
            .wait_for()
        )
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied == format_a1111(meta)
        assert copied.startswith("a watercolor fox in a forest")
        for part in (
            "\nNegative prompt: blurry, lowres\nSteps: 20",
            "Sampler: Euler a",
            "Seed: 1234",
        ):
            assert part in copied
    finally:
        await context.close()


async def test_publish_with_javascript_shows_upload_progress(
    page: Any, site: Site, tmp_path: Path
) -> None:
    client, _node, _catalog = site
    url = base_url(client)
    await log_in(page, url, "/publish")
    big = lora_file(tmp_path / "big.safetensors", 11, rank=400)  # a few MB
    assert big.stat().st_size > 3_000_000
    await page.get_by_label("Name", exact=True).fill("Big Brush")
    await page.get_by_label("Type").select_option("LORA")
    await page.get_by_label("Base model").select_option("SD 1.5")
    await page.get_by_label("Tags").fill("brush, big")
    await page.get_by_label("Trigger words").fill("bigbrush")
    await page.get_by_label("Preview images").set_input_files(
        {"name": "brush.png", "mimeType": "image/png", "buffer": png_bytes(6, (256, 320))}
    )
    await page.get_by_label("Model file").set_input_files(str(big))
    # The node's own stages arrive by Server-Sent Events; they are noted outside the page,
    # which leaves for the model page once published.
    server_texts: list[str] = []

    def note_server(text: str) -> None:
        server_texts.append(text)

    await page.expose_function("noteServer", note_server)
    await page.evaluate(
        """() => {
          window.seen = {values: [], texts: []};
          const bar = document.querySelector('#upload-bar');
          const status = document.querySelector('#upload-status');
          const server = document.querySelector('#upload-server');
          new MutationObserver(() => window.seen.values.push(bar.value))
            .observe(bar, {attributes: true});
          new MutationObserver(() => window.seen.texts.push(status.textContent))
            .observe(status, {childList: true, characterData: true, subtree: true});
          new MutationObserver(() => window.noteServer(server.textContent))
            .observe(server, {childList: true, characterData: true, subtree: true});
        }"""
    )
    await page.get_by_role("button", name="Publish").click()
    await page.wait_for_function("() => document.querySelector('#upload-bar').value >= 100")
    seen = await page.evaluate("window.seen")
    assert max(seen["values"]) == 100
    assert any(re.search(r"MB of 3\.\d MB · \d+% · .+/s$", t) for t in seen["texts"]), seen
    await page.wait_for_url(re.compile(r"/models/\d+$"))
    assert await page.locator("h1").inner_text() == "Big Brush"
    assert await page.locator(".gallery img").count() == 1
    assert server_texts, "no server-side progress was shown"
    assert all(t.startswith("Server: received ") for t in server_texts), server_texts
    assert re.fullmatch(r"Server: received \d+\.\d MB — checked and stored\.", server_texts[-1])
    await page.goto(url + "/")
    assert "Big Brush" in await card_names(page)


async def test_publish_without_javascript(browser: Any, site: Site, tmp_path: Path) -> None:
    client, _node, _catalog = site
    url = base_url(client)
    context = await new_context(browser, viewport=DESKTOP, java_script_enabled=False)
    try:
        page = await context.new_page()
        await log_in(page, url, "/publish")
        await page.get_by_label("Name", exact=True).fill("Plain Form Fox")
        await page.get_by_label("Description").fill("No *script* needed")
        await page.get_by_label("Preview images").set_input_files(
            {"name": "p.png", "mimeType": "image/png", "buffer": png_bytes(8)}
        )
        await page.get_by_label("Model file").set_input_files(
            str(lora_file(tmp_path / "plain.safetensors", 12))
        )
        await page.get_by_role("button", name="Publish").click()
        await page.wait_for_url(re.compile(r"/models/\d+$"))
        assert await page.locator("h1").inner_text() == "Plain Form Fox"
        assert await page.locator(".prose em").inner_text() == "script"
        assert await page.locator("button[data-copy]").first.is_hidden()  # copy needs JS
    finally:
        await context.close()


async def test_phone_layout_and_screenshots(browser: Any, site: Site) -> None:
    """No sideways scrolling at 390 px; screenshots of the main pages at both sizes."""
    client, _node, catalog = site
    url = base_url(client)
    neon = catalog.models["neon"]
    image_sha = neon["modelVersions"][0]["images"][0]["civitas"]["sha256"]
    pages = {
        "home": "/",
        "model": f"/models/{catalog.models['fox']['id']}",
        "image": f"/images/{image_sha}",
        "publish": "/publish",
    }
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = await new_context(browser, viewport=viewport)
        try:
            page = await context.new_page()
            await log_in(page, url)
            for name, path in pages.items():
                await page.goto(url + path)
                await page.wait_for_load_state("networkidle")
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], (name, size_name, width)
                await shoot(page, f"{name}-{size_name}")
                if name in ("model", "image") and size_name == "phone":
                    await shoot(page, f"{name}-{size_name}-full", full_page=True)
        finally:
            await context.close()
    context = await new_context(browser, viewport=DESKTOP, color_scheme="dark")
    try:
        page = await context.new_page()
        await page.goto(url + pages["model"])
        await shoot(page, "model-desktop-dark")
    finally:
        await context.close()
