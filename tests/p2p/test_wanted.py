"""Wanted files: previews (and other blobs projected records need) survive interruptions.

Real nodes on 127.0.0.1 (SQLite), as in test_federation.py. A peer "fails" by really not
holding the file for a while (its stored file moved aside, so its blob endpoint answers
404), or by really serving other bytes (its stored file overwritten).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.app import Node, build_node, create_app, set_public_url
from node.config import load_config
from node.home import Home
from node.p2p.federation.wanted import NeededFile, WantedFiles, retry_after_ms
from node.p2p.filestore import FileStore
from node.p2p.records import sign_record
from node.p2p.tables import blobs
from tests.catalog.conftest import PASSWORD, lora_file, png_bytes
from tests.p2p.test_torrents import LiveNode, deliver_records, start_node, wait_for
from tests.test_cli import civitas, ok, serving


async def publish_with_previews(
    live: LiveNode, tmp_path: Path, count: int = 1, seed: int = 1
) -> list[str]:
    """Publish a model with ``count`` previews on ``live``; their SHA256s."""
    user = await live.node.accounts.add_user(f"u{seed}", PASSWORD)
    previews = []
    for i in range(count):
        preview = tmp_path / f"p{seed}-{i}.png"
        preview.write_bytes(png_bytes(seed * 10 + i))
        previews.append(preview)
    published = await live.node.catalog.publish_path(
        user.did,
        lora_file(tmp_path / f"m{seed}.safetensors", seed),
        {"name": f"Model {seed}"},
        previews=previews,
    )
    images = published["model"]["modelVersions"][0]["images"]
    return [image["civitas"]["sha256"] for image in images]


async def image_on(live: LiveNode, sha256: str) -> bool:
    """Whether ``live`` shows an image record for the file ``sha256``."""
    resp = await live.client.get("/api/v1/images", params={"limit": "100"})
    assert resp.status == 200, await resp.text()
    return sha256 in {i["civitas"]["sha256"] for i in (await resp.json())["items"]}


def held(live: LiveNode, sha256: str) -> Callable[[], Awaitable[Path | None]]:
    """For ``wait_for``: where ``live`` holds the file ``sha256``, once it does."""

    async def check() -> Path | None:
        return await live.node.store.local_path(sha256)

    return check


async def stored(live: LiveNode, sha256: str) -> Path:
    path = await live.node.store.local_path(sha256)
    assert path is not None
    return path


async def test_a_preview_missed_during_an_outage_arrives_once_the_peer_serves_it(
    tmp_path: Path,
) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            b.node.wanted.retry_base_s = 0.2  # backoff after a failure: 0.2 s, 0.4 s …
            (sha,) = await publish_with_previews(a, tmp_path)
            on_a = await stored(a, sha)
            aside = on_a.with_suffix(".aside")
            on_a.rename(aside)  # A's blob endpoint answers 404 during B's first sync
            await b.node.federation.add_peer(a.url)
            await b.node.federation.sync_all(force=True)
            assert await image_on(b, sha)  # the records arrived, the file did not
            assert await b.node.store.local_path(sha) is None

            aside.rename(on_a)  # A serves it again
            await b.node.federation.sync_all(force=True)

            path = await wait_for(held(b, sha), "the preview on B after A came back")
            assert path.read_bytes() == on_a.read_bytes()


async def wanted_on(live: LiveNode) -> dict[str, Any]:
    resp = await live.client.get("/api/admin/wanted", headers=live.admin)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def failed_once(live: LiveNode, sha256: str) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """For ``wait_for``: the wanted entry for ``sha256`` once a try at it has failed."""

    async def check() -> dict[str, Any] | None:
        for entry in (await wanted_on(live))["files"]:
            if entry["sha256"] == sha256 and entry["attempts"] >= 1:
                return entry  # type: ignore[no-any-return]
        return None

    return check


def first_temp_at(store: FileStore, path: Path) -> Callable[[], Path]:
    """A ``temp_path`` that hands out ``path`` once, then the store's own temp files."""
    handed, real = [path], store.temp_path

    def temp_path() -> Path:
        return handed.pop() if handed else real()

    return temp_path


