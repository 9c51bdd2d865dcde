"""Signed records: known answers from tests/vectors/records.json, and every refusal.

Each rejection test builds bytes that are *properly signed* over what they decode to, so
the only broken rule is the one under test: a record must be refused for that rule, with
that rule's exception, not by luck of a failing signature.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.errors import (
    BadSignature,
    MalformedDid,
    RecordBeforeProtocol,
    RecordError,
    RecordFromFuture,
    RecordMalformed,
    RecordNotCanonical,
    RecordTooDeep,
    RecordTooLarge,
    RecordUnknownVersion,
)
from node.p2p import records
from node.p2p.keys import SigningKey, b58encode, verify_signature
from node.p2p.records import canonical_encode, sign_record, verify_record

VECTOR_FILE = Path(__file__).resolve().parents[1] / "vectors" / "records.json"
VECTOR_DATA = json.loads(VECTOR_FILE.read_text(encoding="utf-8"))
VECTORS = VECTOR_DATA["vectors"]

DOMAIN = b"civitas/record/v1\0"
NOW = 1_735_689_600_000
TEN_MINUTES = 10 * 60 * 1000
KEY = SigningKey.from_seed(bytes(range(32)))
OTHER = SigningKey.from_seed(hashlib.sha256(b"civitas test key 2").digest())


# --- helpers ---------------------------------------------------------------------------


def from_json(value: Any) -> Any:
    """Decode a vector body: {"$bin": hex} is binary."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def sorted_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted_maps(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-8"))}
    if isinstance(value, list):
        return [sorted_maps(item) for item in value]
    return value


def packb(value: Any) -> bytes:
    """Canonical bytes the test's own way: sort every map, then plain msgpack."""
    return msgpack.packb(sorted_maps(value), use_bin_type=True)


def unsigned(
    body: Any = None,
    *,
    key: SigningKey = KEY,
    record_type: str = "note",
    created: Any = NOW,
    version: Any = 1,
) -> dict[str, Any]:
    return {
        "v": version,
        "type": record_type,
        "author": key.did,
        "created": created,
        "body": {"text": "hello"} if body is None else body,
    }


def id_of(envelope: dict[str, Any]) -> bytes:
    return hashlib.sha256(DOMAIN + packb(envelope)).digest()


def signed(envelope: dict[str, Any], key: SigningKey = KEY) -> dict[str, Any]:
    """``envelope`` plus a valid signature by ``key``, whatever the envelope holds."""
    return {**envelope, "sig": key.sign(id_of(envelope))}


def signed_raw(envelope: dict[str, Any], key: SigningKey = KEY) -> bytes:
    return packb(signed(envelope, key))


