"""A federation message is decoded with bounded work: a hostile peer's page or push made
of millions of tiny maps and lists (a "msgpack bomb", well under the byte caps) is refused
after a few hundred containers, not after building every one of them in memory."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest

from node.errors import BadRequest
from node.p2p.federation import wire


def _bomb(levels: int) -> bytes:
    """Lists of 500 lists ... of 500 empty maps: 1 byte per map on the wire."""
    leaf: list[object] = [{}] * 500
    for _ in range(levels - 1):
        leaf = [leaf] * 500
    return bytes(msgpack.packb({"epoch": "e", "high": 1, "more": False, "records": leaf}))


def _peak_bytes(fn: object, *args: object) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest):
            fn(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_page_of_millions_of_empty_maps_is_refused_with_little_memory() -> None:
    bomb = _bomb(2)  # 250,000 maps in 250 KB (the attack used 13 M maps in 13 MB)
    assert len(bomb) < 300_000
    assert _peak_bytes(wire.decode_page, bomb) < 2 * 1024 * 1024


def test_an_inbox_batch_of_nested_lists_is_refused_with_little_memory() -> None:
    batch = bytes(msgpack.packb([[[{}] * 50] * 50] * 50))  # 125,000 maps in 130 KB
    assert _peak_bytes(wire.decode_batch, batch) < 512 * 1024


def test_honest_messages_still_decode() -> None:
    entries = [wire.PageEntry(i, bytes(32), "visible", b"x" * 100) for i in range(1, 501)]
    page = wire.Page("epoch", 500, entries, True)
    assert wire.decode_page(wire.encode_page(page)) == page
    raws = [b"r" * 10] * wire.MAX_PUSH
    assert wire.decode_batch(wire.encode_batch(raws)) == raws
