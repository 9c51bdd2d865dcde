"""A withdrawn model's file is no longer served by any route: not the download, not the
web seed, not the federation's blob route, and its torrent is no longer handed out
(issue 13: the rows of its versions outlived the model's, and each route served them).
Nor does an image record reopen it: any peer may sign an ``image`` whose SHA256 is the
withdrawn file's, and a file that is some version's counts as public only through a shown
version. A withdrawn model's own previews are hidden and no longer served with it, unless
another shown image uses the same file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.service import User
from node.app import Node, build_node, create_app
from node.catalog.tables import images
from node.config import load_config
from node.home import Home
from node.p2p.keys import SigningKey
from node.p2p.records import Record, sign_record
from tests.catalog import forge
from tests.catalog.conftest import PASSWORD, lora_file, png_bytes
from tests.conftest import TEST_SETTINGS
from tests.p2p.test_torrents import start_node

PEER = "did:key:z6MkwithdrawnBytesPeerSourceForTestsOnly"
MALLORY = forge.key("mallory")


def announce(infohash: str) -> str:
    return (
        f"/announce?info_hash={quote_from_bytes(bytes.fromhex(infohash))}"
        f"&peer_id={'-XX0001-' + 'a' * 12}&port=51413&uploaded=0&downloaded=0&left=100"
    )


async def tracked(client: TestClient, infohash: str) -> bool:
    return b"failure reason" not in await (await client.get(announce(infohash))).read()


def image_named(signer: SigningKey, sha256: str, version: bytes | None = None) -> Record:
    """A peer's signed image record naming any file by its SHA256."""
    body: dict[str, Any] = {
        "sha256": bytes.fromhex(sha256),
        "width": 8,
        "height": 8,
        "size": 100,
        "mime": "image/png",
    }
    if version is not None:
        body["model_version"] = version
    return sign_record(signer, "image", body, created=forge.T0 + 1)


