"""Several authors claim one file: the hash lookups answer the first-seen claim.

A forger signs a ``model_version`` naming another author's SHA256, back-dated to before
the genuine one. The by-hash lookups (GET and POST, any hash type) and the image pages'
resource links must still answer the genuine version, and list the forgery as disputed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.p2p.records import EARLIEST_CREATED_MS, sign_record
from tests.catalog.forge import T0, image, key, model, version

PEER = "did:key:z6MkclaimsPeerForTestsOnly"
MALLORY, BOB = key("mallory"), key("bob")
BACK_DATED = EARLIEST_CREATED_MS + 24 * 3600 * 1000  # 2024-01-02, before every genuine one


async def publish_fox(node: Node, alice: User, make_lora: Callable[..., Path]) -> dict[str, Any]:
    result = await node.catalog.publish_path(
        alice.did,
        make_lora("fox.safetensors", 1),
        {"name": "Fox style", "trained_words": ["foxstyle"], "base_model": "SD 1.5"},
    )
    return dict(result["model"]["modelVersions"][0])


async def forge_claim(node: Node, sha256_hex: str, created: int = BACK_DATED) -> Any:
    """Mallory's model and a version claiming ``sha256_hex``, arriving from a peer."""
    root = model(MALLORY, "Not a fox", created)
    forged = version(MALLORY, root.id, bytes.fromhex(sha256_hex), created, words=("pwned",))
    await node.log.accept_verified([root, forged], source=PEER, refused=[])
    return forged


async def test_a_back_dated_forgery_does_not_take_a_local_file(
    client: TestClient, node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    genuine = await publish_fox(node, alice, make_lora)
    hashes = genuine["files"][0]["hashes"]
    forged = await forge_claim(node, hashes["SHA256"])
    for value in (hashes["SHA256"], hashes["SHA256"].lower(), hashes["AutoV2"]):
        resp = await client.get(f"/api/v1/model-versions/by-hash/{value}")
        assert resp.status == 200
        found = await resp.json()
        assert found["id"] == genuine["id"] and found["trainedWords"] == ["foxstyle"]
        (disputed,) = found["civitas"]["disputedBy"]
        assert disputed["recordId"] == forged.id.hex()
        assert disputed["author"] == MALLORY.did
    resp = await client.post("/api/v1/model-versions/by-hash", json=[hashes["SHA256"]])
    (found,) = await resp.json()
    assert found["id"] == genuine["id"]
    assert [d["recordId"] for d in found["civitas"]["disputedBy"]] == [forged.id.hex()]


async def test_between_remote_claims_the_first_seen_wins_whatever_its_created(
    client: TestClient, node: Node
) -> None:
    file_sha = key("a file").did.encode()[-32:]  # any 32 bytes
    root = model(BOB, "Owl", T0 + 5000)
    genuine = version(BOB, root.id, file_sha, T0 + 5000, words=("owlstyle",))
    await node.log.accept_verified([root, genuine], source=PEER, refused=[])
    forged = await forge_claim(node, file_sha.hex())
    assert forged.created < genuine.created
    resp = await client.get(f"/api/v1/model-versions/by-hash/{file_sha.hex()[:10]}")
    found = await resp.json()
    assert found["trainedWords"] == ["owlstyle"]
    assert found["civitas"]["recordId"] == genuine.id.hex()
    assert [d["recordId"] for d in found["civitas"]["disputedBy"]] == [forged.id.hex()]
    # An image made with that file links to the genuine version, on its API and page.
    pic = image(BOB, None, "made with the owl", T0 + 6000)
    body = {**pic.body, "resources": [{"name": "owl", "hash": file_sha.hex()[:10].upper()}]}
    made = sign_record(BOB, "image", body, created=T0 + 6000)
    await node.log.accept_verified([made], source=PEER, refused=[])
    item = await node.catalog.views.image(made.body["sha256"].hex())
    assert item is not None
    (resource,) = item["civitas"]["resources"]
    assert resource["modelVersionId"] == found["id"]


async def test_the_same_authors_two_versions_of_one_file_are_no_dispute(
    client: TestClient, node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    genuine = await publish_fox(node, alice, make_lora)
    resp = await client.get(
        f"/api/v1/model-versions/by-hash/{genuine['files'][0]['hashes']['SHA256']}"
    )
    assert (await resp.json())["civitas"]["disputedBy"] == []
