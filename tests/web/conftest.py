"""Web UI fixtures: a live node with a few published models, and Debian's Chromium.

Browser tests share one Chromium per module (launching it is the slow part) and open a
new context per test. Their node fixtures run on the module's event loop, where the
browser lives, so the app's server and Playwright can talk to each other.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from safetensors.numpy import save_file

from node.app import Node, build_node, create_app, set_public_url
from tests.catalog.conftest import A1111, PASSWORD, lora_file, png_bytes
from tests.conftest import make_home

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
XSS_DESCRIPTION = (
    "Try this: <script>alert(1)</script> and <img src=x onerror=alert(1)> **bold** "
    "[link](javascript:alert(1))"
)


def embedding_file(path: Path, seed: int = 0) -> Path:
    """A tiny SD 1.5 textual inversion embedding."""
    rng = np.random.default_rng(seed)
    save_file(
        {"emb_params": rng.standard_normal((4, 768), dtype=np.float32).astype(np.float16)},
        str(path),
    )
    return path


@dataclass
class Catalog:
    """What the `catalog` fixture published: model dicts by short name."""

    models: dict[str, dict[str, Any]]


async def publish_samples(node: Node, tmp_path: Path) -> Catalog:
    alice = await node.accounts.add_user("alice", PASSWORD)
    previews = []
    for seed in range(2):
        preview = tmp_path / f"preview{seed}.png"
        preview.write_bytes(png_bytes(seed, (384, 480)))
        previews.append(preview)
    fox = await node.catalog.publish_path(
        alice.did,
        lora_file(tmp_path / "fox.safetensors", 1),
        {
            "name": "Watercolor Fox",
            "description": "Soft **watercolor** foxes.\n\n- loose edges\n- paper texture",
            "tags": ["watercolor", "animals"],
            "trained_words": ["foxstyle", "watercolor fox"],
            "license": "CreativeML OpenRAIL-M",
            "allow_commercial_use": ["Image"],
            "allow_derivatives": False,
        },
        previews=previews[:2],
    )
    # Neon City's image names Watercolor Fox by its AutoV2 hash: the image page links it.
    fox_autov2 = fox["model"]["modelVersions"][0]["files"][0]["hashes"]["AutoV2"]
    neon_preview = tmp_path / "neon.png"
    neon_preview.write_bytes(png_bytes(5, (480, 384), A1111.replace("0123456789", fox_autov2)))
    neon = await node.catalog.publish_path(
        alice.did,
        lora_file(tmp_path / "neon.safetensors", 2, sdxl=True),
        {"name": "Neon City", "description": XSS_DESCRIPTION, "tags": ["city"]},
        previews=[neon_preview],
    )
    emb = await node.catalog.publish_path(
        alice.did,
        embedding_file(tmp_path / "bad-hands.safetensors"),
        {"name": "Bad Hands Embedding", "tags": ["negative"], "trained_words": ["bad-hands"]},
    )
    mature = await node.catalog.publish_path(
        alice.did,
        lora_file(tmp_path / "mature.safetensors", 3),
        {"name": "Mature Thing", "rating": "X"},
    )
    return Catalog(
        {"fox": fox["model"], "neon": neon["model"], "emb": emb["model"], "mature": mature["model"]}
    )


async def start_node(tmp_path: Path) -> Node:
    home, config = make_home(tmp_path / "home")
    built = build_node(config, home)
    await built.db.migrate()
    await built.log.ensure_epoch()
    return built


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; browser tests must run under CI")
        pytest.skip(reason)
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


async def new_context(browser: Any, **options: Any) -> Any:
    """A fresh browser context that gives up on a missing element after 10 s."""
    context = await browser.new_context(**options)
    context.set_default_timeout(10_000)
    return context


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path: Path) -> AsyncIterator[tuple[TestClient, Node, Catalog]]:
    """A live node on 127.0.0.1 (SQLite) with sample models: (client, node, catalog)."""
    built = await start_node(tmp_path)
    samples = await publish_samples(built, tmp_path)
    app = create_app(built, built.home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        set_public_url(app, str(client.make_url("")))
        yield client, built, samples
    await built.db.close()


def base_url(client: TestClient) -> str:
    return str(client.make_url("/")).rstrip("/")


async def shoot(page: Any, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
