"""Issue 13: a worker key lives no longer than the credential that registered it.

A worker registered with a member's API token is refused (pop, report, upload) once that
token is revoked or expires; one registered from a logged-in browser session stays valid
while its owner's account exists. DELETE /api/compute/workers/{did} lets the owner (or an
admin) remove a worker: its requests are refused from then on and the job it held goes
back to the queue."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.accounts.tables import api_tokens
from node.app import Node
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey
from node.p2p.records import now_ms
from tests.compute.conftest import PASSWORD, Signer, Version, generate
from tests.compute.fake_worker import png, register, token, upload


async def _queue_job(client: TestClient, node: Node, user: User, checkpoint: Version) -> int:
    resp = await client.post(
        "/api/jobs", json=generate(checkpoint.id), headers=await token(node, user)
    )
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def _only_token_id(node: Node, user: User) -> int:
    listed = await node.accounts.list_tokens(user.name)
    return int(listed[-1]["id"])  # newest first: the oldest is the worker's


async def _refused(resp: Any) -> None:
    assert resp.status in (401, 403), await resp.text()
    assert "error" in await resp.json()


async def test_a_revoked_token_takes_its_worker_with_it(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    worker = await register(client, node, alice, SigningKey.from_seed(b"t" * 32))
    token_id = await _only_token_id(node, alice)
    job_id = await _queue_job(client, node, alice, checkpoint)
    lease = (await (await worker.request("POST", "/api/compute/pop", {})).json())["job"]
    assert lease["id"] == job_id

    await node.accounts.revoke_token(alice.name, token_id)
    await _refused(await worker.request("POST", "/api/compute/pop", {}))
    await _refused(await worker.request("POST", f"/api/compute/jobs/{job_id}/progress", {}))
    await _refused(await upload(worker, job_id, png("x")))
    await _refused(await worker.request("POST", f"/api/compute/jobs/{job_id}/fail", {}))


async def test_an_expired_token_takes_its_worker_with_it(
    client: TestClient, node: Node, alice: User
) -> None:
    worker = await register(client, node, alice, SigningKey.from_seed(b"e" * 32))
    assert (await worker.request("POST", "/api/compute/pop", {})).status == 200
    async with node.db.write() as conn:
        await conn.execute(api_tokens.update().values(expires=now_ms() - 1))
    await _refused(await worker.request("POST", "/api/compute/pop", {}))


async def test_a_worker_registered_from_a_session_outlives_the_owners_tokens(
    client: TestClient, node: Node, alice: User
) -> None:
    key = SigningKey.from_seed(b"s" * 32)
    login = await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    csrf = (await login.json())["csrf_token"]
    body = json.dumps({"name": "desk"}).encode()
    headers = {
        **sign_request(key, "POST", "/api/compute/workers", body, node.node_key.did),
        "X-CSRF-Token": csrf,
        "Content-Type": "application/json",
    }
    assert (await client.post("/api/compute/workers", data=body, headers=headers)).status == 201
    client.session.cookie_jar.clear()
    await node.accounts.create_token("alice")
    await node.accounts.revoke_token("alice", await _only_token_id(node, alice))
    worker = Signer(client, key, node.node_key.did)
    assert (await worker.request("POST", "/api/compute/pop", {})).status == 200


async def test_the_owner_or_an_admin_removes_a_worker_and_its_job_is_requeued(
    client: TestClient, node: Node, alice: User, bob: User, checkpoint: Version
) -> None:
    key = SigningKey.from_seed(b"d" * 32)
    worker = await register(client, node, alice, key)
    job_id = await _queue_job(client, node, alice, checkpoint)
    lease = (await (await worker.request("POST", "/api/compute/pop", {})).json())["job"]
    assert lease["id"] == job_id

    path = f"/api/compute/workers/{key.did}"
    assert (await client.delete(path)).status == 401
    not_his = await client.delete(path, headers=await token(node, bob))
    assert not_his.status == 404 and "error" in await not_his.json()
    assert (await client.delete(path + "x", headers=await token(node, alice))).status == 404
    alice_auth = await token(node, alice)
    removed = await client.delete(path, headers=alice_auth)
    assert removed.status == 200, await removed.text()
    assert (await removed.json())["removed"] == key.did

    await _refused(await worker.request("POST", "/api/compute/pop", {}))
    await _refused(await worker.request("POST", f"/api/compute/jobs/{job_id}/progress", {}))
    job = await (await client.get(f"/api/jobs/{job_id}", headers=alice_auth)).json()
    assert job["state"] == "queued"
    listed = await (await client.get("/api/compute/workers", headers=alice_auth)).json()
    assert listed["workers"] == []
    assert (await client.delete(path, headers=alice_auth)).status == 404

    # an admin removes anyone's worker
    other = SigningKey.from_seed(b"o" * 32)
    await register(client, node, bob, other)
    admin = {"Authorization": f"Bearer {node.home.admin_token()}"}
    gone = await client.delete(f"/api/compute/workers/{other.did}", headers=admin)
    assert gone.status == 200
    bobs = await (await client.get("/api/compute/workers", headers=await token(node, bob))).json()
    assert bobs["workers"] == []