def hand_map(pairs: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map written pair by pair: any order, duplicates allowed."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(packb(k) + v for k, v in pairs)


def nested_body(depth: int, *, use_lists: bool = False) -> dict[str, Any]:
    """A body of exactly ``depth`` (the body map itself counts as 1)."""
    inner: Any = 0
    for level in range(depth - 1):
        inner = [inner] if use_lists and level % 2 else {"x": inner}
    return {"x": inner}


def replace_once(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) == 1, f"{old.hex()} must occur exactly once"
    return raw.replace(old, new)


def with_body_bytes(envelope: dict[str, Any], body: bytes) -> bytes:
    """``envelope`` encoded canonically, except its body, given here as raw msgpack."""
    pairs = [(k, packb(v)) for k, v in sorted_maps(envelope).items()]
    return hand_map([(k, body if k == "body" else v) for k, v in pairs])


# --- known answers ---------------------------------------------------------------------


def test_vector_file_pins_the_domain_and_covers_the_cases() -> None:
    assert bytes.fromhex(VECTOR_DATA["domain_hex"]) == DOMAIN == records.ID_DOMAIN
    names = {v["name"] for v in VECTORS}
    assert {"profile", "canonical_edge_cases", "unknown_type"} <= names
    edge = next(v for v in VECTORS if v["name"] == "canonical_edge_cases")
    # The JSON keeps the body unsorted on purpose, so signing must sort.
    assert list(edge["body"]) != sorted(edge["body"], key=lambda k: k.encode("utf-8"))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_signing_reproduces_the_vector(vector: dict[str, Any]) -> None:
    key = SigningKey.from_seed(bytes.fromhex(vector["seed"]))
    assert key.did == vector["did"]
    record = sign_record(key, vector["type"], from_json(vector["body"]), vector["created"])
    assert record.id.hex() == record.id_hex == vector["id"]
    assert record.sig.hex() == vector["sig"]
    assert record.raw.hex() == vector["raw"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_id_is_the_hash_of_the_unsigned_envelope(vector: dict[str, Any]) -> None:
    envelope = {
        "v": 1,
        "type": vector["type"],
        "author": vector["did"],
        "created": vector["created"],
        "body": from_json(vector["body"]),
    }
    expected_unsigned = bytes.fromhex(vector["unsigned"])
    assert packb(envelope) == expected_unsigned
    assert canonical_encode(envelope) == expected_unsigned
    assert hashlib.sha256(DOMAIN + expected_unsigned).hexdigest() == vector["id"]
    assert records.record_id_of(envelope).hex() == vector["id"]
    # sig = Ed25519(author, id), checked with the public key alone
    public = SigningKey.from_seed(bytes.fromhex(vector["seed"])).public_bytes
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(vector["sig"]), bytes.fromhex(vector["id"])
    )
    # raw is the same map with "sig" added: it sorts last but for "type" and "v"
    raw = bytes.fromhex(vector["raw"])
    assert expected_unsigned[0] == 0x85 and raw[0] == 0x86
    assert raw == packb({**envelope, "sig": bytes.fromhex(vector["sig"])})


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_verifies(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["raw"])
    if vector["created"] < records.EARLIEST_CREATED_MS:
        # Pinned for its bytes (created 0); the acceptance rules refuse it as back-dated.
        with pytest.raises(RecordBeforeProtocol):
            verify_record(raw, now=vector["created"])
        verify_signature(vector["did"], bytes.fromhex(vector["sig"]), bytes.fromhex(vector["id"]))
        return
    record = verify_record(raw, now=vector["created"])
    assert record.id.hex() == vector["id"]
    assert record.author == vector["did"]
    assert record.type == vector["type"]
    assert record.created == vector["created"]
    assert record.body == from_json(vector["body"])
    assert record.sig.hex() == vector["sig"]
    assert record.raw == raw
    assert canonical_encode(record.envelope()) == raw


def test_edge_case_vector_bytes_by_hand() -> None:
    """Shortest encodings and UTF-8 key order, read straight off the pinned bytes."""
    edge = next(v for v in VECTORS if v["name"] == "canonical_edge_cases")
    data = bytes.fromhex(edge["unsigned"])
    ints = {
        127: "7f", 128: "cc80", 255: "ccff", 256: "cd0100", 65535: "cdffff",
        65536: "ce00010000", 2**32: "cf0000000100000000", -1: "ff", -32: "e0",
        -33: "d0df", -129: "d1ff7f", -32769: "d2ffff7fff",
        -(2**31) - 1: "d3ffffffff7fffffff",
    }  # fmt: skip
    ints_hex = packb(from_json(edge["body"])["ints"]).hex()
    for value, encoding in ints.items():
        assert encoding in ints_hex, value
    assert bytes.fromhex("a161a3372e35") in data  # "a": "7.5", a decimal string
    ref = from_json(edge["body"])["ref"]
    assert b"\xa3ref\xc4\x20" + ref in data  # a 32-byte binary reference
    # body keys sorted by UTF-8 bytes: "B" < "a" < "aa" < ... < "é"
    positions = [data.index(k) for k in (b"\xa1B", b"\xa1a\xa3", b"\xa2aa", b"\xa2\xc3\xa9")]
    assert positions == sorted(positions)


def test_unknown_type_still_verifies() -> None:
    record = sign_record(OTHER, "future_thing", {"whatever": {"new": [1, b"\x00"]}}, NOW)
    assert verify_record(record.raw, now=NOW).type == "future_thing"


# --- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_flipped_signature_byte_is_refused(position: int) -> None:
    envelope = signed(unsigned())
    sig = bytearray(envelope["sig"])
    sig[position] ^= 0x01
    with pytest.raises(BadSignature):
        verify_record(packb({**envelope, "sig": bytes(sig)}), now=NOW)


def test_record_signed_by_another_key_claiming_the_author_is_refused() -> None:
    envelope = unsigned()  # author is KEY
    with pytest.raises(BadSignature):
        verify_record(signed_raw(envelope, key=OTHER), now=NOW)


def test_altered_body_under_the_original_signature_is_refused() -> None:
    envelope = signed(unsigned({"text": "hello"}))
    with pytest.raises(BadSignature):
        verify_record(packb({**envelope, "body": {"text": "hellO"}}), now=NOW)


def test_signature_of_another_record_is_refused() -> None:
    first = signed(unsigned({"text": "one"}))
    second = signed(unsigned({"text": "two"}))
    with pytest.raises(BadSignature):
        verify_record(packb({**first, "sig": second["sig"]}), now=NOW)
    with pytest.raises(BadSignature):
        verify_record(packb({**first, "sig": bytes(64)}), now=NOW)


def test_malleated_signature_is_refused() -> None:
    """S + L verifies in a lax Ed25519; it must not here (one record, one signature)."""
    order = 2**252 + 27742317777372353535851937790883648493
    envelope = signed(unsigned())
    s = int.from_bytes(envelope["sig"][32:], "little")
    malleated = envelope["sig"][:32] + (s + order).to_bytes(32, "little")
    with pytest.raises(BadSignature):
        verify_record(packb({**envelope, "sig": malleated}), now=NOW)


@pytest.mark.parametrize("sig", [b"", bytes(63), bytes(65), "not bytes", None, 7])
def test_signature_of_wrong_shape_is_malformed(sig: Any) -> None:
    envelope = signed(unsigned())
    with pytest.raises(RecordMalformed):
        verify_record(packb({**envelope, "sig": sig}), now=NOW)


# --- canonical form --------------------------------------------------------------------


def test_unsorted_envelope_keys_are_not_canonical() -> None:
    envelope = signed(unsigned())
    reordered = dict(reversed(list(sorted_maps(envelope).items())))
    raw = msgpack.packb(reordered, use_bin_type=True)
    assert msgpack.unpackb(raw) == envelope  # same content, valid signature
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)


