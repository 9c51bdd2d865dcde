"""Signed records: canonical msgpack, ids, signatures and verification.

Pure functions over bytes (no I/O), pinned by the known-answer vectors in
``tests/vectors/``. Verification runs in one fixed order: size limit, bounded canonical
decoding, envelope shape and version, did, depth and clock (``created`` from 2024-01-01
up to 10 minutes ahead), then the signature. Body rules per record type come after, in
:mod:`node.p2p.projections`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from node.errors import (
    RecordBeforeProtocol,
    RecordFromFuture,
    RecordMalformed,
    RecordNotCanonical,
    RecordTooDeep,
    RecordTooLarge,
    RecordUnknownVersion,
)
from node.p2p.keys import SigningKey, public_key_from_did, verify_signature

RECORD_VERSION = 1
ID_DOMAIN = b"civitas/record/v1\0"
MAX_RECORD_BYTES = 64 * 1024
MAX_BODY_DEPTH = 8
MAX_STRING_BYTES = 32 * 1024
MAX_LIST_ITEMS = 1024
MAX_MAP_KEYS = 256
MAX_FUTURE_MS = 10 * 60 * 1000
# No record is older than the protocol: 2024-01-01T00:00:00Z. A signer's `created` is
# refused below it, so nobody can back-date a claim to before every genuine one.
EARLIEST_CREATED_MS = 1_704_067_200_000
MAX_TYPE_LENGTH = 64
SIGNATURE_BYTES = 64
ENVELOPE_FIELDS = frozenset({"v", "type", "author", "created", "body", "sig"})


def _utf8(text: str, path: str) -> bytes:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordMalformed(
            f"{path}: strings must be valid Unicode (no lone surrogates)"
        ) from None
    if len(encoded) > MAX_STRING_BYTES:
        raise RecordMalformed(f"{path}: strings are limited to {MAX_STRING_BYTES} bytes")
    return encoded


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit``, recursing at most ``limit + 1`` levels."""
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    return limit <= 0 or any(exceeds_depth(item, limit - 1) for item in items)


