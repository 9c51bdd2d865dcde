"""Federation sync: a full pull between live nodes, against raw Ed25519 verification.

Usage: .venv/bin/python bench/sync.py [--records 100000] [--mix] [--line 5] [--keep-dir]
       [--budget-s 270]

In one run, on this machine:
  (a) the baseline: raw Ed25519 verifications/s (cryptography's Ed25519PublicKey.verify,
      32-byte messages, one thread); also ``verify_signature`` as the node calls it (did
      decoded, key object built each time) and ``verify_record`` on the records below,
      both without any I/O
  (b) node A, a real node (SQLite in a temp dir, HTTP on 127.0.0.1, no BitTorrent),
      loaded with N signed ``profile`` records from 1000 authors (--mix: a realistic mix,
      each author's profile, then per model 1 ``model``, 2 ``model_version`` and 6
      ``image`` records) through
      ``RecordLog.accept_verified`` in batches of 1000 (fewer if loading and pulling all N
      would take more than --budget-s at the rate loading runs: the largest N that fits is
      measured, and the requested N extrapolated, marked as such; --budget-s 0 measures
      all N whatever it takes); then a fresh node B peers with A and
      ``Federation.pull`` reads A's whole log over HTTP, both nodes' background loops
      stopped first so only the measured pull runs. Prints B's accepted records/s next to
      (a) and their ratio, and where B's time went: timing wrappers are put on these two
      node instances (and on ``verify_record`` and ``wire.decode_page`` as the federation
      module calls them) for the run, a few microseconds per call
  (c) a line of --line nodes N1 - N2 - ... peered both ways, background loops running:
      one new record accepted on N1, timed until it is in the last node's log (polled every
      10 ms), 5 times; commit times on every node and the inbox POSTs are counted too

A and B (and the line's nodes) run in this one process and event loop, as in the tests:
B's pull is sequential (fetch a page, verify it, append it, fetch the next), so A's work
serving a page is part of B's wall time either way. Everything is removed at the end
unless --keep-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.app import Node, build_node, create_app, set_public_url
from node.config import load_config, render_config
from node.db import Database
from node.home import Home
from node.p2p.federation import service as federation_service
from node.p2p.federation import wire
from node.p2p.keys import SigningKey, did_from_public_key, verify_signature
from node.p2p.records import Record, now_ms, sign_record, verify_record
from node.p2p.tables import records

P = ParamSpec("P")
T = TypeVar("T")

AUTHORS = 1000
LOAD_BATCH = 1000
BASELINE_SIGNATURES = 20_000
VERIFY_SAMPLE = 5000  # records verified in memory for (a)
LINE_REPEATS = 5
LINE_DEADLINE_S = 30.0
POLL_S = 0.010
SETTINGS: dict[tuple[str, str], Any] = {
    ("server", "port"): 0,
    ("torrent", "enabled"): False,
    ("torrent", "listen_host"): "127.0.0.1",
    ("torrent", "listen_port"): 0,
    ("torrent", "dht"): False,
}


def say(text: str = "") -> None:
    print(text, flush=True)


# --- timing -----------------------------------------------------------------------------------


class Stopwatch:
    """Wall seconds and calls per name, summed over wrapped calls."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def sync(self, name: str, fn: Callable[P, T]) -> Callable[P, T]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed

    def coro(self, name: str, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


@contextlib.contextmanager
def patched(target: Any, name: str, wrapper: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``target.name`` by ``wrapper(target.name)`` for the block (this process only)."""
    original = getattr(target, name)
    on_instance = name in vars(target)
    setattr(target, name, wrapper(original))
    try:
        yield
    finally:
        if on_instance:
            setattr(target, name, original)
        else:  # a method of the class: drop the instance attribute that shadowed it
            delattr(target, name)


def best_rate(runs: int, count: int, fn: Callable[[], object]) -> float:
    """Items per second of the best of ``runs`` timed calls of ``fn`` (each does ``count``)."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return count / best


# --- (a) the baseline -------------------------------------------------------------------------


@dataclass
class Baseline:
    raw_per_s: float  # Ed25519PublicKey.verify alone
    node_per_s: float  # verify_signature(did, ...): did decode + key object + verify
    record_per_s: float  # verify_record: decode, canonical check, envelope, signature


def signature_rates(n: int) -> tuple[float, float]:
    keys = [Ed25519PrivateKey.generate() for _ in range(100)]
    publics = [k.public_key() for k in keys]
    dids = [did_from_public_key(p.public_bytes_raw()) for p in publics]
    items = []
    for i in range(n):
        message = os.urandom(32)
        items.append((i % len(keys), keys[i % len(keys)].sign(message), message))

    def raw() -> None:
        for k, signature, message in items:
            publics[k].verify(signature, message)

    def as_node() -> None:
        for k, signature, message in items:
            verify_signature(dids[k], signature, message)

    best_raw = best_node = 0.0
    for _ in range(3):  # interleaved, so a busy moment on this shared machine hits both
        best_raw = max(best_raw, best_rate(1, n, raw))
        best_node = max(best_node, best_rate(1, n, as_node))
    return best_raw, best_node


def record_rate(raws: list[bytes]) -> float:
    def run() -> None:
        for raw in raws:
            verify_record(raw)

    return best_rate(3, len(raws), run)


# --- nodes ------------------------------------------------------------------------------------


@dataclass
class LiveNode:
    name: str
    node: Node
    runner: web.AppRunner
    url: str

    @property
    def did(self) -> str:
        return self.node.node_key.did


async def start_node(root: Path, name: str) -> LiveNode:
    """A real node: its own home and SQLite database, its app on 127.0.0.1 (a free port)."""
    home = Home(root / name)
    config = load_config(home.path, {**SETTINGS, ("node", "name"): name}, environ={})
    home.create(render_config(config))
    if hasattr(config.federation, "auto_connect"):
        config.federation.auto_connect = False  # peers are only those added: a line stays one
    node = build_node(config, home)
    await node.db.migrate()
    app = create_app(node, home.admin_token())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # runs the app's startup: schema check, epoch, federation loops
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    set_public_url(app, url)
    return LiveNode(name, node, runner, url)


async def stop_nodes(nodes: list[LiveNode]) -> None:
    for live in reversed(nodes):
        await live.runner.cleanup()  # stops the federation loops, closes the database
    nodes.clear()


class Profiles:
    """Small signed ``profile`` records, round-robin over ``authors`` keys, in the past."""

    def __init__(self, count: int, authors: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.keys = [SigningKey.from_seed(rng.randbytes(32)) for _ in range(authors)]
        self.start = now_ms() - count - 60_000

    def make(self, first: int, count: int) -> list[Record]:
        n = len(self.keys)
        return [
            sign_record(
                self.keys[i % n],
                "profile",
                {"name": f"author {i % n} #{i // n}", "bio": f"bench profile {i}"},
                created=self.start + i,
            )
            for i in range(first, first + count)
        ]


class Mix:
    """A realistic mix: each author's ``profile`` first, then per model one ``model``
    record, two ``model_version`` records (one file each) and three ``image`` records per
    version (9 catalog records per model), round-robin over the authors, in the past."""

    def __init__(self, count: int, authors: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.keys = [SigningKey.from_seed(rng.randbytes(32)) for _ in range(authors)]
        self.start = now_ms() - count - 60_000
        self.made: list[Record] = []
        self.model = self.version = b""

    def _sha(self, label: str) -> bytes:
        return hashlib.sha256(label.encode()).digest()

    def _next(self, i: int) -> Record:
        n = len(self.keys)
        created = self.start + i
        if i < n:
            return sign_record(self.keys[i], "profile", {"name": f"author {i}"}, created=created)
        j = i - n
        unit, slot = divmod(j, 9)
        key = self.keys[unit % n]
        if slot == 0:
            body: dict[str, Any] = {
                "name": f"model {unit}",
                "type": "LORA",
                "description": f"bench model {unit} by author {unit % n}",
                "tags": ["bench", f"tag{unit % 50}", f"style{unit % 7}"],
            }
            record = sign_record(key, "model", body, created=created)
            self.model = record.id
        elif slot in (1, 5):
            file_sha = self._sha(f"file {unit} {slot}")
            body = {
                "model": self.model,
                "name": f"v{1 + slot // 5}",
                "base_model": "SD 1.5",
                "trained_words": [f"word{unit}"],
                "files": [
                    {
                        "name": f"model{unit}.safetensors",
                        "size": 1234 + unit,
                        "sha256": file_sha,
                        "blake3": self._sha(f"blake3 {unit} {slot}"),
                        "crc32": file_sha[:4],
                        "format": "SafeTensor",
                    }
                ],
            }
            record = sign_record(key, "model_version", body, created=created)
            self.version = record.id
        else:
            body = {
                "sha256": self._sha(f"image {unit} {slot}"),
                "width": 512,
                "height": 768,
                "size": 100_000,
                "mime": "image/png",
                "model_version": self.version,
                "meta": {"prompt": f"bench image {unit} {slot}", "steps": 20},
            }
            record = sign_record(key, "image", body, created=created)
        return record

    def make(self, first: int, count: int) -> list[Record]:
        while len(self.made) < first + count:
            self.made.append(self._next(len(self.made)))
        return self.made[first : first + count]


async def statement_cost(db: Database, path: Path, n: int = 1000) -> tuple[float, float]:
    """Seconds per indexed SELECT by id: through the node's engine, and with sqlite3 directly."""
    import sqlite3

    missing = b"\0" * 32
    probe = sa.select(records.c.seq).where(records.c.id == missing)
    async with db.read() as conn:
        await conn.scalar(probe)
        t0 = time.perf_counter()
        for _ in range(n):
            await conn.scalar(probe)
        engine = (time.perf_counter() - t0) / n
    direct = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            direct.execute("SELECT seq FROM records WHERE id = ?", (missing,)).fetchone()
        plain = (time.perf_counter() - t0) / n
    finally:
        direct.close()
    return engine, plain


# --- (b) the pull -----------------------------------------------------------------------------


async def bench_pull(
    root: Path,
    nodes: list[LiveNode],
    wanted: int,
    budget_s: float,
    baseline: Baseline,
    mix: bool = False,
) -> dict[str, float]:
    """Load A, pull it to B; returns the measured phases (seconds) and ``records``."""
    what = "records of a mix (profile, model, model_version, image)" if mix else "records"
    say(f"\n(b) full pull, node A -> node B over HTTP (SQLite, 127.0.0.1): {wanted:,} {what}")
    profiles: Profiles | Mix = Mix(wanted, AUTHORS) if mix else Profiles(wanted, AUTHORS)
    t0 = time.perf_counter()
    sample = profiles.make(0, min(wanted, VERIFY_SAMPLE))
    t_sign = time.perf_counter() - t0
    baseline.record_per_s = record_rate([r.raw for r in sample])
    say(
        f"    verify_record in memory on {len(sample):,} of them: {baseline.record_per_s:,.0f} /s,"
        f" ratio {baseline.record_per_s / baseline.raw_per_s:.2f} of the raw rate in (a);"
        f" {sum(len(r.raw) for r in sample) / len(sample):.0f} bytes per record"
    )

    a = await start_node(root, "a")
    nodes.append(a)
    await a.node.federation.stop()
    a_before = await a.node.log.count()  # whatever the node wrote of its own at startup
    n, t_load, projected = 0, 0.0, 0.0
    while n < wanted:
        size = min(LOAD_BATCH, wanted - n)
        if n:  # loading and pulling both cost about this per record, the pull verifies too
            per_record = 2.15 * t_load / n + 1 / baseline.record_per_s
            projected = wanted * per_record
            if budget_s and (n + size) * per_record > budget_s:
                break
        t0 = time.perf_counter()
        batch = sample[n : n + size] if n + size <= len(sample) else profiles.make(n, size)
        t_sign += time.perf_counter() - t0
        t0 = time.perf_counter()
        await a.node.log.accept_verified(batch)
        t_load += time.perf_counter() - t0
        n += size
    del sample
    a_total = await a.node.log.count()
    assert a_total == a_before + n, f"A holds {a_total}, expected {a_before} + {n}"
    if n < wanted:
        say(
            f"    {wanted:,} records would take about {projected:.0f} s to load on A and pull"
            f" to B at the rate loading runs here, over --budget-s {budget_s:.0f}:"
            f" measuring the largest N that fits, {n:,}"
        )
    say(
        f"    signed {n:,} {'mixed' if mix else 'profile'} records from {AUTHORS} authors"
        f" in {t_sign:.1f} s"
        f" ({n / t_sign:,.0f}/s)"
    )
    say(
        f"    node A loaded through accept_verified (batches of {LOAD_BATCH}, no verification):"
        f" {t_load:.1f} s, {n / t_load:,.0f} records/s"
    )

    b = await start_node(root, "b")
    nodes.append(b)
    await b.node.federation.stop()
    b_before = await b.node.log.count()
    peer = await b.node.federation.add_peer(a.url)

    watch = Stopwatch()
    fed, log = b.node.federation, b.node.log
    in_append = False

    # The wrappers pass every argument through: node/ may add some while this bench lives.
    def rules(fn: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            try:
                fn(*args, **kwargs)
            finally:
                where = "rules, again in accept_verified" if in_append else "rules, in accept"
                watch.add(where, time.perf_counter() - t)

        return timed

    def appending(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_append
            in_append, t = True, time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                in_append = False
                watch.add("append", time.perf_counter() - t)

        return timed

    statements = Counter[bool]()  # by whether inside accept_verified
    # A page is projected with project_many (record by record with project before it).
    projecting = "project_many" if hasattr(log.types, "project_many") else "project"

    def count_statement(*_: Any) -> None:
        statements[in_append] += 1

    with contextlib.ExitStack() as stack:
        sa.event.listen(b.node.db.engine.sync_engine, "before_cursor_execute", count_statement)
        stack.callback(
            sa.event.remove, b.node.db.engine.sync_engine, "before_cursor_execute", count_statement
        )
        for target, name, wrapper in (
            (federation_service, "verify_record", lambda f: watch.sync("verify", f)),
            (wire, "decode_page", lambda f: watch.sync("decode", f)),
            (fed, "_get", lambda f: watch.coro("get", f)),
            (fed, "_update", lambda f: watch.coro("update", f)),
            (fed, "_fetch_previews", lambda f: watch.coro("previews", f)),
            (log, "accept_verified", appending),
            (log, "_insert_and_project", lambda f: watch.coro("append_in", f)),
            (log.types, "check_body", rules),
            (log.types, projecting, lambda f: watch.coro("project", f)),
            (a.node.federation, "page", lambda f: watch.coro("serve", f)),
        ):
            stack.enter_context(patched(target, name, wrapper))
        t0 = time.perf_counter()
        pulled = await fed.pull(peer)
        t_pull = time.perf_counter() - t0

    held = await log.count()
    cursor = (await fed.peer(a.did)).cursor
    assert pulled == a_total and held == b_before + a_total, (
        f"B pulled {pulled} and holds {held}, expected {a_total} and {b_before} + {a_total}"
    )
    assert cursor == await a.node.log.high_water()
    rate = pulled / t_pull
    say(
        f"    node B pulled all {pulled:,} in {t_pull:.1f} s ({watch.calls['get']} pages);"
        f" it holds {held:,}"
    )
    say(
        f"    B accepted {rate:,.0f} records/s vs {baseline.raw_per_s:,.0f} Ed25519"
        f" verifications/s: ratio {rate / baseline.raw_per_s:.3f}"
        f" (1/{baseline.raw_per_s / rate:.0f} of the raw verification rate)"
    )

    s = watch.seconds
    top = ("get", "decode", "verify", "rules, in accept", "append", "update", "previews")
    other = t_pull - sum(s[k] for k in top)

    def line(label: str, seconds: float, note: str = "") -> None:
        us = seconds / n * 1e6
        say(
            f"      {label:48s} {seconds:7.2f} s {100 * seconds / t_pull:5.1f} %"
            f" {us:6.0f} us/rec{note}"
        )

    say("    where B's pull time went (wall time, summed over the whole pull):")
    line(
        "HTTP GET of a page (A serving it, transfer)",
        s["get"],
        f"  [A building pages: {s['serve']:.2f} s]",
    )
    line("decoding pages (wire.decode_page)", s["decode"])
    ed_s = n / baseline.raw_per_s
    line("verify_record", s["verify"], f"  [Ed25519 alone at (a): {ed_s:.2f} s]")
    line("body rules in Federation.accept", s["rules, in accept"])
    line(
        "accept_verified: append + project, 1 txn/page",
        s["append"],
        f"  [project: {s['project']:.2f} s;"
        f" rules again: {s['rules, again in accept_verified']:.2f} s]",
    )
    per_record = s["append_in"] - s["project"]
    line("  of which records insert (one multi-row INSERT)", per_record)
    line("  of which the rest: lookups, gate, begin, commit", s["append"] - s["append_in"])
    line("cursor updates (_update, 1 write txn/page)", s["update"])
    line("preview fetching (no images here)", s["previews"])
    line("other (event loop, bookkeeping, wrappers)", other)
    per_statement, plain = await statement_cost(b.node.db, b.node.home.path / "civitas.db")
    inside = statements[True]
    say(
        f"    B ran {statements.total():,} SQL statements, {inside:,} of them in accept_verified"
        f" ({inside / n:.1f} per record, {s['append'] / inside * 1e6:.0f} us each on average);"
        f" one indexed SELECT by id costs {per_statement * 1e6:.0f} us through SQLAlchemy +"
        f" aiosqlite here, {plain * 1e6:.1f} us with sqlite3 on the same file: the time is in"
        " the async driver's round trips, not in SQLite"
    )
    return {"sign": t_sign, "load": t_load, "pull": t_pull, "records": n}


def stamp(times: list[float]) -> Callable[[], None]:
    """A log listener: notes when a transaction that appended new records committed."""
    return lambda: times.append(time.perf_counter())


# --- (c) the line -----------------------------------------------------------------------------


async def bench_line(root: Path, nodes: list[LiveNode], count: int) -> None:
    interval = None
    line_nodes: list[LiveNode] = []
    for i in range(count):
        live = await start_node(root, f"n{i + 1}")
        nodes.append(live)
        line_nodes.append(live)
        interval = live.node.config.federation.sync_interval_s
    names = " - ".join(n.name.upper() for n in line_nodes)
    say(f"\n(c) news along a line: {names}, peered both ways, background loops running")
    say(f"    (pull every federation.sync_interval_s = {interval} s, push on every new record)")
    for left, right in itertools.pairwise(line_nodes):
        await left.node.federation.add_peer(right.url)
        await right.node.federation.add_peer(left.url)
    await asyncio.sleep(1.0)  # the first pushes and pull rounds after peering (nothing to send)

    commits: list[list[float]] = [[] for _ in line_nodes]
    posts: list[tuple[int, int, float, float]] = []  # sender, receiver, start, end
    index = {live.did: i for i, live in enumerate(line_nodes)}
    with contextlib.ExitStack() as stack:
        for i, live in enumerate(line_nodes):
            live.node.log.listeners.append(stamp(commits[i]))

            def posting(fn: Callable[..., Awaitable[None]], i: int = i) -> Any:
                async def timed(peer: Any, *args: Any, **kwargs: Any) -> None:
                    t = time.perf_counter()
                    try:
                        await fn(peer, *args, **kwargs)
                    finally:
                        posts.append((i, index[peer.did], t, time.perf_counter()))

                return timed

            stack.enter_context(patched(live.node.federation, "_post_signed", posting))

        key = SigningKey.from_seed(b"line-bench-author-key-0123456789")
        first, last = line_nodes[0], line_nodes[-1]
        results: list[float] = []
        for rep in range(LINE_REPEATS):
            for c in commits:
                c.clear()
            posts.clear()
            record = sign_record(key, "profile", {"name": f"line {rep}"})
            t0 = time.perf_counter()
            await first.node.log.accept_verified([record])
            arrived = None
            while time.perf_counter() - t0 < LINE_DEADLINE_S:
                if await last.node.log.get(record.id) is not None:
                    arrived = time.perf_counter() - t0
                    break
                await asyncio.sleep(POLL_S)
            await asyncio.sleep(0.5)  # let the last pushes (back towards N1) finish
            hops = " ".join(
                f"{live.name.upper()} {1000 * (c[0] - t0):.0f}" if c else f"{live.name} -"
                for live, c in zip(line_nodes, commits, strict=True)
            )
            back = sum(1 for s, r, _, _ in posts if r < s)
            post_ms = statistics.median([1000 * (end - start) for _, _, start, end in posts] or [0])
            if arrived is None:
                say(f"    run {rep + 1}: not on {last.name.upper()} after {LINE_DEADLINE_S:.0f} s")
                continue
            results.append(arrived)
            say(
                f"    run {rep + 1}: on {last.name.upper()} after {1000 * arrived:6.1f} ms"
                f"  | committed at (ms): {hops}"
                f"  | {len(posts)} inbox POSTs ({back} back towards N1),"
                f" median {post_ms:.1f} ms each"
            )
    if results:
        med = statistics.median(results)
        say(
            f"    median {1000 * med:.1f} ms over {len(results)} runs for {count - 1} hops"
            f" ({1000 * med / (count - 1):.1f} ms per hop); polled every {1000 * POLL_S:.0f} ms"
        )


# --- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, root: Path) -> None:
    nodes: list[LiveNode] = []
    started = time.perf_counter()
    try:
        say(
            f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at the start;"
            f" temp dir {root}"
        )
        say(f"\n(a) baseline: Ed25519 verification, {BASELINE_SIGNATURES:,} signatures, 1 thread")
        raw, as_node = signature_rates(BASELINE_SIGNATURES)
        baseline = Baseline(raw, as_node, 0.0)
        say(f"    Ed25519PublicKey.verify, 32-byte messages (best of 3): {raw:10,.0f} /s")
        say(
            f"    verify_signature(did, ...) as the node calls it:     {as_node:10,.0f} /s"
            f"  ratio {as_node / raw:.2f} (did decoded, key object built each time)"
        )
        times = await bench_pull(root, nodes, args.records, args.budget_s, baseline, args.mix)
        await stop_nodes(nodes)
        measured, target = int(times["records"]), max(args.records, 100_000)
        if measured < target:
            k = target / measured
            say(
                f"    EXTRAPOLATION, NOT MEASURED (linear from the {measured:,} measured):"
                f" {target:,} records would take about {k * times['sign']:.0f} s to sign,"
                f" {k * times['load']:.0f} s to load on A and {k * times['pull']:.0f} s to pull"
                f" to B, at {measured / times['pull']:,.0f} records/s"
            )
        await bench_line(root, nodes, args.line)
    finally:
        await stop_nodes(nodes)
    say(
        f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end"
        f" {os.getloadavg()[0]:.2f} (other work on this machine skews wall times)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records pulled A -> B")
    parser.add_argument("--line", type=int, default=5, help="nodes in the line test (>= 2)")
    parser.add_argument(
        "--mix",
        action="store_true",
        help="pull a realistic mix (1000 profiles, then per model 1 model, 2 model_version"
        " and 6 image records) instead of profile records only",
    )
    parser.add_argument("--keep-dir", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=270.0,
        help="seconds for loading A and pulling to B together: fewer records are measured (and"
        " the rest extrapolated, marked as such) where --records would take longer; 0: no limit",
    )
    args = parser.parse_args()
    if args.records < 1 or args.line < 2:
        parser.error("--records must be >= 1 and --line >= 2")
    root = Path(tempfile.mkdtemp(prefix="civitas-bench-sync-"))
    try:
        asyncio.run(run(args, root))
    finally:
        if args.keep_dir:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