def one_held_one_failed(
    live: LiveNode, shas: tuple[str, str]
) -> Callable[[], Awaitable[tuple[str, dict[str, Any]] | None]]:
    """For ``wait_for``: (the file held, the wanted entry that failed) once both are so."""

    async def check() -> tuple[str, dict[str, Any]] | None:
        failed = [e for e in (await wanted_on(live))["files"] if e["attempts"] >= 1]
        held_now = [s for s in shas if await live.node.store.local_path(s)]
        return (held_now[0], failed[0]) if len(held_now) == 1 and len(failed) == 1 else None

    return check


async def test_a_file_the_sender_lacks_is_fetched_from_another_peer(tmp_path: Path) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            async for c in start_node(tmp_path / "c", enabled=False):
                c.node.wanted.retry_base_s = 0.2
                (sha,) = await publish_with_previews(a, tmp_path)
                await b.node.federation.add_peer(a.url)
                await b.node.federation.sync_all(force=True)
                await wait_for(held(b, sha), "the preview on B")
                (await stored(a, sha)).unlink()  # A lost it: only B serves it now

                await c.node.federation.add_peer(a.url)  # C hears of the image from A
                await c.node.federation.sync_all(force=True)
                entry = await wait_for(failed_once(c, sha), "C failing to get it from A")
                assert entry["source"] == a.node.node_key.did
                assert "404" in entry["last_error"]

                await c.node.federation.add_peer(b.url)  # another peer that has it
                path = await wait_for(held(c, sha), "the preview on C, from B")
                assert path.read_bytes() == (await stored(b, sha)).read_bytes()
                assert (await wanted_on(c))["count"] == 0


async def test_bytes_that_do_not_match_are_refused_and_fetched_again_later(
    tmp_path: Path,
) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            (sha,) = await publish_with_previews(a, tmp_path)
            on_a = await stored(a, sha)
            genuine = on_a.read_bytes()
            on_a.write_bytes(genuine[:-1] + bytes([genuine[-1] ^ 0xFF]))  # A serves other bytes
            await b.node.federation.add_peer(a.url)
            await b.node.federation.sync_all(force=True)
            entry = await wait_for(failed_once(b, sha), "B refusing A's bytes")
            assert "do not match" in entry["last_error"]
            assert entry["next_try"] > entry["added"]  # backing off
            assert await b.node.store.local_path(sha) is None
            assert not list(b.node.store.tmp.iterdir())  # nothing half-stored

            shown = await (await b.client.get("/admin/federation", headers=b.admin)).text()
            assert "Wanted files" in shown and sha in shown and "do not match" in shown

            on_a.write_bytes(genuine)
            resp = await b.client.post("/api/admin/wanted/retry", headers=b.admin)
            assert resp.status == 200 and (await resp.json())["due"] == 1
            path = await wait_for(held(b, sha), "the genuine preview on B")
            assert path.read_bytes() == genuine
            assert (await b.client.get("/api/admin/wanted")).status == 401  # admins only


async def test_a_full_disk_fails_one_file_and_the_others_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for a in start_node(tmp_path / "a", enabled=False):
        async for b in start_node(tmp_path / "b", enabled=False):
            first, second = await publish_with_previews(a, tmp_path, count=2)
            # A real ENOSPC from the kernel, without mounting a tiny filesystem (that needs
            # root): the first temp file B's store hands out is a symlink to /dev/full, on
            # which every write fails with "No space left on device". The store code that
            # writes, renames and cleans up runs unchanged; only its temp name is chosen.
            full = tmp_path / "full.part"
            full.symlink_to("/dev/full")
            monkeypatch.setattr(b.node.store, "temp_path", first_temp_at(b.node.store, full))
            await b.node.federation.add_peer(a.url)
            await b.node.federation.sync_all(force=True)

            outcome = await wait_for(one_held_one_failed(b, (first, second)), "each way one")
            held_now, failure = outcome
            assert {held_now, failure["sha256"]} == {first, second}
            assert "No space left on device" in failure["last_error"]
            assert not full.is_symlink()  # the failed temp file (the link) was cleaned up

            await b.client.post("/api/admin/wanted/retry", headers=b.admin)  # space was freed
            await wait_for(held(b, failure["sha256"]), "the file that hit the full disk")
            assert (await wanted_on(b))["count"] == 0