@pytest.mark.parametrize(
    "keys",
    [
        ["b", "a"],  # plainly unsorted
        ["b", "aa"],  # length-first (RFC 7049 canonical CBOR) order
        ["é", "z"],  # locale collation (é next to e)
        ["\U0001d11e", "\ufffd"],  # UTF-16 order (JavaScript's default sort)
        ["a", "B"],  # case-insensitive order
    ],
)
def test_body_keys_sorted_other_than_by_utf8_bytes_are_not_canonical(keys: list[str]) -> None:
    body = {key: i for i, key in enumerate(keys)}
    envelope = signed(unsigned({"nested": body}))
    raw = with_body_bytes(envelope, msgpack.packb({"nested": body}))
    assert list(msgpack.unpackb(raw)["body"]["nested"]) == keys
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)
    canonical = signed_raw(unsigned({"nested": body}))
    verify_record(canonical, now=NOW)


@pytest.mark.parametrize(
    ("canonical", "longer"),
    [
        (b"\xa1q\x05", b"\xa1q\xcc\x05"),  # 5 as uint8
        (b"\xa1q\x05", b"\xa1q\xcd\x00\x05"),  # 5 as uint16
        (b"\xa1q\x05", b"\xa1q\xd0\x05"),  # 5 as int8
        (b"\xa1q\x05", b"\xa1q\xcf" + struct.pack(">Q", 5)),  # 5 as uint64
        (b"\xa1m\xff", b"\xa1m\xd0\xff"),  # -1 as int8
        (b"\xa1m\xff", b"\xa1m\xd3" + b"\xff" * 8),  # -1 as int64
        (b"\xa1w\xcc\xc8", b"\xa1w\xd1\x00\xc8"),  # 200 as int16
        (b"\xa1q\x05", b"\xd9\x01q\x05"),  # key "q" as str8
        (b"\xa1s\xa2hi", b"\xa1s\xda\x00\x02hi"),  # "hi" as str16
        (b"\xa1b\xc4\x01\x00", b"\xa1b\xc5\x00\x01\x00"),  # bin8 as bin16
        (b"\xa1l\x91\x01", b"\xa1l\xdc\x00\x01\x01"),  # fixarray as array16
        (b"\xa1o\x81", b"\xa1o\xde\x00\x01"),  # fixmap as map16
    ],
)
def test_non_shortest_encodings_are_not_canonical(canonical: bytes, longer: bytes) -> None:
    body = {"q": 5, "m": -1, "w": 200, "s": "hi", "b": b"\x00", "l": [1], "o": {"k": 1}}
    raw = signed_raw(unsigned(body))
    verify_record(raw, now=NOW)
    with pytest.raises(RecordNotCanonical):
        verify_record(replace_once(raw, canonical, longer), now=NOW)


