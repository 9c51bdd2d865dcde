"""Takedown enforcement across nodes: from A's decision to B having stopped seeding,
deleted the file and hidden the records.

Usage: .venv/bin/python bench/takedown.py [--rounds 5] [--file-mb 16] [--keep-dir]

Three real nodes in this process (each its own home, SQLite database, HTTP server on
127.0.0.1 and libtorrent session): A - B - C, peered both ways along the line. B
subscribes to A's takedown list with policy ``auto`` (by did: decisions arrive by
federation push), C with ``review``. Each round:
  1. A publishes a model (a --file-mb safetensors file and one preview image); B fetches
     the file by BitTorrent from A and seeds it; the model shows on C;
  2. an artist files a notice on C naming the model's root, its file and its image; the
     notice reaches A through B;
  3. the baseline: A publishes an edit of the model (a signed revision), timed until B's
     catalog shows the new name — what plain federation takes on this machine;
  4. A's moderator honors the notice; timed from the call until B has (a) the decision in
     its log, (b) hidden the model from its catalog API, (c) removed the torrent from its
     libtorrent session, (d) deleted the file (grace 0), polled every 5 ms. C's queue
     item is checked too (not timed).
Prints per-step medians over the rounds, and the ratio of the whole takedown to the
baseline propagation.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image, ImageDraw
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.app import Node, build_node, create_app, set_public_url
from node.catalog.search import SearchQuery
from node.config import load_config, render_config
from node.home import Home
from node.moderation.service import Submitter

SETTINGS: dict[tuple[str, str], Any] = {
    ("server", "port"): 0,
    ("torrent", "listen_host"): "127.0.0.1",
    ("torrent", "listen_port"): 0,
    ("torrent", "dht"): False,
    ("torrent", "allow_lan"): True,
    ("federation", "sync_interval_s"): 5,
}


@dataclass
class LiveNode:
    name: str
    node: Node
    runner: web.AppRunner
    url: str


async def start_node(root: Path, name: str, **moderation: Any) -> LiveNode:
    home = Home(root / name)
    config = load_config(home.path, {**SETTINGS, ("node", "name"): name}, environ={})
    home.create(render_config(config))
    for key, value in moderation.items():
        setattr(config.moderation, key, value)
    node = build_node(config, home)
    await node.db.migrate()
    app = create_app(node, home.admin_token())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    set_public_url(app, url)
    return LiveNode(name, node, runner, url)


async def until(check: Callable[[], Awaitable[Any]], what: str, limit_s: float = 60) -> float:
    """Seconds until ``check`` is truthy (polled every 5 ms)."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > limit_s:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


def model_file(path: Path, megabytes: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = megabytes * 1024 * 1024 // (2 * 4 * 768)
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": rng.standard_normal(
            (rows, 768), dtype=np.float32
        ),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": rng.standard_normal(
            (768, rows), dtype=np.float32
        ),
    }
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (256, 256), (30, 60, 90))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, 256, 2))
        r = int(rng.integers(16, 64))
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
        )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def names_on(live: LiveNode) -> set[str]:
    items, _ = await live.node.catalog.search(SearchQuery(limit=100))
    return {m["name"] for m in items}