async def test_files_missing_at_start_become_wanted_and_arrive(tmp_path: Path) -> None:
    """B was killed after a page of records committed and before their previews were
    fetched (nor even queued): at its next start they are wanted and fetched."""
    async for a in start_node(tmp_path / "a", enabled=False):
        shas = await publish_with_previews(a, tmp_path, count=2)
        async for b in start_node(tmp_path / "b", enabled=False):
            await b.node.wanted.stop()
            await b.node.federation.stop()
            await b.node.federation.add_peer(a.url)
            await deliver_records(a.node, b.node)  # projected, files not fetched
            assert all([await image_on(b, sha) for sha in shas])
            assert (await wanted_on(b))["count"] == 0
        # The same home started again: a new process would build exactly this.
        home = Home(tmp_path / "b")
        node = build_node(load_config(home.path, environ={}), home)
        app = create_app(node, home.admin_token())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            set_public_url(app, str(client.make_url("")))
            b = LiveNode(node, client)
            for sha in shas:
                path = await wait_for(held(b, sha), "a preview missing at start")
                assert path.read_bytes() == (await stored(a, sha)).read_bytes()


def test_backoff_doubles_from_the_base_up_to_an_hour() -> None:
    assert [retry_after_ms(n, 10) for n in (1, 2, 3, 4)] == [10_000, 20_000, 40_000, 80_000]
    assert retry_after_ms(30, 10) == 3_600_000


async def test_the_queue_is_rebuilt_from_the_catalog_and_kept_in_the_database(
    node: Node, tmp_path: Path
) -> None:
    """On SQLite and PostgreSQL: reconciling finds every shown image whose file is gone
    (``deep``: also a row left without its file), a failure is kept with its backoff
    across a restart, and files no shown record needs any more leave the queue."""
    user = await node.accounts.add_user("alice", PASSWORD)
    previews = []
    for i in range(2):
        previews.append(tmp_path / f"p{i}.png")
        previews[-1].write_bytes(png_bytes(40 + i))
    published = await node.catalog.publish_path(
        user.did, lora_file(tmp_path / "m.safetensors", 4), {"name": "Lost"}, previews=previews
    )
    images = published["model"]["modelVersions"][0]["images"]
    row_gone, file_gone = (i["civitas"]["sha256"] for i in images)
    wanted = node.wanted
    assert await wanted.reconcile(deep=True) == 0  # everything is held
    for sha in (row_gone, file_gone):
        (await node.store.local_path(sha)).unlink()  # type: ignore[union-attr]
    async with node.db.write() as conn:
        await conn.execute(blobs.delete().where(blobs.c.sha256 == row_gone))

    assert await wanted.reconcile() == 1  # cheap: rows only
    assert await wanted.reconcile(deep=True) == 1  # at start: files on disk too
    total, listed = await wanted.listing()
    assert total == 2 and {w.sha256 for w in listed} == {row_gone, file_gone}

    assert await wanted.fetch_due() == 0  # no peers to ask
    again = WantedFiles(node.db, node.store, wanted.sources, wanted.needs)  # a restart
    _, listed = await again.listing()
    assert all(w.attempts == 1 and w.last_error == "no peer to ask" for w in listed)
    assert all(w.next_try >= w.added + 10_000 for w in listed)
    assert await again.fetch_due() == 0  # not due yet: nothing tried
    assert {w.attempts for w in (await again.listing())[1]} == {1}

    # Its author withdraws one image: that file is no longer wanted, the other still is.
    target = bytes.fromhex(images[0]["civitas"]["recordId"])
    tombstone = sign_record(node.home.author_key(user.did), "tombstone", {"target": target})
    await node.log.accept_verified([tombstone])
    await again.reconcile()
    assert [w.sha256 for w in (await again.listing())[1]] == [file_gone]

    extra = NeededFile("AB" * 32, 10)  # wanted by several writers at once: queued once
    await asyncio.gather(*(again.want([extra], "peer") for _ in range(4)))
    assert (await again.listing())[0] == 2  # no IntegrityError either


def test_the_operator_lists_and_retries_wanted_files_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(civitas(home, "init", "--host", "127.0.0.1", "--port", "0"))
    with serving(home, tmp_path / "serve.err"):
        assert ok(civitas(home, "files", "wanted")).strip() == "no files wanted"
        shown = ok(civitas(home, "files", "wanted", "--retry"))
        assert shown.splitlines() == ["0 wanted files due now", "no files wanted"]