FLOAT_ENVELOPES = {
    "body": unsigned({"cfg": 7.5}),
    "nested": unsigned({"a": {"b": {"c": 0.8}}}),
    "list": unsigned({"weights": ["0.8", 0.5]}),
    "integral": unsigned({"steps": 30.0}),
    "created": unsigned(created=float(NOW)),
}


@pytest.mark.parametrize("single", [False, True], ids=["float64", "float32"])
@pytest.mark.parametrize("envelope", FLOAT_ENVELOPES.values(), ids=FLOAT_ENVELOPES.keys())
def test_a_float_anywhere_is_not_canonical(envelope: dict[str, Any], single: bool) -> None:
    def encode(value: Any) -> bytes:
        return msgpack.packb(sorted_maps(value), use_bin_type=True, use_single_float=single)

    raw = encode({**envelope, "sig": KEY.sign(hashlib.sha256(DOMAIN + encode(envelope)).digest())})
    assert (b"\xca" if single else b"\xcb") in raw
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)


def test_duplicate_envelope_keys_are_not_canonical() -> None:
    envelope = signed(unsigned())
    pairs = [(k, packb(v)) for k, v in sorted_maps(envelope).items()]
    created = next(p for p in pairs if p[0] == "created")
    # the same key twice with the same value: the decoded map is exactly the signed one
    raw = hand_map([*pairs[:3], created, *pairs[3:]])
    assert msgpack.unpackb(raw) == envelope
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)


def test_duplicate_body_keys_are_not_canonical() -> None:
    envelope = signed(unsigned({"a": 1, "b": 2}))
    raw = with_body_bytes(envelope, hand_map([("a", b"\x01"), ("a", b"\x01"), ("b", b"\x02")]))
    assert msgpack.unpackb(raw) == envelope
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)


def test_duplicate_keys_with_different_values_are_not_canonical() -> None:
    envelope = signed(unsigned({"a": 2}))  # what the decoder keeps: the last value
    raw = with_body_bytes(envelope, hand_map([("a", b"\x01"), ("a", b"\x02")]))
    with pytest.raises(RecordNotCanonical):
        verify_record(raw, now=NOW)


@pytest.mark.parametrize("ext", [msgpack.ExtType(1, b"x"), msgpack.ExtType(5, b"")])
def test_extension_types_are_refused(ext: msgpack.ExtType) -> None:
    envelope = unsigned({"odd": ext})
    raw = packb({**envelope, "sig": KEY.sign(id_of(envelope))})
    # the bounded decoder refuses extension payloads; an empty one decodes and is not canonical
    with pytest.raises((RecordMalformed, RecordNotCanonical)):
        verify_record(raw, now=NOW)


