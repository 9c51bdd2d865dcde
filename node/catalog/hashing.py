"""One-pass hashing of model files: every Civitai hash and the torrent pieces from one read.

A checkpoint is 2-7 GB. Reading it once per hash costs more than the hashing, so the file is
read once, in large blocks, and each block is handed through a bounded queue to one thread
per hasher. hashlib, zlib and blake3 release the GIL on large buffers, so the hashers run in
parallel with each other and with the read, and memory stays at about queue depth x block
size. `hash_file` is `StreamHasher` fed from disk: uploads use the same code as they stream in.

Civitai's rules, all uppercase hex (DESIGN.md section 3):

- SHA256 of the whole file; AutoV2 is its first 10 hex.
- AutoV1 is the first 8 hex of SHA-256 over the 0x10000 bytes at offset 0x100000, the old
  A1111 ``model_hash``. A1111 hashes whatever that window holds, so every file up to 1 MiB
  gets SHA-256 of nothing (``E3B0C442``) and a file a little over 1 MiB a truncated window.
  DESIGN.md says "none under 2 MiB"; we read that as "none where A1111's value means
  nothing" and give AutoV1 exactly when the whole window exists (size >= 0x110000). Between
  0x110000 and 2 MiB the value is A1111's own, so a literal 2 MiB cut would only lose
  lookups.
- AutoV3 is SHA-256 of everything after the safetensors header (bytes 8+N to the end, N the
  little-endian u64 at the start): kohya's ``addnet_hash_safetensors``. It is kept in full
  and shown as 12 hex. None when the file does not look like safetensors (N < 2, the
  header does not start with ``{``, or 8+N is past the end); strict header validation is
  the ingest's job, not this module's.
- BLAKE3 and CRC32 of the whole file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3

# From bench/ingest.py on the 2-core dev VM: 2-8 MiB blocks are within 2% of each other,
# 256 KiB costs 15%, and deeper queues buy nothing, because both cores are already busy.
DEFAULT_BLOCK_SIZE = 4 << 20
DEFAULT_QUEUE_DEPTH = 4
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
MIN_PIECE_LENGTH = 16 << 10  # libtorrent's smallest piece


class HashCancelled(Exception):
    """`hash_file` stopped early because its ``cancel`` event was set."""


@dataclass(frozen=True)
class FileHashes:
    """Every hash of one file, in Civitai's spelling (uppercase hex)."""

    size: int
    sha256: str
    autov1: str | None
    autov3_full: str | None
    blake3: str
    crc32: str
    pieces: tuple[bytes, ...] = ()  # torrent SHA-1 piece digests, when piece_length was given
    piece_length: int | None = None

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @property
    def autov3(self) -> str | None:
        return None if self.autov3_full is None else self.autov3_full[:12]

    def civitai(self) -> dict[str, str]:
        """The hashes as Civitai's API names them; absent ones are left out."""
        named = {
            "AutoV1": self.autov1,
            "AutoV2": self.autov2,
            "AutoV3": self.autov3,
            "SHA256": self.sha256,
            "CRC32": self.crc32,
            "BLAKE3": self.blake3,
        }
        return {name: value for name, value in named.items() if value is not None}


# --- hashers: each sees every block in order, on its own thread ------------------------


class _Hasher(Protocol):
    name: str

    def update(self, block: memoryview) -> None: ...


