"""Issue 13.1: a member's training upload with a zip bomb must not exhaust the node.

Before the fix, ``compute/inputs.unzip`` read every entry (up to 200 x 50 MB) into memory
before checking anything: a 2 MB zip of 40 entries took the node from 473 MiB to 2.5 GiB.
Now the zip is refused from its central directory; memory is measured with tracemalloc
around the whole request (client and server share this process), not with a timer.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.app import Node
from tests.compute.conftest import PASSWORD, Version, fake_checkpoint, publish
from tests.compute.zips import Entry, raw_zip, zeros

MIB = 1024 * 1024


def _bomb(entries: int) -> bytes:
    """``entries`` x 50 MiB of zeros (each exactly the per-image cap) in ~50 KiB each."""
    one = zeros("0.png", 50 * MIB)
    return raw_zip([Entry(f"{i}.png", one.payload, one.crc, one.size) for i in range(entries)])


async def _member_with_checkpoint(node: Node, tmp_path: Path) -> tuple[str, Version]:
    alice = await node.accounts.add_user("alice", PASSWORD)
    base = fake_checkpoint(tmp_path / "base.safetensors")
    checkpoint = await publish(node, alice, base, type="Checkpoint", name="Base")
    return await node.accounts.create_token(alice.name), checkpoint


async def test_a_zip_bomb_is_refused_unread_and_leaves_nothing(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    token, checkpoint = await _member_with_checkpoint(node, tmp_path)
    bomb = _bomb(40)
    assert len(bomb) < 3 * MIB
    form = FormData()
    params = {"kind": "train", "model_version_id": checkpoint.id, "trigger_word": "x"}
    form.add_field("params", json.dumps(params), content_type="application/json")
    form.add_field("zip", bomb, filename="set.zip", content_type="application/zip")
    tracemalloc.start()
    try:
        resp = await client.post(
            "/api/jobs", data=form, headers={"Authorization": f"Bearer {token}"}
        )
        body = await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 413, body
    assert body["error"] == "payload_too_large" and "compression ratio" in body["message"]
    assert peak < 32 * MIB  # the archive passes through a few times; never 40 x 50 MiB
    assert os.listdir(node.compute.queue.store.tmp) == []
    listed = await client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
    assert (await listed.json())["jobs"] == []


async def test_image_parts_past_the_byte_budget_are_refused_and_leave_nothing(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    token, checkpoint = await _member_with_checkpoint(node, tmp_path)
    node.config.compute.max_train_bytes = 3 * MIB
    form = FormData()
    params = {"kind": "train", "model_version_id": checkpoint.id, "trigger_word": "x"}
    form.add_field("params", json.dumps(params), content_type="application/json")
    for i in range(4):
        form.add_field("image", os.urandom(MIB), filename=f"{i}.png", content_type="image/png")
    resp = await client.post("/api/jobs", data=form, headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert resp.status == 413 and "compute.max_train_bytes" in body["message"], body
    assert os.listdir(node.compute.queue.store.tmp) == []