@pytest.mark.parametrize("key", [b"bytes-key", 7, None])
def test_non_string_map_keys_are_malformed(key: Any) -> None:
    raw = with_body_bytes(signed(unsigned()), msgpack.packb({key: 1}, use_bin_type=True))
    with pytest.raises(RecordMalformed):
        verify_record(raw, now=NOW)
    with pytest.raises(RecordMalformed):
        sign_record(KEY, "note", {key: 1}, NOW)


def test_invalid_utf8_string_is_malformed() -> None:
    raw = replace_once(signed_raw(unsigned({"t": "ab"})), b"\xa1t\xa2ab", b"\xa1t\xa2\xff\xfe")
    with pytest.raises(RecordMalformed):
        verify_record(raw, now=NOW)


# --- envelope shape and version --------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 255, "1", True])
def test_unknown_version_properly_signed_is_refused(version: Any) -> None:
    with pytest.raises(RecordUnknownVersion):
        verify_record(signed_raw(unsigned(version=version)), now=NOW)


def test_unknown_version_wins_over_unknown_fields() -> None:
    """A v2 record may have other fields: it is 'unknown version', not 'malformed'."""
    envelope = {**unsigned(version=2), "parents": [bytes(32)]}
    del envelope["created"]
    with pytest.raises(RecordUnknownVersion):
        verify_record(signed_raw(envelope), now=NOW)


@pytest.mark.parametrize("field", ["v", "type", "author", "created", "body"])
def test_missing_envelope_field_is_malformed(field: str) -> None:
    envelope = unsigned()
    del envelope[field]
    with pytest.raises(RecordMalformed):
        verify_record(signed_raw(envelope), now=NOW)


def test_missing_signature_is_malformed() -> None:
    with pytest.raises(RecordMalformed):
        verify_record(packb(unsigned()), now=NOW)


@pytest.mark.parametrize("extra", ["id", "x", "sig2", ""])
def test_extra_envelope_field_is_malformed(extra: str) -> None:
    envelope = {**unsigned(), extra: 1}
    with pytest.raises(RecordMalformed):
        verify_record(signed_raw(envelope), now=NOW)


@pytest.mark.parametrize(
    "record_type", ["", "Profile", "model-version", "a" * 65, "é", "tab\t", 5, None, b"note"]
)
def test_bad_type_is_malformed(record_type: Any) -> None:
    with pytest.raises(RecordMalformed):
        verify_record(signed_raw(unsigned(record_type=record_type)), now=NOW)


def test_type_of_64_characters_is_accepted() -> None:
    verify_record(signed_raw(unsigned(record_type="a_9" + "z" * 61)), now=NOW)


@pytest.mark.parametrize("created", [-1, "1735689600000", True, None, b"\x01"])
def test_bad_created_is_malformed(created: Any) -> None:
    with pytest.raises(RecordMalformed):
        verify_record(signed_raw(unsigned(created=created)), now=NOW)


def test_created_is_bounded_below_by_the_protocols_start() -> None:
    earliest = records.EARLIEST_CREATED_MS
    assert earliest == 1_704_067_200_000  # 2024-01-01T00:00:00Z
    assert verify_record(signed_raw(unsigned(created=earliest)), now=NOW).created == earliest
    for created in (earliest - 1, 0, 1_000):
        with pytest.raises(RecordBeforeProtocol) as refused:
            verify_record(signed_raw(unsigned(created=created)), now=NOW)
        assert refused.value.code == "record_before_protocol"


@pytest.mark.parametrize("body", [[], "text", None, 0, b"\x00"])
def test_body_that_is_not_a_map_is_malformed(body: Any) -> None:
    envelope = unsigned()
    envelope["body"] = body
    with pytest.raises(RecordMalformed):
        verify_record(signed_raw(envelope), now=NOW)


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb([1, 2, 3]),
        msgpack.packb("a record"),
        msgpack.packb(None),
        msgpack.packb(5),
        b"",
        b"\xc1",  # never used in msgpack
    ],
)
def test_non_map_record_is_malformed(raw: bytes) -> None:
    with pytest.raises(RecordMalformed):
        verify_record(raw, now=NOW)