class _HashObject(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


class _Digest:
    """A whole-file digest (SHA-256, BLAKE3): both release the GIL on large buffers."""

    def __init__(self, name: str, digest: _HashObject) -> None:
        self.name = name
        self.hash = digest

    def update(self, block: memoryview) -> None:
        self.hash.update(block)

    def result(self) -> str:
        return self.hash.hexdigest().upper()


class _Crc32:
    name = "crc32"

    def __init__(self) -> None:
        self.value = 0

    def update(self, block: memoryview) -> None:
        self.value = zlib.crc32(block, self.value)


class _AutoV1:
    """Copies out the 64 KiB window; hashing it is cheap enough to leave to `result`."""

    name = "autov1"

    def __init__(self) -> None:
        self.pos = 0
        self.window = bytearray()

    def update(self, block: memoryview) -> None:
        start = max(AUTOV1_OFFSET - self.pos, 0)
        end = min(AUTOV1_OFFSET + AUTOV1_LENGTH - self.pos, len(block))
        if start < end:
            self.window += block[start:end]
        self.pos += len(block)

    def result(self) -> str | None:
        if len(self.window) < AUTOV1_LENGTH:
            return None
        return hashlib.sha256(self.window).hexdigest()[:8].upper()


class _AutoV3:
    """SHA-256 after the safetensors header; the header length comes from the first bytes."""

    name = "autov3"

    def __init__(self) -> None:
        self.pos = 0
        self.prefix = bytearray()  # the first 9 bytes: u64 header length and its first byte
        self.start: int | None = None  # where the hashed part begins; -1: not safetensors
        self.hash = hashlib.sha256()

    def update(self, block: memoryview) -> None:
        if self.start is None:
            self.prefix += block[: 9 - len(self.prefix)]
            if len(self.prefix) == 9:
                header_len = int.from_bytes(self.prefix[:8], "little")
                looks_right = header_len >= 2 and self.prefix[8] == ord("{")
                self.start = 8 + header_len if looks_right else -1
        if self.start is not None and self.start >= 0:
            skip = max(self.start - self.pos, 0)
            if skip < len(block):
                self.hash.update(block[skip:])
        self.pos += len(block)

    def result(self) -> str | None:
        if self.start is None or self.start < 0 or self.pos < self.start:
            return None
        return self.hash.hexdigest().upper()


class _Pieces:
    """BitTorrent v1 piece hashes, so torrent creation needs no second read."""

    name = "pieces"

    def __init__(self, piece_length: int) -> None:
        self.piece_length = piece_length
        self.hash = hashlib.sha1(usedforsecurity=False)
        self.filled = 0
        self.digests: list[bytes] = []

    def update(self, block: memoryview) -> None:
        while block:
            take = min(self.piece_length - self.filled, len(block))
            self.hash.update(block[:take])
            self.filled += take
            block = block[take:]
            if self.filled == self.piece_length:
                self.digests.append(self.hash.digest())
                self.hash = hashlib.sha1(usedforsecurity=False)
                self.filled = 0

    def result(self) -> tuple[bytes, ...]:
        last = [self.hash.digest()] if self.filled else []
        return (*self.digests, *last)


# --- threads ---------------------------------------------------------------------------


class _Worker:
    """One hasher on one thread. After a failure or an abort it keeps draining its queue
    without hashing, so the feeder can never block forever on a full queue."""

    def __init__(self, hasher: _Hasher, halt: threading.Event, depth: int) -> None:
        self.hasher = hasher
        self.halt = halt
        self.queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"civitas-hash-{hasher.name}", daemon=True
        )

    def _run(self) -> None:
        while (block := self.queue.get()) is not None:
            if self.halt.is_set():
                continue
            try:
                self.hasher.update(block)
            except BaseException as exc:  # handed to the feeder, re-raised there
                self.error = exc
                self.halt.set()


def _stop_workers(workers: Sequence[_Worker], halt: threading.Event, *, discard: bool) -> None:
    """Send every thread its end marker and join it; with ``discard``, skip queued blocks.
    Also run by the garbage collector for a hasher dropped without finish or abort."""
    if discard:
        halt.set()
    started = [w for w in workers if w.thread.ident is not None]
    for w in started:
        w.queue.put(None)
    for w in started:
        w.thread.join()