async def test_a_withdrawn_models_file_is_served_nowhere(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    result = await node.catalog.publish_path(alice.did, make_lora(), {"name": "Fox"})
    model_id = result["model"]["id"]
    version_id = result["model"]["modelVersions"][0]["id"]
    sha = result["sha256"]
    infohash = result["model"]["modelVersions"][0]["files"][0]["civitas"]["infohash"]
    routes = [
        f"/federation/v1/torrents/{infohash}",
        f"/api/download/models/{version_id}",
        f"/webseed/{sha}",
        f"/federation/v1/blobs/{sha}",
        f"/federation/v1/files/{infohash}/records",  # what a magnet's fetcher asks first
    ]
    for route in routes:  # served while the model is shown
        assert (await client.get(route)).status == 200, route
    await node.catalog.withdraw_model(alice.did, model_id, "not mine to share")
    for route in routes:
        resp = await client.get(route)
        assert resp.status == 404, (route, resp.status)
        assert (await resp.json())["error"]
    assert (await client.get(f"/api/v1/model-versions/{version_id}")).status == 404
    assert (await client.get(f"/api/v1/model-versions/by-hash/{sha}")).status == 404


async def test_a_withdrawn_models_file_stops_seeding_now_and_after_a_restart(
    tmp_path: Path,
) -> None:
    async for live in start_node(tmp_path / "a"):
        engine = live.node.engine
        assert engine is not None
        alice = await live.node.accounts.add_user("alice", PASSWORD)
        kept = await live.node.catalog.publish_path(
            alice.did, lora_file(tmp_path / "kept.safetensors", seed=1), {"name": "Kept"}
        )
        gone = await live.node.catalog.publish_path(
            alice.did, lora_file(tmp_path / "gone.safetensors", seed=2), {"name": "Gone"}
        )

        def infohash(result: dict[str, Any]) -> str:
            return str(result["model"]["modelVersions"][0]["files"][0]["civitas"]["infohash"])

        assert engine.status(infohash(gone)) is not None
        await live.node.catalog.withdraw_model(alice.did, gone["model"]["id"], None)
        assert engine.status(infohash(gone)) is None  # no longer in the session
        assert engine.status(infohash(kept)) is not None
    home = Home(tmp_path / "a")  # the same node, restarted
    config = load_config(home.path, TEST_SETTINGS, environ={})
    config.torrent.enabled = True
    node = build_node(config, home)
    async with TestClient(TestServer(create_app(node, home.admin_token()), host="127.0.0.1")):
        assert node.engine is not None
        assert node.engine.status(infohash(kept)) is not None
        assert node.engine.status(infohash(gone)) is None


async def test_an_image_record_naming_a_withdrawn_file_does_not_reopen_it(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    result = await node.catalog.publish_path(alice.did, make_lora(), {"name": "Fox"})
    sha = result["sha256"]
    version = result["model"]["modelVersions"][0]
    infohash = version["files"][0]["civitas"]["infohash"]
    routes = [
        f"/federation/v1/torrents/{infohash}",
        f"/webseed/{sha}",
        f"/federation/v1/blobs/{sha}",
        f"/federation/v1/files/{infohash}/records",
    ]
    for route in routes:
        assert (await client.get(route)).status == 200, route
    assert await tracked(client, infohash)
    # One image record arrives before the withdrawal (naming the version), one after.
    before = image_named(MALLORY, sha, bytes.fromhex(version["civitas"]["recordId"]))
    await node.log.accept_verified([before], PEER, refused=[])
    await node.catalog.withdraw_model(alice.did, result["model"]["id"], None)
    await node.log.accept_verified([image_named(forge.key("eve"), sha)], PEER, refused=[])
    async with node.db.read() as conn:
        rows = await conn.execute(sa.select(images.c.sha256))
        assert list(rows.scalars()) == [sha, sha]  # both image rows are projected
    for route in [*routes, f"/images/{sha}/original=true/x.png", f"/images/{sha}/width=160/x.png"]:
        resp = await client.get(route)
        assert resp.status == 404, (route, resp.status)
        assert (await resp.json())["error"]
    assert not await tracked(client, infohash)
    assert sha not in await node.catalog.store.public.shown_among([sha])  # type: ignore[union-attr]


async def test_a_withdrawn_models_previews_are_hidden_unless_shown_elsewhere(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    own, shared = tmp_path / "own.png", tmp_path / "shared.png"
    own.write_bytes(png_bytes(seed=1))
    shared.write_bytes(png_bytes(seed=2))
    gone = await node.catalog.publish_path(
        alice.did, make_lora("gone.safetensors", seed=1), {"name": "Gone"}, [own, shared]
    )
    kept = await node.catalog.publish_path(
        alice.did, make_lora("kept.safetensors", seed=2), {"name": "Kept"}, [shared]
    )
    gone_version = gone["model"]["modelVersions"][0]
    shared_sha = kept["model"]["modelVersions"][0]["images"][0]["civitas"]["sha256"]
    (own_sha,) = {i["civitas"]["sha256"] for i in gone_version["images"]} - {shared_sha}
    bob = await node.accounts.add_user("bob", PASSWORD)
    # Bob's own image made with the model: his record, not covered by Alice's withdrawal.
    bobs = sign_record(
        node.home.author_key(bob.did),
        "image",
        {
            "sha256": bytes.fromhex(shared_sha),
            "width": 96,
            "height": 64,
            "size": 100,
            "mime": "image/png",
            "model_version": bytes.fromhex(gone_version["civitas"]["recordId"]),
        },
    )
    await node.log.accept_verified([bobs])

    async def listed() -> list[tuple[str, str]]:
        resp = await client.get("/api/v1/images", params={"limit": "50"})
        assert resp.status == 200
        items = (await resp.json())["items"]
        return sorted((i["username"], i["civitas"]["sha256"]) for i in items)

    assert await listed() == sorted(
        [("alice", own_sha), ("alice", shared_sha), ("alice", shared_sha), ("bob", shared_sha)]
    )
    await node.catalog.withdraw_model(alice.did, gone["model"]["id"], None)
    # Alice's previews of the withdrawn model are gone from the listing; the same file as
    # the kept model's preview, and Bob's image, stay.
    assert await listed() == sorted([("alice", shared_sha), ("bob", shared_sha)])
    by_model = await client.get("/api/v1/images", params={"modelId": str(gone["model"]["id"])})
    assert (await by_model.json())["items"] == []  # the model is gone
    kept_id = str(kept["model"]["id"])
    by_kept = await client.get("/api/v1/images", params={"modelId": kept_id})
    assert [i["civitas"]["sha256"] for i in (await by_kept.json())["items"]] == [shared_sha]
    for route in (f"/images/{own_sha}/original=true/x.png", f"/federation/v1/blobs/{own_sha}"):
        assert (await client.get(route)).status == 404, route
    assert (await client.get(f"/images/{own_sha}")).status == 404  # its page
    for route in (
        f"/images/{shared_sha}/original=true/x.png",
        f"/federation/v1/blobs/{shared_sha}",
    ):
        assert (await client.get(route)).status == 200, route
    page = await client.get(f"/images/{shared_sha}")
    assert page.status == 200