def test_record_that_is_not_bytes_is_malformed() -> None:
    raw = signed_raw(unsigned())
    with pytest.raises(RecordMalformed):
        verify_record(raw.hex(), now=NOW)  # type: ignore[arg-type]
    assert verify_record(bytearray(raw), now=NOW).raw == raw


@pytest.mark.parametrize("tail", [b"\x00", b"\xc0", b"\x90"])
def test_trailing_bytes_are_malformed(tail: bytes) -> None:
    raw = signed_raw(unsigned())
    with pytest.raises(RecordMalformed):
        verify_record(raw + tail, now=NOW)
    with pytest.raises(RecordMalformed):
        verify_record(raw + raw, now=NOW)


def test_truncated_record_is_malformed() -> None:
    raw = signed_raw(unsigned())
    for cut in (1, 10, len(raw) - 1):
        with pytest.raises(RecordMalformed):
            verify_record(raw[:cut], now=NOW)


# --- did:key authors -------------------------------------------------------------------

_PUBLIC = KEY.public_bytes
BAD_DIDS = {
    "did:web prefix": "did:web:example.com",
    "base16 multibase": "did:key:f" + (b"\xed\x01" + _PUBLIC).hex(),
    "upper-case scheme": KEY.did.replace("did:key:", "DID:KEY:"),
    "no multibase": "did:key:" + b58encode(b"\xed\x01" + _PUBLIC),
    "bad base58 0": KEY.did[:20] + "0" + KEY.did[21:],
    "bad base58 O": KEY.did[:20] + "O" + KEY.did[21:],
    "bad base58 I": KEY.did[:20] + "I" + KEY.did[21:],
    "bad base58 l": KEY.did[:20] + "l" + KEY.did[21:],
    "x25519 multicodec": "did:key:z" + b58encode(b"\xec\x01" + _PUBLIC),
    "secp256k1 multicodec": "did:key:z" + b58encode(b"\xe7\x01" + _PUBLIC[:1] + _PUBLIC),
    "no multicodec": "did:key:z" + b58encode(_PUBLIC),
    "31-byte key": "did:key:z" + b58encode(b"\xed\x01" + _PUBLIC[:31]),
    "33-byte key": "did:key:z" + b58encode(b"\xed\x01" + _PUBLIC + b"\x00"),
    "empty key": "did:key:z",
    "leading zero byte": "did:key:z1" + KEY.did[len("did:key:z") :],
    "too long": KEY.did + "1" * 10,
}


@pytest.mark.parametrize("did", BAD_DIDS.values(), ids=BAD_DIDS.keys())
def test_malformed_author_did_is_refused(did: str) -> None:
    envelope = {**unsigned(), "author": did}
    with pytest.raises(MalformedDid):
        verify_record(signed_raw(envelope), now=NOW)


@pytest.mark.parametrize("author", [5, None, b"did:key:z6Mk", ["did"]])
def test_author_that_is_not_a_string_is_refused(author: Any) -> None:
    envelope = {**unsigned(), "author": author}
    with pytest.raises(MalformedDid):
        verify_record(signed_raw(envelope), now=NOW)


# --- limits ----------------------------------------------------------------------------


def _raw_with_blob(size: int) -> bytes:
    return signed_raw(unsigned({"blob": b"\x00" * size}))


def test_record_of_exactly_64_kib_is_accepted_and_one_byte_more_is_too_large() -> None:
    base = len(_raw_with_blob(1000))
    size = 1000 + records.MAX_RECORD_BYTES - base
    exact = _raw_with_blob(size)
    assert len(exact) == 64 * 1024
    assert verify_record(exact, now=NOW).raw == exact
    over = _raw_with_blob(size + 1)
    assert len(over) == 64 * 1024 + 1
    with pytest.raises(RecordTooLarge):
        verify_record(over, now=NOW)


