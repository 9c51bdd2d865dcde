"""Malformed input to the compute routes is a 4xx, never a 500.

Before the fix: a job id past SQLite's 64 bits (``/api/jobs/{id}``, its events, the job
page) raised OverflowError in the driver; a training job's ``params`` part nested 100,000
deep raised RecursionError; the ``/generate`` form took ``int()`` of any Unicode digits,
so ``²`` crashed it and a 5,000-digit width hit Python's int-string limit.
"""

from __future__ import annotations

import json

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from tests.compute.conftest import PASSWORD, Version

HUGE = "9" * 30


async def _login(client: TestClient) -> str:
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status == 200
    return str((await login.json())["csrf_token"])


@pytest.mark.parametrize(
    "path",
    [f"/api/jobs/{HUGE}", f"/api/jobs/{HUGE}/events", f"/jobs/{HUGE}", "/api/jobs/²"],
)
async def test_a_huge_job_id_is_not_found(
    client: TestClient, node: Node, alice: User, path: str
) -> None:
    await _login(client)
    resp = await client.get(path)
    assert resp.status == 404, await resp.text()


async def test_a_deeply_nested_params_part_is_a_400(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    await _login(client)
    token = await node.accounts.create_token(alice.name)
    form = FormData()
    form.add_field("params", "[" * 100_000 + "]" * 100_000, content_type="application/json")
    resp = await client.post("/api/jobs", data=form, headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert resp.status == 400 and "nests deeper" in body["message"], body


@pytest.mark.parametrize("field", ["width", "seed", "steps"])
@pytest.mark.parametrize("value", ["²", "9" * 5000, "١٢٨", "1_0", "-"])
async def test_the_generate_form_takes_ascii_digits_only(
    client: TestClient, node: Node, alice: User, checkpoint: Version, field: str, value: str
) -> None:
    csrf = await _login(client)
    data = {
        "csrf_token": csrf,
        "model_version_id": str(checkpoint.id),
        "width": "512",
        "height": "512",
        "steps": "20",
        "count": "1",
        "seed": "",
        "prompt": "x",
        field: value,
    }
    resp = await client.post("/generate", data=data, allow_redirects=False)
    assert resp.status == 400, (field, value[:8], resp.status)
    assert "whole number" in await resp.text()


async def test_a_worker_body_nested_too_deep_is_a_400(
    client: TestClient, node: Node, alice: User
) -> None:
    from node.p2p.federation.signing import sign_request
    from node.p2p.keys import SigningKey

    key = SigningKey.from_seed(b"d" * 32)
    await node.compute.queue.registry.register(alice, {"did": key.did})
    body = ("[" * 50_000 + "]" * 50_000).encode()
    headers = sign_request(key, "POST", "/api/compute/pop", body, node.node_key.did)
    headers["Content-Type"] = "application/json"
    resp = await client.post("/api/compute/pop", data=body, headers=headers)
    assert resp.status in (400, 413), await resp.text()
    assert json.loads(await resp.text())["error"]