def _canonical_form(value: Any, path: str) -> Any:
    """Return ``value`` with every map's keys sorted by their UTF-8 bytes, within limits."""
    if isinstance(value, Mapping):
        if len(value) > MAX_MAP_KEYS:
            raise RecordMalformed(f"{path}: maps are limited to {MAX_MAP_KEYS} keys")
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordMalformed(f"{path}: map keys must be strings, not {type(key).__name__}")
            items.append((_utf8(key, path), key, _canonical_form(item, f"{path}.{key}")))
        items.sort(key=lambda entry: entry[0])
        return {key: item for _, key, item in items}
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            raise RecordMalformed(f"{path}: lists are limited to {MAX_LIST_ITEMS} items")
        return [_canonical_form(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        _utf8(value, path)
        return value
    if value is None or isinstance(value, bool | int | bytes):
        return value
    raise RecordMalformed(
        f"{path}: {type(value).__name__} is not allowed in a record "
        "(no floats: write decimals as strings)"
    )


def canonical_encode(value: Any) -> bytes:
    """Canonical msgpack: sorted str keys, shortest encodings, no floats or extensions."""
    try:
        return msgpack.packb(_canonical_form(value, "$"), use_bin_type=True)
    except (OverflowError, ValueError) as exc:
        raise RecordMalformed(f"cannot encode record: {exc}") from None


def record_id_of(unsigned_envelope: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(ID_DOMAIN + canonical_encode(unsigned_envelope)).digest()


@dataclass(frozen=True)
class Record:
    """A verified (or freshly signed) record and its canonical bytes."""

    id: bytes
    type: str
    author: str
    created: int
    body: dict[str, Any]
    sig: bytes
    raw: bytes

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    def envelope(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "type": self.type,
            "author": self.author,
            "created": self.created,
            "body": self.body,
            "sig": self.sig,
        }


def now_ms() -> int:
    return int(time.time() * 1000)


def sign_record(
    key: SigningKey, record_type: str, body: Mapping[str, Any], created: int | None = None
) -> Record:
    """Build and sign a record; the result passes :func:`verify_record`."""
    if exceeds_depth(body, MAX_BODY_DEPTH):
        raise RecordTooDeep(f"body nests deeper than {MAX_BODY_DEPTH} levels")
    unsigned = {
        "v": RECORD_VERSION,
        "type": record_type,
        "author": key.did,
        "created": now_ms() if created is None else created,
        "body": _canonical_form(body, "$.body"),
    }
    _check_envelope(unsigned)
    record_id = record_id_of(unsigned)
    sig = key.sign(record_id)
    raw = canonical_encode({**unsigned, "sig": sig})
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"record is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}")
    return Record(
        id=record_id,
        type=unsigned["type"],
        author=unsigned["author"],
        created=unsigned["created"],
        body=unsigned["body"],
        sig=sig,
        raw=raw,
    )


def _decode_bounded(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=MAX_STRING_BYTES,
            max_bin_len=MAX_RECORD_BYTES,
            max_array_len=MAX_LIST_ITEMS,
            max_map_len=MAX_MAP_KEYS,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise RecordMalformed("trailing bytes after the record") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RecordMalformed(f"not a well-formed bounded msgpack record: {exc}") from None


def _check_no_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise RecordNotCanonical(f"{path}: floats are not canonical; use a decimal string")
    if isinstance(value, msgpack.ExtType):
        raise RecordNotCanonical(f"{path}: msgpack extension types are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_no_floats(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_no_floats(item, f"{path}[{i}]")


def _check_envelope(envelope: Mapping[str, Any]) -> None:
    version = envelope.get("v")
    if version != RECORD_VERSION or isinstance(version, bool):
        raise RecordUnknownVersion(
            f"record version {version!r} is not supported (this node speaks v{RECORD_VERSION})"
        )
    record_type = envelope.get("type")
    if (
        not isinstance(record_type, str)
        or not 0 < len(record_type) <= MAX_TYPE_LENGTH
        or not all(c.islower() or c.isdigit() or c == "_" for c in record_type)
        or not record_type.isascii()
    ):
        raise RecordMalformed("type must be 1-64 characters of a-z, 0-9 and _")
    public_key_from_did(envelope.get("author"))  # type: ignore[arg-type]
    created = envelope.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise RecordMalformed("created must be a non-negative integer (unix milliseconds)")
    body = envelope.get("body")
    if not isinstance(body, dict):
        raise RecordMalformed("body must be a map")
    if exceeds_depth(body, MAX_BODY_DEPTH):
        raise RecordTooDeep(f"body nests deeper than {MAX_BODY_DEPTH} levels")


def verify_record(raw: bytes, now: int | None = None) -> Record:
    """Verify a record's bytes and return it; raise a distinct RecordError per broken rule."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise RecordMalformed("a record is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"record is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}")
    envelope = _decode_bounded(raw)
    if not isinstance(envelope, dict):
        raise RecordMalformed("a record is a msgpack map")
    if exceeds_depth(envelope, MAX_BODY_DEPTH + 1):  # before anything recurses over it
        raise RecordTooDeep(f"body nests deeper than {MAX_BODY_DEPTH} levels")
    _check_no_floats(envelope, "$")
    if canonical_encode(envelope) != raw:
        raise RecordNotCanonical(
            "record bytes are not canonical msgpack (sorted keys, shortest encodings)"
        )
    if "v" in envelope and envelope["v"] != RECORD_VERSION:
        _check_envelope(envelope)  # raises RecordUnknownVersion first
    if set(envelope) != ENVELOPE_FIELDS:
        missing = sorted(ENVELOPE_FIELDS - set(envelope))
        extra = sorted(set(envelope) - ENVELOPE_FIELDS)
        raise RecordMalformed(f"envelope fields wrong (missing {missing}, unexpected {extra})")
    _check_envelope(envelope)
    limit = (now_ms() if now is None else now) + MAX_FUTURE_MS
    if envelope["created"] > limit:
        raise RecordFromFuture("created is more than 10 minutes in the future")
    if envelope["created"] < EARLIEST_CREATED_MS:
        raise RecordBeforeProtocol(
            f"created {envelope['created']} is before the protocol existed "
            f"({EARLIEST_CREATED_MS}, 2024-01-01T00:00:00Z)"
        )
    sig = envelope["sig"]
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise RecordMalformed("sig must be 64 bytes")
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    record_id = record_id_of(unsigned)
    verify_signature(envelope["author"], sig, record_id)
    return Record(
        id=record_id,
        type=envelope["type"],
        author=envelope["author"],
        created=envelope["created"],
        body=envelope["body"],
        sig=sig,
        raw=raw,
    )


def decode_stored(raw: bytes, record_id: bytes) -> Record:
    """A record from this node's own log, by its known id.

    Every stored record passed :func:`verify_record` when it was accepted, so replays and
    projections decode the bytes without paying for the signature check again.
    """
    envelope = _decode_bounded(raw)
    return Record(
        id=record_id,
        type=envelope["type"],
        author=envelope["author"],
        created=envelope["created"],
        body=envelope["body"],
        sig=envelope["sig"],
        raw=raw,
    )