def test_oversize_is_refused_before_any_parsing() -> None:
    with pytest.raises(RecordTooLarge):
        verify_record(b"\xc1" * (64 * 1024 + 1), now=NOW)


def test_signing_an_oversize_record_is_refused() -> None:
    with pytest.raises(RecordTooLarge):
        sign_record(KEY, "note", {"blob": b"\x00" * (64 * 1024)}, NOW)


@pytest.mark.parametrize("use_lists", [False, True])
def test_body_depth_8_is_accepted_and_9_is_too_deep(use_lists: bool) -> None:
    ok = nested_body(8, use_lists=use_lists)
    assert not records.exceeds_depth(ok, 8)
    verify_record(signed_raw(unsigned(ok)), now=NOW)
    verify_record(sign_record(KEY, "note", ok, NOW).raw, now=NOW)

    deep = nested_body(9, use_lists=use_lists)
    assert records.exceeds_depth(deep, 8) and not records.exceeds_depth(deep, 9)
    with pytest.raises(RecordTooDeep):
        verify_record(signed_raw(unsigned(deep)), now=NOW)
    with pytest.raises(RecordTooDeep):
        sign_record(KEY, "note", deep, NOW)


def _deep_raw(depth: int) -> bytes:
    """A small, properly shaped record whose body nests ``depth`` arrays deep."""
    return with_body_bytes(signed(unsigned()), b"\x81\xa1x" + b"\x91" * depth + b"\x00")


@pytest.mark.parametrize("depth", [50, 500, 900])
def test_deeply_nested_record_is_too_deep_not_a_crash(depth: int) -> None:
    """A 1 KB record nested hundreds deep must be refused by the depth limit, with a
    RecordError, never by a RecursionError escaping the verifier."""
    raw = _deep_raw(depth)
    assert len(raw) < 2048
    with pytest.raises(RecordTooDeep):
        verify_record(raw, now=NOW)


def test_nesting_beyond_the_decoder_stack_is_refused() -> None:
    with pytest.raises((RecordTooDeep, RecordMalformed)):
        verify_record(_deep_raw(5000), now=NOW)


def test_signing_a_deeply_nested_body_is_too_deep_not_a_crash() -> None:
    inner: Any = 0
    for _ in range(600):
        inner = [inner]
    with pytest.raises(RecordTooDeep):
        sign_record(KEY, "note", {"x": inner}, NOW)


def test_created_up_to_10_minutes_ahead_is_accepted_and_beyond_is_refused() -> None:
    verify_record(sign_record(KEY, "note", {}, NOW + TEN_MINUTES).raw, now=NOW)
    too_far_ahead = sign_record(KEY, "note", {}, NOW + TEN_MINUTES + 1)
    with pytest.raises(RecordFromFuture):
        verify_record(too_far_ahead.raw, now=NOW)
    assert verify_record(too_far_ahead.raw, now=NOW + 1).created == NOW + TEN_MINUTES + 1
    with pytest.raises(RecordFromFuture):
        verify_record(sign_record(KEY, "note", {}, 2**64 - 1).raw, now=NOW)


def test_old_records_are_accepted_back_to_the_protocols_start() -> None:
    verify_record(sign_record(KEY, "note", {}, records.EARLIEST_CREATED_MS).raw, now=NOW)
    with pytest.raises(RecordBeforeProtocol):
        verify_record(sign_record(KEY, "note", {}, 0).raw, now=NOW)


