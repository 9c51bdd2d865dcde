"""What crosses the wire between nodes: record pages and inbox batches, in msgpack.

Each message is decoded by a fresh, bounded unpacker, so a hostile peer can make us do
little work before it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from node.errors import BadRequest
from node.p2p.records import MAX_RECORD_BYTES

MAX_PAGE = 500
MAX_PUSH = 50
MSGPACK = "application/msgpack"


@dataclass(frozen=True)
class PageEntry:
    seq: int
    id: bytes
    state: str
    raw: bytes | None  # None unless visible


@dataclass(frozen=True)
class Page:
    epoch: str
    high: int
    entries: list[PageEntry]
    more: bool


def encode_page(page: Page) -> bytes:
    return bytes(
        msgpack.packb(
            {
                "epoch": page.epoch,
                "high": page.high,
                "more": page.more,
                "records": [
                    {"seq": e.seq, "id": e.id, "state": e.state, "raw": e.raw} for e in page.entries
                ],
            },
            use_bin_type=True,
        )
    )


class _TooManyContainers(ValueError):
    pass


def _unpack(data: bytes, max_items: int, max_containers: int) -> Any:
    """Decode one message; past ``max_containers`` maps and lists in all it is refused as
    it is being decoded (the per-list and per-map bounds alone let a few MB of tiny nested
    containers become millions of Python objects)."""
    built = 0

    def count(value: Any) -> Any:
        nonlocal built
        built += 1
        if built > max_containers:
            raise _TooManyContainers(f"more than {max_containers} maps and lists")
        return value

    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_RECORD_BYTES,
            max_str_len=1024,
            max_array_len=max_items,
            max_map_len=16,
            max_ext_len=0,
            object_hook=count,
            list_hook=count,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadRequest(f"not a well-formed federation message: {exc}") from None


def decode_page(data: bytes) -> Page:
    doc = _unpack(data, MAX_PAGE, MAX_PAGE + 2)  # the page, its list, an entry each
    try:
        entries = [
            PageEntry(
                int(r["seq"]),
                bytes(r["id"]),
                str(r["state"]),
                bytes(r["raw"]) if r.get("raw") is not None else None,
            )
            for r in doc["records"]
        ]
        return Page(str(doc["epoch"]), int(doc["high"]), entries, bool(doc["more"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"not a record page: {exc}") from None


def encode_batch(raws: list[bytes]) -> bytes:
    return bytes(msgpack.packb(list(raws), use_bin_type=True))


def decode_batch(data: bytes) -> list[bytes]:
    batch = _unpack(data, MAX_PUSH, 1)
    if not isinstance(batch, list) or not all(isinstance(r, bytes) for r in batch):
        raise BadRequest(f"an inbox batch is a msgpack list of at most {MAX_PUSH} records")
    return batch
