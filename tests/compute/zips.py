"""Crafted zip archives for the training-input tests: honest, bombs and liars.

:func:`raw_zip` writes the archive byte by byte (local headers, data, central directory,
end record), so a test can reuse one compressed payload for many entries and can declare
sizes that are not the truth, as an attacker's zip would.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

DEFLATED = 8
STORED = 0


@dataclass(frozen=True)
class Entry:
    name: str
    payload: bytes  # what is stored in the archive (compressed for DEFLATED)
    crc: int
    size: int  # the uncompressed size this entry declares
    method: int = DEFLATED


def deflated(name: str, data: bytes) -> Entry:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = packer.compress(data) + packer.flush()
    return Entry(name, payload, zlib.crc32(data), len(data))


def zeros(name: str, size: int) -> Entry:
    """``size`` zero bytes, deflated (compressed once, in 1 MiB steps)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    parts, crc, left = [], 0, size
    while left:
        step = block[: min(left, len(block))]
        parts.append(packer.compress(step))
        crc = zlib.crc32(step, crc)
        left -= len(step)
    parts.append(packer.flush())
    return Entry(name, b"".join(parts), crc, size)


def raw_zip(entries: list[Entry]) -> bytes:
    out = bytearray()
    central = bytearray()
    for entry in entries:
        name = entry.name.encode()
        offset = len(out)
        out += struct.pack(
            "<4sHHHHHLLLHH",
            b"PK\x03\x04",
            20,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.payload),
            entry.size,
            len(name),
            0,
        )
        out += name + entry.payload
        central += struct.pack(
            "<4sBBBBHHHHLLLHHHHHLL",
            b"PK\x01\x02",
            20,
            3,
            20,
            0,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.payload),
            entry.size,
            len(name),
            0,
            0,
            0,
            0,
            0o644 << 16,
            offset,
        )
        central += name
    start = len(out)
    out += central
    out += struct.pack(
        "<4sHHHHLLH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), start, 0
    )
    return bytes(out)
