"""A withdrawn model's file is no longer served by any route: not the download, not the
web seed, not the federation's blob route, and its torrent is no longer handed out
(issue 13: the rows of its versions outlived the model's, and each route served them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from node.accounts.service import User
from node.app import Node, build_node, create_app
from node.config import load_config
from node.home import Home
from tests.catalog.conftest import PASSWORD, lora_file
from tests.conftest import TEST_SETTINGS
from tests.p2p.test_torrents import start_node


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
