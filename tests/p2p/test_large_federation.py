"""Large content federates whole: long descriptions, big previews, pages over 64 KB.

One hundred models with 3 KB descriptions once left a new peer at 0 of 202 records for
good, and a 788 KB preview never arrived: the capped readers cut bodies short. Here node
B joins node A and must end with every record and every preview A has.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from node.catalog.images import MAX_IMAGE_BYTES
from node.catalog.schemas import MAX_DESCRIPTION
from node.errors import RecordMalformed, RecordRejected
from node.p2p.keys import SigningKey
from node.p2p.records import MAX_STRING_BYTES, sign_record
from node.p2p.tables import records
from tests.catalog.conftest import PASSWORD, lora_file
from tests.p2p.test_torrents import LiveNode, start_node, wait_for


def noise_png(seed: int, side: int) -> bytes:
    """A PNG that does not compress: about 3 x side**2 bytes."""
    pixels = os.urandom(side * side * 3) if seed else bytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


async def visible_ids(live: LiveNode) -> set[bytes]:
    async with live.node.db.read() as conn:
        query = sa.select(records.c.id).where(records.c.state == "visible")
        return set((await conn.execute(query)).scalars())


async def peer_with(b: LiveNode, a: LiveNode) -> None:
    resp = await b.client.post("/api/admin/peers", json={"url": a.url}, headers=b.admin)
    assert resp.status == 201, await resp.text()


@pytest.fixture
async def node_a(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async for live in start_node(tmp_path / "a", enabled=False):
        yield live


@contextlib.asynccontextmanager
async def joined(tmp_path: Path, a: LiveNode) -> AsyncIterator[LiveNode]:
    """A new node B that peers with A (and pulls from it)."""
    async for b in start_node(tmp_path / "b", enabled=False):
        await peer_with(b, a)
        yield b


async def test_a_new_peer_gets_every_record_and_preview_of_a_large_catalog(
    node_a: LiveNode, tmp_path: Path
) -> None:
    a = node_a
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    big_previews = [tmp_path / f"big{i}.png" for i in range(3)]
    for i, path in enumerate(big_previews):
        path.write_bytes(noise_png(i + 1, 580))  # ~1 MB each
        assert len(path.read_bytes()) > 900_000
    for i in range(100):
        previews = [big_previews[i]] if i < len(big_previews) else []
        await a.node.catalog.publish_path(
            alice.did,
            lora_file(tmp_path / f"m{i}.safetensors", 100 + i),
            {"name": f"Model {i}", "description": f"{i} " + "d" * 3000},
            previews=previews,
        )
    # The longest descriptions allowed: in characters, and in bytes (two-byte characters).
    longest = ("a" * MAX_DESCRIPTION, "ü" * (MAX_STRING_BYTES // 2))
    for i, text in enumerate(longest):
        await a.node.catalog.publish_path(
            alice.did,
            lora_file(tmp_path / f"long{i}.safetensors", 500 + i),
            {"name": f"Long {i}", "description": text},
        )
    # One byte more is refused, naming the limit.
    with pytest.raises(RecordMalformed, match=f"limited to {MAX_STRING_BYTES} bytes"):
        await a.node.catalog.publish_path(
            alice.did,
            lora_file(tmp_path / "too-long.safetensors", 600),
            {"name": "Too long", "description": "ü" * (MAX_STRING_BYTES // 2) + "a"},
        )
    expected = await visible_ids(a)
    assert len(expected) >= 205  # a profile, 102 models and versions, 3 images

    async with joined(tmp_path, a) as b:
        resp = await b.client.post("/api/admin/sync", headers=b.admin)
        assert resp.status == 200, await resp.text()

        async def all_records() -> bool:
            return expected <= await visible_ids(b)

        await wait_for(all_records, f"all {len(expected)} records on B")
        listed = (await (await b.client.get("/api/v1/models?limit=100")).json())["items"]
        long = {
            m["name"]: m["civitas"]["descriptionMarkdown"]
            for m in listed
            if m["name"].startswith("Long")
        }
        assert long == {"Long 0": longest[0], "Long 1": longest[1]}

        async def previews_held() -> bool:
            for path in big_previews:
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                held = await b.node.store.local_path(sha)
                if held is None:
                    return False
            return True

        await wait_for(previews_held, "the ~1 MB previews on B")


async def _serve_blob(a: LiveNode, data: bytes, stated_size: int) -> str:
    """Put ``data`` in A's store and sign an image record that names it."""
    sha = hashlib.sha256(data).hexdigest().upper()
    store = a.node.store
    temp = store.temp_path()
    temp.write_bytes(data)
    path = store.commit_temp(temp, sha)
    async with a.node.db.write() as conn:
        await store.add_row(conn, sha, len(data), path, in_place=False)
    key = SigningKey.from_seed(b"b" * 32)
    body: dict[str, Any] = {
        "sha256": bytes.fromhex(sha),
        "width": 1,
        "height": 1,
        "size": stated_size,
        "mime": "image/png",
    }
    await a.node.log.accept_verified([sign_record(key, "image", body)])
    return sha


async def test_a_preview_at_the_cap_federates_and_one_over_it_is_refused_with_the_reason(
    node_a: LiveNode, tmp_path: Path
) -> None:
    a = node_a
    at_cap = await _serve_blob(a, os.urandom(MAX_IMAGE_BYTES), MAX_IMAGE_BYTES)
    # A record that understates its file: the bytes are over the cap all the same.
    over = await _serve_blob(a, os.urandom(MAX_IMAGE_BYTES + 1), MAX_IMAGE_BYTES)
    async with joined(tmp_path, a) as b:
        await b.client.post("/api/admin/sync", headers=b.admin)

        async def held() -> Any:
            return await b.node.store.local_path(at_cap)

        assert (await wait_for(held, "the preview at the cap on B")).stat().st_size == (
            MAX_IMAGE_BYTES
        )

        async def refused() -> Any:
            listing = await (await b.client.get("/api/admin/wanted", headers=b.admin)).json()
            return [f for f in listing["files"] if f["sha256"] == over and f["last_error"]]

        (item,) = await wait_for(refused, "the over-cap preview's refusal")
        assert f"more than the limit of {MAX_IMAGE_BYTES} bytes" in item["last_error"]
        assert await b.node.store.local_path(over) is None
    # One that states its true size is refused at the gate, with the cap as the reason.
    key = SigningKey.from_seed(b"o" * 32)
    body = {"sha256": bytes(32), "width": 1, "height": 1, "mime": "image/png"}
    for size, refused in ((MAX_IMAGE_BYTES, False), (MAX_IMAGE_BYTES + 1, True)):
        record = sign_record(key, "image", {**body, "size": size})
        if refused:
            with pytest.raises(RecordRejected, match=f"{MAX_IMAGE_BYTES} bytes"):
                a.node.log.types.check_body(record)
        else:
            a.node.log.types.check_body(record)
