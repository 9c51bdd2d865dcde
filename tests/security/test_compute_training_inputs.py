"""A training job's images are private inputs: kept only for a job that was accepted,
within the member's quota, never handed to anyone over ``/federation/v1/blobs`` or
``/webseed``, and deleted when the job finishes.

Before the fix, ``_multipart_job`` committed every decoded image to ``files/`` before the
job's parameters were checked: a refused job left its images behind (3 refused uploads
of 10 noise PNGs left 90 MiB), with no quota, and anyone could then fetch them by SHA256
from ``/federation/v1/blobs`` and ``/webseed`` (anonymous image hosting).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from node.app import Node
from tests.compute.conftest import PASSWORD, Version, fake_checkpoint, publish


def noise_png(seed: int, side: int = 96) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def stored_files(node: Node) -> set[str]:
    root = node.compute.queue.store.root
    return {p.name for p in root.rglob("*") if p.is_file() and len(p.name) == 64}


async def _member(node: Node, tmp_path: Path) -> tuple[dict[str, str], Version]:
    alice = await node.accounts.add_user("alice", PASSWORD)
    base = fake_checkpoint(tmp_path / "base.safetensors")
    checkpoint = await publish(node, alice, base, type="Checkpoint", name="Base")
    token = await node.accounts.create_token(alice.name)
    return {"Authorization": f"Bearer {token}"}, checkpoint


def _form(params: dict[str, object], images: list[bytes], *, params_last: bool = False) -> FormData:
    form = FormData()
    if not params_last:
        form.add_field("params", json.dumps(params), content_type="application/json")
    for i, data in enumerate(images):
        form.add_field("image", data, filename=f"{i}.png", content_type="image/png")
    if params_last:
        form.add_field("params", json.dumps(params), content_type="application/json")
    return form


async def test_a_refused_training_job_keeps_none_of_its_images(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    auth, checkpoint = await _member(node, tmp_path)
    before = stored_files(node)
    images = [noise_png(i) for i in range(3)]
    refusals = [
        {"kind": "train", "model_version_id": 987654, "trigger_word": "x"},  # no such version
        {"kind": "train", "model_version_id": checkpoint.id, "steps": -5},  # bad parameter
    ]
    for params in refusals:
        for params_last in (False, True):
            form = _form(params, images, params_last=params_last)
            resp = await client.post("/api/jobs", data=form, headers=auth)
            assert 400 <= resp.status < 500, await resp.text()
    assert stored_files(node) == before
    assert list(node.compute.queue.store.tmp.iterdir()) == []


async def test_training_inputs_are_not_served_to_anyone_and_go_when_the_job_ends(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    auth, checkpoint = await _member(node, tmp_path)
    image = noise_png(7)
    params = {"kind": "train", "model_version_id": checkpoint.id, "trigger_word": "x"}
    resp = await client.post("/api/jobs", data=_form(params, [image]), headers=auth)
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    assert _sha(image) in stored_files(node)
    for path in (f"/federation/v1/blobs/{_sha(image)}", f"/webseed/{_sha(image)}"):
        served = await client.get(path)
        assert served.status == 404, (path, served.status)
    # a file a visible record needs is still served (the checkpoint)
    assert (await client.get(f"/federation/v1/blobs/{checkpoint.sha256}")).status == 200
    assert (await client.get(f"/webseed/{checkpoint.sha256}")).status == 200
    cancelled = await client.post(f"/api/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status == 200
    assert _sha(image) not in stored_files(node)


async def test_training_inputs_count_against_a_per_account_quota(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    auth, checkpoint = await _member(node, tmp_path)
    first, second = [noise_png(i) for i in range(2)], [noise_png(i) for i in range(10, 12)]
    node.config.compute.max_input_bytes_per_account = sum(map(len, first)) + 100
    params = {"kind": "train", "model_version_id": checkpoint.id, "trigger_word": "x"}
    resp = await client.post("/api/jobs", data=_form(params, first), headers=auth)
    assert resp.status == 201, await resp.text()
    before = stored_files(node)
    refused = await client.post("/api/jobs", data=_form(params, second), headers=auth)
    body = await refused.json()
    assert refused.status == 413, body
    assert "compute.max_input_bytes_per_account" in body["message"]
    assert stored_files(node) == before
