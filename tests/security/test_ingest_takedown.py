"""Issue 13.12: once a file is taken down here, nothing of it is handed out any more: not
its ``.torrent``, not its bytes by web seed or download, not a magnet or a peer to get it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from node.app import Node
from node.moderation.schemas import Target
from node.moderation.tables import quarantine
from node.p2p.tables import torrents
from tests.catalog.conftest import PASSWORD, lora_file


async def test_a_taken_down_file_has_no_torrent_web_seed_or_download(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    alice = await node.accounts.add_user("alice", PASSWORD)
    published = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors"), {"name": "Fox", "base_model": "SD 1.5"}
    )
    version = published["model"]["modelVersions"][0]
    sha256 = published["sha256"]
    async with node.db.read() as conn:
        infohash = await conn.scalar(
            sa.select(torrents.c.infohash).where(torrents.c.sha256 == sha256)
        )
    urls = [
        f"/federation/v1/torrents/{infohash}",
        f"/webseed/{sha256}",
        f"/api/download/models/{version['id']}",
    ]
    for url in urls:
        assert (await client.get(url)).status == 200, url

    await node.moderation.enforcer.apply(
        b"\x07" * 32, [Target("file", bytes.fromhex(sha256))], "remove", "copyright", "test"
    )

    for url in urls:
        resp = await client.get(url, allow_redirects=False)
        body = await resp.json()
        assert "magnet" not in body and "Location" not in resp.headers
        if url.startswith("/api/download/") and resp.status == 404:
            continue  # the version itself is hidden by the decision
        assert resp.status == 451, (url, resp.status, body)
        assert body["error"] == "taken_down"
    # the index itself no longer names it to the tracker
    assert not await node.torrents.knows(infohash)


async def test_a_quarantined_file_of_a_version_still_shown_is_not_downloadable(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    alice = await node.accounts.add_user("alice", PASSWORD)
    published = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "owl.safetensors"), {"name": "Owl", "base_model": "SD 1.5"}
    )
    url = f"/api/download/models/{published['model']['modelVersions'][0]['id']}"
    assert (await client.get(url)).status == 200
    async with node.db.write() as conn:  # held for a decision; its records not (yet) hidden
        await conn.execute(
            quarantine.insert().values(
                sha256=published["sha256"],
                decision_id=b"\x08" * 32,
                size=1,
                since=0,
                delete_after=0,
            )
        )
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 451
    assert (await resp.json())["error"] == "taken_down"