async def one_round(
    a: LiveNode, b: LiveNode, c: LiveNode, work: Path, i: int, mb: int
) -> dict[str, float]:
    alice = await a.node.accounts.get_user("alice")
    preview = work / f"preview{i}.png"
    preview.write_bytes(picture(i))
    published = await a.node.catalog.publish_path(
        alice.did,
        model_file(work / f"style{i}.safetensors", mb, i),
        {"name": f"Style {i}", "base_model": "SD 1.5", "type": "LORA"},
        previews=[preview],
    )
    model = published["model"]
    root, sha = model["civitas"]["rootId"], published["sha256"]
    version = model["modelVersions"][0]
    infohash = version["files"][0]["civitas"]["infohash"]
    image_id = version["images"][0]["civitas"]["recordId"]
    await until(lambda: _has_model(c, f"Style {i}"), "the model on C")
    await until(lambda: _has_model(b, f"Style {i}"), "the model on B")
    await b.node.catalog.fetcher.fetch(sha)
    await until(lambda: b.node.store.local_path(sha), "B's copy by BitTorrent")
    b_path = await b.node.store.local_path(sha)
    assert b_path is not None and b.node.engine is not None

    artist = await c.node.accounts.get_user("artist")
    notice = await c.node.moderation.file_notice(
        c.node.home.author_key(artist.did),
        {
            "claimant_name": "Ada Artist",
            "works": "my paintings",
            "targets": [f"model:{root}", f"file:{sha}", f"image:{image_id}"],
            "reason": "copyright",
            "good_faith": True,
            "accurate": True,
        },
        Submitter(contact="ada@example.org", account="artist"),
    )
    notice_id = bytes.fromhex(notice["id"])
    await until(lambda: a.node.log.get(notice_id), "the notice on A")

    # Baseline: a plain signed edit from A reaching B's catalog.
    t0 = time.perf_counter()
    await a.node.catalog.edit_model(alice.did, model["id"], {"name": f"Style {i} (edited)"})
    baseline = time.perf_counter() - t0
    baseline += await until(lambda: _has_model(b, f"Style {i} (edited)"), "the edit on B")

    engine = b.node.engine
    t0 = time.perf_counter()
    decided = await a.node.moderation.decide("mona", notice_id, "honor")
    decision_id = bytes.fromhex(decided["decisions"][-1]["id"])
    on_a = time.perf_counter() - t0
    in_log = on_a + await until(lambda: b.node.log.get(decision_id), "the decision in B's log")
    hidden = on_a + await until(
        lambda: _lacks_model(b, f"Style {i} (edited)"), "the model hidden on B"
    )

    async def not_seeding() -> bool:
        return infohash not in engine.handles

    async def deleted() -> bool:
        return not b_path.exists() and await b.node.store.local_path(sha) is None

    stopped = on_a + await until(not_seeding, "B to stop seeding")
    gone = on_a + await until(deleted, "B to delete the file")
    total = time.perf_counter() - t0
    await until(lambda: _queued(c, decision_id.hex()), "A's decision queued for review on C")
    return {
        "baseline_edit_s": baseline,
        "decision_on_a_s": on_a,
        "decision_in_b_log_s": in_log,
        "hidden_on_b_s": hidden,
        "not_seeding_on_b_s": stopped,
        "deleted_on_b_s": gone,
        "takedown_total_s": total,
    }


async def _has_model(live: LiveNode, name: str) -> bool:
    return name in await names_on(live)


async def _lacks_model(live: LiveNode, name: str) -> bool:
    return name not in await names_on(live)


async def _queued(live: LiveNode, decision_hex: str) -> bool:
    return any(
        i["kind"] == "decision" and i["ref"] == decision_hex
        for i in await live.node.moderation.queue()
    )


async def main(rounds: int, mb: int, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="civitas-takedown-"))
    nodes: list[LiveNode] = []
    try:
        a = await start_node(work, "a")
        b = await start_node(work, "b", grace_hours=0)
        c = await start_node(work, "c")
        nodes = [a, b, c]
        for one, other in ((a, b), (b, c)):
            await one.node.federation.add_peer(other.url)
            await other.node.federation.add_peer(one.url)
        await b.node.moderation.subscribe(a.node.node_key.did, "auto")
        await c.node.moderation.subscribe(a.node.node_key.did, "review")
        await a.node.accounts.add_user("alice", "correct horse battery")
        await c.node.accounts.add_user("artist", "correct horse battery")
        results = []
        for i in range(rounds):
            results.append(await one_round(a, b, c, work, i, mb))
            print(
                f"round {i + 1}: "
                + ", ".join(f"{k}={v * 1000:.0f} ms" for k, v in results[-1].items())
            )
        print()
        print(f"takedown across 3 nodes, {rounds} rounds, {mb} MiB file, median (min-max):")
        for key in results[0]:
            values = [r[key] for r in results]
            print(
                f"  {key:22s} {statistics.median(values) * 1000:8.1f} ms "
                f"({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"
            )
        ratio = statistics.median(r["takedown_total_s"] for r in results) / statistics.median(
            r["baseline_edit_s"] for r in results
        )
        print(f"  ratio takedown_total / baseline_edit: {ratio:.2f}")
    finally:
        for live in reversed(nodes):
            await live.runner.cleanup()
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file-mb", type=int, default=16)
    parser.add_argument("--keep-dir", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.file_mb, args.keep_dir))