@pytest.mark.parametrize(
    ("body", "fits"),
    [
        ({"s": "x" * (32 * 1024)}, True),
        ({"s": "x" * (32 * 1024 + 1)}, False),
        ({"s": "é" * (16 * 1024 + 1)}, False),  # the bound is in UTF-8 bytes
        ({"l": list(range(1024))}, True),
        ({"l": list(range(1025))}, False),
        ({f"k{i}": 0 for i in range(256)}, True),
        ({f"k{i}": 0 for i in range(257)}, False),
    ],
    ids=["str-32k", "str-32k+1", "utf8-str-32k+2", "list-1024", "list-1025", "map-256", "map-257"],
)
def test_strings_lists_and_maps_are_bounded(body: dict[str, Any], fits: bool) -> None:
    raw = signed_raw(unsigned(body))
    assert len(raw) <= records.MAX_RECORD_BYTES
    if fits:
        assert verify_record(raw, now=NOW).body == body
        assert sign_record(KEY, "note", body, NOW).raw == raw
        return
    with pytest.raises(RecordMalformed):
        verify_record(raw, now=NOW)
    # what a node would refuse, it must not sign: sign_record's output always verifies
    with pytest.raises(RecordMalformed):
        sign_record(KEY, "note", body, NOW)


@pytest.mark.parametrize(
    "body", [{"\ud800": 1}, {"k": "\udfff"}, {"k": {"\ud800x": 1}}], ids=["key", "value", "nested"]
)
def test_lone_surrogates_cannot_be_signed(body: dict[str, Any]) -> None:
    """A JSON API can hand us "\\ud800"; it has no UTF-8 form and must not escape as a crash."""
    with pytest.raises(RecordMalformed):
        sign_record(KEY, "note", body, NOW)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_integers_outside_64_bits_cannot_be_signed(value: int) -> None:
    with pytest.raises(RecordMalformed):
        sign_record(KEY, "note", {"n": value}, NOW)


def test_every_rejection_is_a_record_error() -> None:
    for cls in (
        BadSignature,
        MalformedDid,
        RecordFromFuture,
        RecordMalformed,
        RecordNotCanonical,
        RecordTooDeep,
        RecordTooLarge,
        RecordUnknownVersion,
    ):
        assert issubclass(cls, RecordError)


# --- property: random bodies round-trip ------------------------------------------------

_ALPHABET = "abcXYZ019 _-é€\U0001d11e\x00"


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 12)))


def _random_int(rng: random.Random) -> int:
    bits = rng.choice([0, 5, 7, 8, 15, 16, 31, 32, 63, 64])
    if rng.random() < 0.5:
        return rng.randrange(0, 2**bits) if bits else 0
    return -rng.randrange(1, 2 ** min(bits, 63) + 1)


def _random_value(rng: random.Random, depth: int) -> Any:
    kinds = ["str", "int", "bytes", "bool", "none"]
    if depth < records.MAX_BODY_DEPTH:
        kinds += ["map", "list"]
    kind = rng.choice(kinds)
    if kind == "str":
        return _random_text(rng)
    if kind == "int":
        return _random_int(rng)
    if kind == "bytes":
        return rng.randbytes(rng.choice([0, 1, 32, 40]))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return _random_map(rng, depth + 1)


def _random_map(rng: random.Random, depth: int) -> dict[str, Any]:
    return {_random_text(rng): _random_value(rng, depth) for _ in range(rng.randrange(0, 5))}


def _reversed_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_maps(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_maps(item) for item in value]
    return value


@pytest.mark.parametrize("seed", range(8))
def test_random_bodies_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        body = _random_map(rng, 1)
        created = rng.randrange(records.EARLIEST_CREATED_MS, NOW)
        key = rng.choice([KEY, OTHER])
        record = sign_record(key, "random_thing", body, created)
        verified = verify_record(record.raw, now=NOW)
        assert (verified.id, verified.author, verified.body) == (record.id, key.did, body)
        envelope = unsigned(body, key=key, record_type="random_thing", created=created)
        assert record.id == id_of(envelope)
        decoded = msgpack.unpackb(record.raw, raw=False)
        assert canonical_encode(decoded) == record.raw
        assert packb(decoded) == record.raw
        assert canonical_encode(verified.envelope()) == record.raw
        # insertion order of the signer's maps never matters
        assert sign_record(key, "random_thing", _reversed_maps(body), created).raw == record.raw
