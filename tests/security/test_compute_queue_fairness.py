"""One member's queue flood must not starve the others, nor make reading the queue slow.

Before the fix, a member could queue any number of jobs, and the queue was read as the
2000 oldest queued rows before filtering by owner and fairness: after bob queued 2000,
alice's own worker found "2000 queued jobs, none of your own", a node worker offered
only bob's (capped) jobs, and ``GET /api/jobs`` recomputed the whole round-robin order
once per listed job (1 s). The 2000 rows are inserted directly (the flood itself is
refused now); counts of statements, not timers, bound the listing's work.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.compute.tables import compute_jobs
from node.http import Principal
from node.p2p.keys import SigningKey
from tests.compute.conftest import PASSWORD, Signer, Version, generate

FLOOD = 2000


async def _flood(node: Node, bob: User, version_id: bytes, start: int, n: int) -> None:
    base = {
        "kind": "generate",
        "requester_id": bob.id,
        "requester_did": bob.did,
        "state": "queued",
        "params": json.dumps({"prompt": "x", "width": 64, "height": 64, "count": 1}),
        "version_id": version_id,
        "files": json.dumps([{"model_version_id": 1, "role": "checkpoint"}]),
        "pixels": 64 * 64,
    }
    async with node.db.write() as conn:
        rows = [{**base, "created": start + i, "updated": start + i} for i in range(n)]
        await conn.execute(compute_jobs.insert(), rows)


async def _setup(node: Node, alice: User) -> tuple[User, dict[str, str]]:
    bob = await node.accounts.add_user("bob", PASSWORD)
    return bob, {"Authorization": f"Bearer {await node.accounts.create_token(alice.name)}"}


async def _after_a_flood(node: Node, bob: User, n: int = FLOOD) -> None:
    """Bob gets ``n`` queued jobs, all older than every job so far (and not expired)."""
    async with node.db.read() as conn:
        version_id = await conn.scalar(sa.select(compute_jobs.c.version_id).limit(1))
        oldest = await conn.scalar(sa.select(sa.func.min(compute_jobs.c.created)))
    await _flood(node, bob, version_id, oldest - n - 1, n)


async def _pop(client: TestClient, node: Node, key: SigningKey) -> dict[str, Any]:
    signer = Signer(client, key, node.node_key.did)
    resp = await signer.request("POST", "/api/compute/pop", {})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_a_flood_of_queued_jobs_does_not_starve_another_member(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    bob, auth = await _setup(node, alice)
    queued = await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)
    assert queued.status == 201, await queued.text()
    mine = (await queued.json())["id"]
    await _after_a_flood(node, bob)

    own_worker = SigningKey.from_seed(b"a" * 32)  # alice's worker serves only her jobs
    await node.compute.queue.registry.register(alice, {"did": own_worker.did})
    popped = await _pop(client, node, own_worker)
    assert popped["job"] is not None, popped
    assert popped["job"]["id"] == mine


async def test_a_node_worker_takes_the_other_members_turn_past_the_flood(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    bob, auth = await _setup(node, alice)
    queued = await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)
    mine = (await queued.json())["id"]
    await _after_a_flood(node, bob, FLOOD + 50)  # past 2000 even once bob's first are taken
    carol = await node.accounts.add_user("carol", PASSWORD)
    worker = SigningKey.from_seed(b"n" * 32)
    await node.compute.queue.registry.register(carol, {"did": worker.did})
    await node.compute.queue.registry.set_serves(Principal(node_admin=True), worker.did, "all")
    popped = [(await _pop(client, node, worker))["job"] for _ in range(3)]
    assert popped[1] is not None and popped[1]["id"] == mine, popped  # bob's oldest, then hers


async def test_positions_are_the_round_robin_order_and_computed_per_page(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    bob, auth = await _setup(node, alice)
    bob_auth = {"Authorization": f"Bearer {await node.accounts.create_token(bob.name)}"}
    a = [await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)]
    b = [await client.post("/api/jobs", json=generate(checkpoint.id), headers=bob_auth)]
    a.append(await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth))
    b.append(await client.post("/api/jobs", json=generate(checkpoint.id), headers=bob_auth))
    a.append(await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth))
    ids_a = [(await r.json())["id"] for r in a]
    ids_b = [(await r.json())["id"] for r in b]
    # round robin, oldest first: a1 b1 a2 b2 a3
    listed = await (await client.get("/api/jobs", headers=auth)).json()
    assert {j["id"]: j["position"] for j in listed["jobs"]} == {
        ids_a[0]: 1,
        ids_a[1]: 3,
        ids_a[2]: 5,
    }
    one = await (await client.get(f"/api/jobs/{ids_b[1]}", headers=bob_auth)).json()
    assert one["position"] == 4

    await _after_a_flood(node, bob, 200)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2])[:60])

    engine = node.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        page = await client.get("/api/jobs", headers=bob_auth)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert page.status == 200 and len((await page.json())["jobs"]) == 50
    assert len(statements) < 12, statements  # not one round-robin per listed job


async def test_queued_jobs_per_member_are_capped(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    _, auth = await _setup(node, alice)
    node.config.compute.max_queued_per_account = 3
    for _ in range(3):
        ok = await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)
        assert ok.status == 201
    refused = await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)
    body = await refused.json()
    assert refused.status == 429 and refused.headers["Retry-After"], body
    assert "compute.max_queued_per_account" in body["message"]
