"""Ingest hashing throughput: one-pass `hash_file` against SHA-256 alone and a naive baseline.

Usage: .venv/bin/python bench/ingest.py [--size-mib 2048] [--dir DIR] [--piece-length BYTES]

Generates a safetensors file, reads it once so every timed run is served from the page
cache (this measures hashing, not the disk), then times:
  (a) hashlib.sha256 alone, 4 MiB reads           -- the floor any ingest pays
  (b) hash_file: all Civitai hashes + torrent pieces, one read
  (c) naive: one full read per hash, one after another
  (d) a real publish through a node (SQLite home, signed records, header checks,
      detection, every hash), with the file seeded in place
  (e) the same publish copying the file into the content-addressed store (adds a write)
and prints MB/s (10^6 bytes) and the ratios against (a).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.catalog.hashing import DEFAULT_BLOCK_SIZE, FileHashes, hash_file

READ = 4 << 20


def write_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of ``size`` bytes: one U8 tensor filling the data section."""
    meta = {"__metadata__": {"format": "pt", "bench": "civitas"}}
    header = json.dumps({**meta, "w": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})
    pad = 64 - (8 + len(header)) % 64  # room for the real numbers, then aligned
    n = size - 8 - len(header) - pad
    header = json.dumps({**meta, "w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}})
    raw = header.encode().ljust(size - n - 8, b" ")
    base = os.urandom(16 << 20)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        left, i = n, 0
        while left:  # the same random chunk, stamped with its index so no two are equal
            chunk = (i.to_bytes(8, "little") + base[8:])[:left]
            f.write(chunk)
            left -= len(chunk)
            i += 1


def blocks(path: Path, start: int = 0) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        while block := f.read(READ):
            yield block


def sha256_alone(path: Path) -> str:
    h = hashlib.sha256()
    for block in blocks(path):
        h.update(block)
    return h.hexdigest().upper()


def naive(path: Path, piece_length: int) -> FileHashes:
    """Each hash on its own full read, the way a simple script would do it."""
    sha = hashlib.sha256()
    for block in blocks(path):
        sha.update(block)
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        f.seek(0x100000)
        v1 = hashlib.sha256(f.read(0x10000)).hexdigest()[:8].upper()
    v3 = hashlib.sha256()
    for block in blocks(path, 8 + header_len):
        v3.update(block)
    b3 = blake3.blake3()
    for block in blocks(path):
        b3.update(block)
    crc = 0
    for block in blocks(path):
        crc = zlib.crc32(block, crc)
    pieces = []
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(piece_length):
            pieces.append(hashlib.sha1(piece, usedforsecurity=False).digest())
    return FileHashes(
        size=path.stat().st_size,
        sha256=sha.hexdigest().upper(),
        autov1=v1,
        autov3_full=v3.hexdigest().upper(),
        blake3=b3.hexdigest().upper(),
        crc32=f"{crc:08X}",
        pieces=tuple(pieces),
        piece_length=piece_length,
    )


def best_of(runs: int, fn: Callable[[], object]) -> tuple[float, float, object]:
    """Best wall time, the CPU seconds of that run (both cores count), and the result."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        if (wall := time.perf_counter() - t0) < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, result


def publish_once(path: Path, tmp: Path, *, in_place: bool) -> tuple[float, float]:
    """Publish ``path`` through a fresh node's real Publisher; (wall, cpu) seconds."""
    import asyncio

    from node.app import build_node
    from node.config import load_config, render_config
    from node.home import Home

    home = Home(tmp / f"home-{'in-place' if in_place else 'copy'}")
    config = load_config(home.path, environ={})
    home.create(render_config(config))
    node = build_node(config, home)

    async def go() -> tuple[float, float]:
        await node.db.migrate()
        user = await node.accounts.add_user("bench", "bench-password")
        c0, t0 = time.process_time(), time.perf_counter()
        await node.catalog.publish_path(
            user.did,
            path,
            {"name": "bench", "type": "Checkpoint", "base_model": "SD 1.5", "in_place": in_place},
        )
        result = time.perf_counter() - t0, time.process_time() - c0
        await node.db.close()
        return result

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(home.path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--piece-length", type=int, default=512 << 10)
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    size = args.size_mib << 20
    free = shutil.disk_usage(args.dir).free
    if free < 2 * size:
        print(
            f"refusing: {args.dir} has {free >> 20} MiB free, need 2 x {args.size_mib} MiB;"
            " pass a smaller --size-mib or another --dir",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="civitas-bench-") as tmp:
        path = Path(tmp) / "model.safetensors"
        t0 = time.perf_counter()
        write_safetensors(path, size)
        print(f"file: {path} {size >> 20} MiB, written in {time.perf_counter() - t0:.1f} s")
        sha256_alone(path)  # warm the page cache: every timed run below reads from memory
        print(f"page cache warmed by one full read; all runs are from cache; cpus={os.cpu_count()}")
        print(f"block size {args.block_size >> 10} KiB, piece length {args.piece_length >> 10} KiB")

        def report(label: str, seconds: float, cpu: float, ref: float | None) -> None:
            ratio = f"  ratio vs (a) {ref / seconds:.2f}" if ref else ""
            print(
                f"{label:46s} {size / seconds / 1e6:6.0f} MB/s {seconds:6.2f} s wall"
                f" {cpu:6.2f} s cpu{ratio}"
            )

        t_sha, c_sha, digest = best_of(args.runs, lambda: sha256_alone(path))
        report(f"(a) hashlib.sha256 alone (best of {args.runs})", t_sha, c_sha, None)
        t_one, c_one, one = best_of(
            args.runs,
            lambda: hash_file(path, piece_length=args.piece_length, block_size=args.block_size),
        )
        assert isinstance(one, FileHashes) and one.sha256 == digest
        report(f"(b) hash_file, all hashes + pieces (best of {args.runs})", t_one, c_one, t_sha)
        if not args.skip_naive:
            t_naive, c_naive, slow = best_of(1, lambda: naive(path, args.piece_length))
            report("(c) naive, one read per hash (1 run)", t_naive, c_naive, t_sha)
            assert slow == one, "naive and one-pass hashes differ"
            print("naive and one-pass results are identical")
        for label, in_place in (("(d) publish, in place", True), ("(e) publish, copied", False)):
            seconds, cpu = publish_once(path, Path(tmp), in_place=in_place)
            report(f"{label} (1 run)", seconds, cpu, t_sha)
        print(json.dumps(one.civitai()))
        print(
            f"load average after the runs: {os.getloadavg()[0]:.2f} (other work skews wall times)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
