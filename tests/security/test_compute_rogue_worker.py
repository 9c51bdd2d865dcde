"""Issue 13.4: a rogue worker must not publish as another user.

The attack as reported: a member registered a worker, took another member's job and
uploaded arbitrary pixels carrying the expected ``parameters`` chunk; the node signed the
image record with the requester's key, rated it PG and federated it. Here a real second
member's worker tries it through the real routes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from node.app import Node
from node.catalog.publish import ModelFields, VersionFields
from node.compute.requests import expected_parameters
from node.p2p.keys import SigningKey
from node.p2p.records import verify_record
from node.p2p.tables import records
from tests.compute.conftest import PASSWORD, fake_checkpoint, generate
from tests.compute.fake_worker import deliver, make_node_worker, png, register, token


async def _image_records(node: Node) -> list[tuple[str, str]]:
    """(author, state) of every image record in the log: what would federate."""
    async with node.db.read() as conn:
        rows = await conn.execute(
            sa.select(records.c.author, records.c.state).where(records.c.type == "image")
        )
        return [(r.author, r.state) for r in rows]


async def test_another_members_worker_cannot_publish_as_the_requester(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    alice = await node.accounts.add_user("alice", PASSWORD)
    bob = await node.accounts.add_user("bob", PASSWORD)
    published = await node.catalog.publisher.publish_file(
        node.home.author_key(alice.did),
        fake_checkpoint(tmp_path / "base.safetensors"),
        ModelFields(name="Base", type="Checkpoint", rating="R"),
        VersionFields(base_model="SD 1.5"),
    )
    model = (await node.catalog.views.models_by_root([published.model_root]))[0]
    version_id = model["modelVersions"][0]["id"]
    alice_auth, bob_auth = await token(node, alice), await token(node, bob)
    job = await (
        await client.post("/api/jobs", json=generate(version_id), headers=alice_auth)
    ).json()

    # bob registers a worker: it does not get alice's job
    rogue_key = SigningKey.from_seed(b"r" * 32)
    rogue = await register(client, node, bob, rogue_key)
    popped = await (await rogue.request("POST", "/api/compute/pop", {})).json()
    assert popped["job"] is None and "none of your own" in popped["reason"]
    # nor can bob make it a node worker himself
    resp = await client.post(
        f"/api/compute/workers/{rogue_key.did}/serves", json={"serves": "all"}, headers=bob_auth
    )
    assert resp.status == 403

    # even a node worker (an admin trusted it) that delivers arbitrary pixels publishes nothing
    await make_node_worker(client, node, rogue_key)
    lease = (await (await rogue.request("POST", "/api/compute/pop", {})).json())["job"]
    assert lease["id"] == job["id"]
    forged = png(expected_parameters(lease)[0], shade=255)
    resp = await deliver(rogue, job["id"], [forged], rogue_key)
    assert resp.status == 200, await resp.text()
    assert await _image_records(node) == []  # nothing signed, nothing to federate
    gallery = await client.get(f"/api/v1/images?modelVersionId={version_id}")
    assert (await gallery.json())["items"] == []
    done = await (await client.get(f"/api/jobs/{job['id']}", headers=alice_auth)).json()
    output = done["results"][0]
    assert output["published"] is None

    # only alice sees the output, and only alice can publish it: not bob, not an admin
    publish = f"/api/jobs/{job['id']}/outputs/{output['sha256']}/publish"
    assert (await client.get(output["url"], headers=bob_auth)).status == 404
    assert (await client.post(publish, json={}, headers=bob_auth)).status == 404
    admin = {"Authorization": f"Bearer {node.home.admin_token()}"}
    assert (await client.post(publish, json={}, headers=admin)).status == 403
    assert await _image_records(node) == []
    seen = await client.get(output["url"], headers=alice_auth)
    assert seen.status == 200 and await seen.read() == forged
    page = await (await client.get(f"/jobs/{job['id']}", headers=alice_auth)).text()
    assert f"/outputs/{output['sha256']}/publish" in page and "Private to you" in page

    # alice's decision: published as hers, with the worker's attestation, rated as its
    # model is (R), not the PG she asked for
    resp = await client.post(publish, json={"rating": "PG"}, headers=alice_auth)
    assert resp.status == 201, await resp.text()
    shown = await resp.json()
    assert shown["rating"] == "R"
    assert await _image_records(node) == [(alice.did, "visible")]
    entry = await node.log.get(bytes.fromhex(shown["record_id"]))
    assert entry is not None and entry.raw is not None
    record = verify_record(entry.raw)
    assert record.author == alice.did
    assert record.body["attestation"]["worker"] == rogue_key.did
    assert record.body["rating"] == "R"
    again = await client.post(publish, json={}, headers=alice_auth)
    assert again.status == 409


async def test_a_published_output_meets_the_nodes_rating_policy(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    """The same gate as uploads: a rating this node refuses is refused here too."""
    alice = await node.accounts.add_user("alice", PASSWORD)
    published = await node.catalog.publisher.publish_file(
        node.home.author_key(alice.did),
        fake_checkpoint(tmp_path / "base.safetensors"),
        ModelFields(name="Base", type="Checkpoint"),
        VersionFields(base_model="SD 1.5"),
    )
    model = (await node.catalog.views.models_by_root([published.model_root]))[0]
    auth = await token(node, alice)
    job = await (
        await client.post("/api/jobs", json=generate(model["modelVersions"][0]["id"]), headers=auth)
    ).json()
    key = SigningKey.from_seed(b"a" * 32)
    worker = await register(client, node, alice, key)
    lease = (await (await worker.request("POST", "/api/compute/pop", {})).json())["job"]
    image = png(expected_parameters(lease)[0])
    assert (await deliver(worker, job["id"], [image], key)).status == 200
    node.log.gate.refuse_ratings = frozenset({"X"})  # type: ignore[union-attr]
    path = f"/api/jobs/{job['id']}/outputs/{image_sha(image)}/publish"
    refused = await client.post(path, json={"rating": "X"}, headers=auth)
    assert refused.status == 403 and "refuses X" in (await refused.json())["message"]
    assert await _image_records(node) == []
    bad = await client.post(path, json={"rating": "G"}, headers=auth)
    assert bad.status == 400
    assert (await client.post(path, json={"rating": "PG13"}, headers=auth)).status == 201


def image_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()
