"""One-pass hashing: every hash against hashlib/zlib/blake3 computed here, independently,
plus the thread discipline (no leaks on abort, errors reach the caller)."""

from __future__ import annotations

import gc
import hashlib
import json
import random
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from node.catalog import hashing
from node.catalog.hashing import (
    FileHashes,
    HashCancelled,
    StreamHasher,
    hash_file,
    hash_file_async,
)

KIB, MIB = 1 << 10, 1 << 20


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("civitas-hash-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    assert hash_threads() == []


def noise(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def safetensors_bytes(data: bytes) -> bytes:
    """A minimal valid safetensors file by hand: u64 header length, JSON, tensor bytes."""
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data


def write(tmp_path: Path, data: bytes, name: str = "f.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def check_whole_file(h: FileHashes, data: bytes) -> None:
    assert h.size == len(data)
    assert h.sha256 == sha256_hex(data)
    assert h.autov2 == sha256_hex(data)[:10]
    assert h.blake3 == blake3.blake3(data).hexdigest().upper()
    assert h.crc32 == f"{zlib.crc32(data):08X}"


def test_literal_known_answer(tmp_path: Path) -> None:
    h = hash_file(write(tmp_path, b"civitas" * 1000))
    assert h.size == 7000
    assert h.sha256 == "9A3559DE806D6B2E33020D5557B688DFE39ECC66A3D54DEC4C6625430932AC61"
    assert h.crc32 == "D5C9C240"
    assert h.blake3 == "B88FFE8F58DEB40CE1C690EE3444D88B6420BE6A157456309AE1A2A94A4F3102"
    assert h.autov2 == "9A3559DE80"
    assert h.autov1 is None and h.autov3_full is None and h.autov3 is None
    assert h.civitai() == {
        "AutoV2": "9A3559DE80",
        "SHA256": "9A3559DE806D6B2E33020D5557B688DFE39ECC66A3D54DEC4C6625430932AC61",
        "CRC32": "D5C9C240",
        "BLAKE3": "B88FFE8F58DEB40CE1C690EE3444D88B6420BE6A157456309AE1A2A94A4F3102",
    }


def test_safetensors_autov3_is_sha256_after_the_header(tmp_path: Path) -> None:
    tensors = noise(300 * KIB)
    data = safetensors_bytes(tensors)
    h = hash_file(write(tmp_path, data, "m.safetensors"), block_size=4 * KIB)
    check_whole_file(h, data)
    n = int.from_bytes(data[:8], "little")
    assert data[8 + n :] == tensors
    assert h.autov3_full == sha256_hex(tensors)
    assert h.autov3 == sha256_hex(tensors)[:12]
    assert h.civitai()["AutoV3"] == sha256_hex(tensors)[:12]


def test_autov3_of_a_header_only_file_is_the_empty_hash(tmp_path: Path) -> None:
    h = hash_file(write(tmp_path, safetensors_bytes(b"")))
    assert h.autov3_full == sha256_hex(b"")


@pytest.mark.parametrize(
    "data",
    [
        (10**9).to_bytes(8, "little") + b'{"w": {}}',  # header length past the end
        (1).to_bytes(8, "little") + b"{}",  # too short to be a header
        (4).to_bytes(8, "little") + b"PK\x03\x04zip",  # not JSON
        b"\x01\x02\x03",  # shorter than the length field
    ],
)
def test_no_autov3_for_files_that_are_not_safetensors(tmp_path: Path, data: bytes) -> None:
    h = hash_file(write(tmp_path, data))
    assert h.autov3_full is None and h.autov3 is None
    assert "AutoV3" not in h.civitai()
    check_whole_file(h, data)


@pytest.mark.parametrize("size", [0x110000, 0x110000 + 12345, 3 * MIB])
def test_autov1_hashes_64k_at_1mib(tmp_path: Path, size: int) -> None:
    data = noise(size)
    h = hash_file(write(tmp_path, data), block_size=100_000)  # the window spans blocks
    check_whole_file(h, data)
    assert h.autov1 == sha256_hex(data[0x100000:0x110000])[:8]
    assert h.civitai()["AutoV1"] == h.autov1


@pytest.mark.parametrize("size", [1 * MIB, 0x110000 - 1])
def test_no_autov1_without_the_whole_window(tmp_path: Path, size: int) -> None:
    h = hash_file(write(tmp_path, noise(size)))
    assert h.autov1 is None
    assert "AutoV1" not in h.civitai()


def test_empty_file(tmp_path: Path) -> None:
    h = hash_file(write(tmp_path, b""), piece_length=16 * KIB)
    check_whole_file(h, b"")
    assert h.crc32 == "00000000"
    assert h.sha256 == "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
    assert (h.autov1, h.autov3_full, h.pieces, h.piece_length) == (None, None, (), 16 * KIB)


@pytest.mark.parametrize("block_size", [40_000, hashing.DEFAULT_BLOCK_SIZE])
def test_piece_hashes_match_sha1_per_piece(tmp_path: Path, block_size: int) -> None:
    piece = 16 * KIB
    data = noise(5 * piece + 1234)
    h = hash_file(write(tmp_path, data), piece_length=piece, block_size=block_size)
    expected = tuple(
        hashlib.sha1(data[i : i + piece], usedforsecurity=False).digest()
        for i in range(0, len(data), piece)
    )
    assert len(expected) == 6 and h.pieces == expected
    assert all(len(d) == 20 for d in h.pieces)
    assert h.piece_length == piece
    check_whole_file(h, data)


def test_no_pieces_unless_asked(tmp_path: Path) -> None:
    h = hash_file(write(tmp_path, noise(100 * KIB)))
    assert h.pieces == () and h.piece_length is None


@pytest.mark.parametrize("piece_length", [0, 1000, 8 * KIB, 48 * KIB])
def test_piece_length_must_suit_libtorrent(piece_length: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        StreamHasher(piece_length=piece_length)


def odd_chunks(data: bytes) -> Iterator[bytes]:
    """1-byte, 7-byte and 3 MiB chunks, so blocks start and end mid-chunk."""
    pos = 0
    for size in [1] * 3000 + [7] * 3000 + [3 * MIB, 1, 3 * MIB, 7] * 3:
        yield data[pos : pos + size]
        pos += size
    yield data[pos:]


@pytest.mark.parametrize("block_size", [64 * KIB, hashing.DEFAULT_BLOCK_SIZE])
def test_stream_in_odd_chunks_equals_hash_file(tmp_path: Path, block_size: int) -> None:
    data = safetensors_bytes(noise(7 * MIB + 333))
    reference = hash_file(write(tmp_path, data), piece_length=256 * KIB)
    hasher = StreamHasher(piece_length=256 * KIB, block_size=block_size)
    for chunk in odd_chunks(data):
        hasher.update(chunk)
    assert hasher.finish() == reference
    check_whole_file(reference, data)
    assert reference.autov1 is not None and reference.autov3 is not None


async def test_async_feeding_equals_hash_file(tmp_path: Path) -> None:
    data = noise(2 * MIB + 5)
    path = write(tmp_path, data)
    reference = hash_file(path, piece_length=64 * KIB)
    hasher = StreamHasher(piece_length=64 * KIB)
    for i in range(0, len(data), 300 * KIB):
        await hasher.aupdate(bytearray(data[i : i + 300 * KIB]))  # mutable buffers are copied
    assert await hasher.afinish() == reference
    assert await hash_file_async(path, piece_length=64 * KIB) == reference


def test_abort_joins_every_thread() -> None:
    hasher = StreamHasher(piece_length=16 * KIB, block_size=64 * KIB)
    assert len(hash_threads()) == 6
    hasher.update(noise(1 * MIB))
    hasher.abort()
    assert hash_threads() == []
    hasher.abort()  # repeatable
    with pytest.raises(RuntimeError, match="finished or aborted"):
        hasher.update(b"more")
    with pytest.raises(RuntimeError, match="finished or aborted"):
        hasher.finish()


def test_context_manager_aborts_on_error() -> None:
    with pytest.raises(KeyError), StreamHasher() as hasher:
        hasher.update(b"partial upload")
        raise KeyError("client went away")
    assert hash_threads() == []


def test_abort_from_another_thread_stops_an_update_in_flight() -> None:
    hasher = StreamHasher(block_size=64 * KIB, queue_depth=1)
    outcome: list[BaseException | None] = []

    def feed() -> None:
        try:
            hasher.update(bytes(256 * MIB))
            outcome.append(None)
        except RuntimeError as exc:
            outcome.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.05)
    hasher.abort()
    feeder.join(timeout=10)
    assert not feeder.is_alive()
    assert isinstance(outcome[0], RuntimeError)
    assert hash_threads() == []


def test_a_dropped_hasher_releases_its_threads() -> None:
    hasher = StreamHasher()
    hasher.update(b"abandoned")
    threads = hash_threads()
    del hasher
    gc.collect()
    for t in threads:
        t.join(timeout=5)
    assert hash_threads() == []


def test_a_hasher_error_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, block: memoryview) -> None:
        raise ValueError("crc unit on fire")

    monkeypatch.setattr(hashing._Crc32, "update", broken)
    with pytest.raises(ValueError, match="crc unit on fire"):
        hash_file(write(tmp_path, noise(3 * MIB)), block_size=64 * KIB)
    assert hash_threads() == []

    hasher = StreamHasher(block_size=64 * KIB)
    with pytest.raises(ValueError, match="crc unit on fire"):  # at a later update or finish
        for _ in range(100):
            hasher.update(noise(64 * KIB))
        hasher.finish()
    assert hash_threads() == []


def test_read_errors_leave_no_threads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "missing.safetensors")
    with pytest.raises(IsADirectoryError):
        hash_file(tmp_path)


def test_cancel_stops_at_the_next_block(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(HashCancelled):
        hash_file(write(tmp_path, noise(1 * MIB)), block_size=64 * KIB, cancel=cancel)
