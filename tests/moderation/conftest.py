"""Moderation fixtures: whole live nodes (SQLite, BitTorrent on 127.0.0.1) with users."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw

from node.app import build_node, create_app, set_public_url
from node.db import sqlite_url
from tests.catalog.conftest import PASSWORD
from tests.conftest import make_home
from tests.p2p.test_torrents import LiveNode


async def start_node(
    path: Path, *, torrent: bool = True, **moderation: Any
) -> AsyncIterator[LiveNode]:
    home, config = make_home(path, sqlite_url(path.parent / f"{path.name}.db"))
    config.torrent.enabled = torrent
    config.moderation.proof_allow_private = True
    for key, value in moderation.items():
        setattr(config.moderation, key, value)
    node = build_node(config, home)
    await node.db.migrate()
    app = create_app(node, home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        set_public_url(app, str(client.make_url("")))
        yield LiveNode(node, client)


async def login_headers(live: LiveNode, name: str, role: str = "member") -> dict[str, str]:
    """A user on that node and an API token for them."""
    await live.node.accounts.add_user(name, PASSWORD, role)
    token = await live.node.accounts.create_token(name)
    return {"Authorization": f"Bearer {token}"}


async def peer(one: LiveNode, other: LiveNode) -> None:
    for a, b in ((one, other), (other, one)):
        resp = await a.client.post("/api/admin/peers", json={"url": b.url}, headers=a.admin)
        assert resp.status == 201, await resp.text()


def picture(seed: int = 0, size: int = 256) -> bytes:
    """A PNG with large shapes, like a real picture: PDQ hashes it with quality ≥ 50
    (a fine checkerboard would not survive resizing)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (30, 60, 90))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 16, size // 4))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def near_copy(png: bytes) -> bytes:
    """The same picture resized and re-encoded as JPEG: a different file, a near PDQ."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((image.width * 2, image.height * 2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()
