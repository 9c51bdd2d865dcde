"""A small 16-bit greyscale PNG must not cost the node hundreds of MiB to inspect, and
image decodes run a few at a time node-wide, whatever asks for them.

Before the fix, a 78 KB 6320x6320 16-bit PNG (under the 40 MP cap) went through
``_eight_bit``'s float64 copy of every pixel (~700 MiB, 3.6 s); six in parallel through
training uploads (not under the ingest slots) took the node to 3.7 GB. Memory is measured
with tracemalloc around the request (numpy's copies are traced; Pillow's own decoded
image, 2 bytes a pixel here, is not), never with a timer.
"""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from node.app import Node
from node.catalog.images import inspect_image
from tests.compute.conftest import PASSWORD, Version, fake_checkpoint, publish

MIB = 1024 * 1024
SIDE = 6320  # 39.9 MP: under MAX_PIXELS


def grey16_png(side: int = SIDE) -> bytes:
    """A 16-bit greyscale PNG of ``side`` x ``side`` that compresses to ~80 KB."""
    pixels = np.zeros((side, side), dtype=np.uint16)
    pixels[::7] = 40000
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", optimize=True)
    return out.getvalue()


async def _member(node: Node, tmp_path: Path) -> tuple[str, Version]:
    alice = await node.accounts.add_user("alice", PASSWORD)
    base = fake_checkpoint(tmp_path / "base.safetensors")
    checkpoint = await publish(node, alice, base, type="Checkpoint", name="Base")
    return await node.accounts.create_token(alice.name), checkpoint


def _training_form(version: int, images: list[bytes]) -> FormData:
    form = FormData()
    params = {"kind": "train", "model_version_id": version, "trigger_word": "x"}
    form.add_field("params", json.dumps(params), content_type="application/json")
    for i, data in enumerate(images):
        form.add_field("image", data, filename=f"{i}.png", content_type="image/png")
    return form


def test_a_16_bit_png_is_inspected_without_a_full_size_copy() -> None:
    data = grey16_png()
    assert len(data) < 200 * 1024
    tracemalloc.start()
    try:
        info = inspect_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.width, info.height) == (SIDE, SIDE) and info.pdq is not None
    assert peak < 48 * MIB, f"{peak / MIB:.0f} MiB traced"  # before: 648 MiB (float64)


async def test_training_uploads_decode_a_few_at_a_time_in_bounded_memory(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    token, checkpoint = await _member(node, tmp_path)
    # Two members, each sending their share of uploads at once (server.max_uploads_per_account)
    await node.accounts.add_user("bob", PASSWORD)
    tokens = (token, await node.accounts.create_token("bob"))
    data = grey16_png()
    decodes = node.catalog.publisher.decodes
    tracemalloc.start()
    try:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/jobs",
                    data=_training_form(checkpoint.id, [data]),
                    headers={"Authorization": f"Bearer {tokens[i % 2]}"},
                )
                for i in range(4)
            )
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [a.status for a in answers] == [201] * 4, [await a.text() for a in answers]
    assert decodes.peak <= decodes.limit == node.config.server.max_concurrent_decodes
    assert decodes.done >= 4
    assert peak < 64 * MIB, f"{peak / MIB:.0f} MiB traced"


def test_decoding_is_bounded_by_bytes_for_the_mode_not_only_pixels() -> None:
    from node.catalog.images import ImageTooManyPixels, decode_cost

    # 16-bit grey costs 2 bytes a pixel in Pillow, RGB(A) 4, WebP's decoder ~16
    assert decode_cost("PNG", "I;16", 100, 100) == 20_000
    assert decode_cost("PNG", "RGBA", 100, 100) == 40_000
    assert decode_cost("WEBP", "RGB", 100, 100) > decode_cost("PNG", "RGB", 100, 100)
    big = Image.new("RGB", (7000, 5000))  # 35 MP: fine as a PNG, too costly as a WebP
    out = io.BytesIO()
    big.save(out, "WEBP", quality=1)
    try:
        inspect_image(out.getvalue())
    except ImageTooManyPixels as exc:
        assert "MiB" in exc.message
    else:
        raise AssertionError("a 35 MP WebP decodes past the decode budget")