class StreamHasher:
    """Hashes bytes as they arrive (an upload), with the same threads `hash_file` uses.

    Feed it with `update` from a worker thread, or `await aupdate(...)` on the event loop,
    one call at a time and in order; then `finish` for the result, or `abort` to drop it.
    Small chunks are gathered into blocks so the hashers see large buffers (which release
    the GIL). Also a context manager that aborts unless finished.
    """

    def __init__(
        self,
        *,
        piece_length: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
    ) -> None:
        if piece_length is not None and (
            piece_length < MIN_PIECE_LENGTH or piece_length & (piece_length - 1)
        ):
            raise ValueError(f"piece_length must be a power of two >= 16 KiB, not {piece_length}")
        if block_size < 1 or queue_depth < 1:
            raise ValueError("block_size and queue_depth must be positive")
        self._block_size = block_size
        self._piece_length = piece_length
        self._sha256 = _Digest("sha256", hashlib.sha256())
        self._blake3 = _Digest("blake3", blake3.blake3())  # max_threads: no gain on 2 cores
        self._crc32 = _Crc32()
        self._autov1 = _AutoV1()
        self._autov3 = _AutoV3()
        self._pieces = _Pieces(piece_length) if piece_length else None
        hashers: list[_Hasher] = [self._sha256, self._autov3, self._blake3, self._crc32]
        hashers += [self._autov1] if self._pieces is None else [self._pieces, self._autov1]
        self._halt = threading.Event()
        self._workers = [_Worker(h, self._halt, queue_depth) for h in hashers]
        self._pending = bytearray()
        self._size = 0
        self._closed = False
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(
            self, _stop_workers, self._workers, self._halt, discard=True
        )
        try:
            for w in self._workers:
                w.thread.start()
        except BaseException:
            self._shut_down(discard=True)
            raise

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes. Blocks while the hashers are a full queue behind."""
        with self._exclusive():
            try:
                self._feed(data)
            except BaseException:
                self._shut_down(discard=True)
                raise

    async def aupdate(self, data: bytes | bytearray | memoryview) -> None:
        """`update` from the event loop, on a worker thread."""
        await asyncio.to_thread(self.update, data)

    def finish(self) -> FileHashes:
        """Wait for the hashers to drain and return the hashes of everything fed."""
        with self._exclusive():
            try:
                if self._pending:
                    self._dispatch(memoryview(bytes(self._pending)))
                    self._pending.clear()
            finally:
                self._shut_down(discard=self._halt.is_set())
            self._raise_worker_error()
            return self._result()

    async def afinish(self) -> FileHashes:
        """`finish` from the event loop: draining the queues takes a few milliseconds."""
        return await asyncio.to_thread(self.finish)

    def abort(self) -> None:
        """Stop and join the threads without a result (a failed upload). Safe to repeat,
        and safe while an `update` is in flight on another thread: that update fails."""
        self._halt.set()
        with self._lock:
            self._shut_down(discard=True)

    def __enter__(self) -> StreamHasher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    # --- internals ---------------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the lock without waiting for it: two feeders at once would scramble bytes."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("StreamHasher used from two threads at once, or while aborting")
        try:
            if self._closed:
                raise RuntimeError("StreamHasher is already finished or aborted")
            yield
        finally:
            self._lock.release()

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes):  # a mutable buffer could change under the hashers
            data = bytes(data)
        view = memoryview(data)
        size = self._block_size
        if self._pending:
            take = size - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < size:
                return
            self._dispatch(memoryview(bytes(self._pending)))
            self._pending.clear()
        while len(view) >= size:  # whole blocks go out as slices of `data`, uncopied
            self._dispatch(view[:size])
            view = view[size:]
        self._pending += view

    def _dispatch(self, block: memoryview) -> None:
        for w in self._workers:
            if self._halt.is_set():
                self._raise_worker_error()
                raise RuntimeError("StreamHasher was aborted")
            w.queue.put(block)
        self._size += len(block)

    def _shut_down(self, *, discard: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._pending = bytearray()
        _stop_workers(self._workers, self._halt, discard=discard)

    def _raise_worker_error(self) -> None:
        for w in self._workers:
            if w.error is not None:
                raise w.error

    def _result(self) -> FileHashes:
        return FileHashes(
            size=self._size,
            sha256=self._sha256.result(),
            autov1=self._autov1.result(),
            autov3_full=self._autov3.result(),
            blake3=self._blake3.result(),
            crc32=f"{self._crc32.value:08X}",
            pieces=self._pieces.result() if self._pieces else (),
            piece_length=self._piece_length,
        )


def hash_file(
    path: Path,
    *,
    piece_length: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    cancel: threading.Event | None = None,
) -> FileHashes:
    """Hash a file in one read. Blocking: call it from a worker thread (see
    `hash_file_async`). Setting ``cancel`` stops it at the next block with `HashCancelled`."""
    with (
        open(path, "rb", buffering=0) as f,
        StreamHasher(piece_length=piece_length, block_size=block_size) as hasher,
    ):
        if hasattr(os, "posix_fadvise"):  # cold reads: ask for aggressive readahead
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while block := f.read(block_size):
            if cancel is not None and cancel.is_set():
                raise HashCancelled(f"hashing {path} was cancelled")
            hasher.update(block)
        return hasher.finish()


async def hash_file_async(
    path: Path, *, piece_length: int | None = None, block_size: int = DEFAULT_BLOCK_SIZE
) -> FileHashes:
    """`hash_file` off the event loop. If the caller is cancelled, the thread stops at its
    next block instead of hashing gigabytes for nobody."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(
            hash_file, path, piece_length=piece_length, block_size=block_size, cancel=cancel
        )
    finally:
        cancel.set()
