"""Sync with two good peers, with and without a hostile third (issue 21: goal <= 1.1).

Usage: .venv/bin/python bench/hostile.py [--records 2000] [--repeats 5] [--modes all]
       [--keep-dir]

Nodes A and B are real nodes (SQLite in a temp dir, HTTP on 127.0.0.1, no BitTorrent),
each loaded with --records signed ``profile`` records. For each run a fresh node C peers
with A and B (and, in a hostile run, with a fake peer from ``tests/p2p/hostile`` in one
of its hostile modes, added first) and runs one round (``sync_all``); the time measured
is from the round's start until C's turns with A and B are both done (every record of
theirs held, ``last_sync`` set). C's pushes are switched off (its pushed cursors set past
its log) so A and B stay the same from run to run; every node's background loops are
stopped, so only the measured round runs. C uses the default pull budgets
(``[federation]`` settings). Runs are interleaved (baseline, then each mode, repeated)
and each figure is the median over --repeats (the best run is shown too: on a shared
machine, other work only ever adds time). After the good turns are done, the
hostile turn is given a few seconds to end by itself, then the hostile peer is removed
(which cancels its turn); the round's total is printed where it ended by itself.

The last line is stable: ``sync with hostile peer: X s vs Y s without, ratio Z`` for the
worst mode (X: its median; Y: the baseline's median).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sync as sync_bench  # its real nodes: one way to start them
from sync import LiveNode

from node.p2p.federation.pull import MAX_SEQ
from node.p2p.keys import SigningKey
from node.p2p.records import now_ms, sign_record
from tests.p2p.hostile.fakepeer import MODES, RECORDS, FakePeer

HOSTILE = [m for m in MODES if m != "good"]
SETTLE_S = 5.0  # how long a hostile turn may go on after the good ones, before removal
POLL_S = 0.005
HOSTILE_RECORDS = [
    sign_record(SigningKey.from_seed(b"h" * 32), "profile", {"name": f"h {i}"}).raw
    for i in range(300)
]


def say(text: str = "") -> None:
    print(text, flush=True)


async def start_node(root: Path, name: str) -> LiveNode:
    """A real node (bench/sync.py's), its federation loops stopped: only the measured
    round runs."""
    live = await sync_bench.start_node(root, name)
    await live.node.federation.stop()
    return live


async def load(live: LiveNode, label: str, n: int) -> None:
    key = SigningKey.from_seed(label.encode().ljust(32, b"\0")[:32])
    start = now_ms() - n - 60_000
    batch = [
        sign_record(key, "profile", {"name": f"{label} {i}"}, created=start + i) for i in range(n)
    ]
    for i in range(0, n, 1000):
        await live.node.log.accept_verified(batch[i : i + 1000])


@dataclass
class Run:
    good_s: float  # until C's turns with A and B are done
    round_s: float | None  # the whole round, where it ended by itself
    requests: int  # records pages the hostile peer was asked for
    hostile: dict[str, Any] | None  # its report


async def one_run(root: Path, n: int, goods: list[LiveNode], mode: str | None) -> Run:
    c = await start_node(root, f"c{n}-{mode or 'baseline'}")
    fake = await FakePeer(mode, HOSTILE_RECORDS, label=mode).start() if mode else None
    try:
        fed = c.node.federation
        if fake is not None:
            await fed.add_peer(fake.url)
        for good in goods:
            await fed.add_peer(good.url)
            await fed._update(good.did, pushed=MAX_SEQ)  # no pushes: A and B stay the same
        t0 = time.perf_counter()
        round_ = asyncio.create_task(fed.sync_all(force=True))
        while not round_.done():
            peers = [await fed.peer(g.did) for g in goods]
            if all(p.last_sync is not None for p in peers):
                break
            await asyncio.sleep(POLL_S)
        good_s = time.perf_counter() - t0
        done, _ = await asyncio.wait({round_}, timeout=SETTLE_S)
        round_s = time.perf_counter() - t0 if done else None
        if not done and fake is not None:
            await fed.remove_peer(fake.did)  # cancels its turn
        report = await round_
        for good in goods:
            if "error" in report[good.did]:
                raise RuntimeError(f"a good peer failed: {report[good.did]}")
        hostile = report.get(fake.did) if fake is not None else None
        requests = fake.requests[RECORDS] if fake is not None else 0
        return Run(good_s, round_s, requests, hostile)
    finally:
        if fake is not None:
            await fake.stop()
        await c.runner.cleanup()


async def run(args: argparse.Namespace, root: Path) -> None:
    modes = HOSTILE if args.modes == "all" else args.modes.split(",")
    logging.getLogger("civitas").setLevel(logging.ERROR)  # hostile peers' warnings, expected
    say(f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; temp dir {root}")
    a = await start_node(root, "a")
    b = await start_node(root, "b")
    try:
        await load(a, "bench author a", args.records)
        await load(b, "bench author b", args.records)
        say(
            f"A and B hold {await a.node.log.count():,} and {await b.node.log.count():,}"
            f" records; C pulls both, {args.repeats} runs each, interleaved"
        )
        await one_run(root, -1, [a, b], None)  # a warm-up, not counted
        runs: dict[str | None, list[Run]] = {m: [] for m in [None, *modes]}
        for rep in range(args.repeats):
            for mode in runs:
                runs[mode].append(await one_run(root, rep, [a, b], mode))
        base = statistics.median(r.good_s for r in runs[None])
        best = min(r.good_s for r in runs[None])
        say(
            f"\nwithout a hostile peer: {base:.2f} s, best {best:.2f} s"
            f" (runs: {_times(runs[None])})"
        )
        worst, worst_s = "", 0.0
        for mode in modes:
            med = statistics.median(r.good_s for r in runs[mode])
            last = runs[mode][-1]
            ended = [r.round_s for r in runs[mode] if r.round_s is not None]
            how = (
                f"round ended by itself in {statistics.median(ended):.2f} s"
                if len(ended) == len(runs[mode])
                else "hostile turn still running after the good ones + 5 s: removed"
            )
            outcome = (last.hostile or {}).get("error") or (last.hostile or {}).get("budget")
            fastest = min(r.good_s for r in runs[mode])
            say(
                f"  {mode:14s} {med:6.2f} s, ratio {med / base:5.2f}; best {fastest:.2f} s,"
                f" ratio {fastest / best:4.2f} (runs: {_times(runs[mode])});"
                f" {max(r.requests for r in runs[mode])} records pages asked of it; {how};"
                f" its turn: {outcome}"
            )
            if med >= worst_s:
                worst, worst_s = mode, med
        say(f"\nworst mode: {worst}")
        say(
            f"sync with hostile peer: {worst_s:.2f} s vs {base:.2f} s without,"
            f" ratio {worst_s / base:.2f}"
        )
    finally:
        await b.runner.cleanup()
        await a.runner.cleanup()


def _times(runs: list[Run]) -> str:
    return " ".join(f"{r.good_s:.2f}" for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records on each good peer")
    parser.add_argument("--repeats", type=int, default=5, help="runs per configuration")
    parser.add_argument(
        "--modes", default="all", help=f"comma-separated hostile modes, or all: {HOSTILE}"
    )
    parser.add_argument("--keep-dir", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.modes != "all" and any(m not in HOSTILE for m in args.modes.split(",")):
        parser.error(f"--modes: choose from {', '.join(HOSTILE)}")
    root = Path(tempfile.mkdtemp(prefix="civitas-bench-hostile-"))
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
