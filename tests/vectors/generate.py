"""Write ``tests/vectors/records.json``: known-answer vectors for signed records.

DO NOT REGENERATE CASUALLY. These vectors pin the wire format (DESIGN.md section 1,
"Record envelope"): the canonical msgpack bytes, the record id and the Ed25519 signature
every node must compute for the same record. If running this script changes the JSON,
the wire format changed, and every node already in the federation would disagree with
the new code about ids and signatures. Regenerate only for a deliberate, versioned format
change (a new ``v`` and a new id domain), never to make a failing test pass.

    .venv/bin/python tests/vectors/generate.py           # rewrite records.json
    .venv/bin/python tests/vectors/generate.py --check   # exit 1 if it would change

The canonical encoder, base58 and id below are written out here on purpose, independently
of ``node.p2p.records``; the script then checks that ``node.p2p.records.sign_record``
produces the same bytes, and refuses to write vectors the node disagrees with.

In the JSON, a binary value is written ``{"$bin": "<lowercase hex>"}`` (a map whose only
key is ``$bin`` is never a real body map in these vectors), and body maps keep the
insertion order given here, deliberately unsorted: signers must sort.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.p2p.keys import SigningKey  # noqa: E402
from node.p2p.records import EARLIEST_CREATED_MS, sign_record, verify_record  # noqa: E402

OUTPUT = Path(__file__).with_name("records.json")
ID_DOMAIN = b"civitas/record/v1\0"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

SEED_1 = bytes(range(32))
SEED_2 = hashlib.sha256(b"civitas test key 2").digest()
CREATED = 1_735_689_600_000  # 2025-01-01T00:00:00Z in unix milliseconds


# --- an independent canonical msgpack encoder -----------------------------------------


def mp(value: Any) -> bytes:
    """Canonical msgpack: shortest encodings, maps sorted by UTF-8 key bytes, no floats."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        return _mp_int(value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _header(len(data), 0xA0, 32, b"\xd9", b"\xda", b"\xdb") + data
    if isinstance(value, bytes):
        return _header(len(value), None, 0, b"\xc4", b"\xc5", b"\xc6") + value
    if isinstance(value, list):
        out = _header(len(value), 0x90, 16, None, b"\xdc", b"\xdd")
        return out + b"".join(mp(item) for item in value)
    if isinstance(value, dict):
        out = _header(len(value), 0x80, 16, None, b"\xde", b"\xdf")
        for key in sorted(value, key=lambda k: k.encode("utf-8")):
            out += mp(key) + mp(value[key])
        return out
    raise TypeError(f"{type(value).__name__} has no canonical encoding")


def _header(
    n: int, fix: int | None, fix_limit: int, m8: bytes | None, m16: bytes, m32: bytes
) -> bytes:
    if fix is not None and n < fix_limit:
        return bytes([fix | n])
    if m8 is not None and n < 0x100:
        return m8 + struct.pack(">B", n)
    if n < 0x10000:
        return m16 + struct.pack(">H", n)
    return m32 + struct.pack(">I", n)


def _mp_int(n: int) -> bytes:
    if 0 <= n < 0x80:
        return bytes([n])
    if -32 <= n < 0:
        return struct.pack(">b", n)
    if n >= 0:
        for tag, fmt, limit in ((0xCC, ">B", 8), (0xCD, ">H", 16), (0xCE, ">I", 32)):
            if n < 1 << limit:
                return bytes([tag]) + struct.pack(fmt, n)
        return b"\xcf" + struct.pack(">Q", n)
    for tag, fmt, limit in ((0xD0, ">b", 7), (0xD1, ">h", 15), (0xD2, ">i", 31)):
        if n >= -(1 << limit):
            return bytes([tag]) + struct.pack(fmt, n)
    return b"\xd3" + struct.pack(">q", n)


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    digits = ""
    while n:
        n, rem = divmod(n, 58)
        digits = B58[rem] + digits
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def did_of(public_key: bytes) -> str:
    return "did:key:z" + b58encode(b"\xed\x01" + public_key)


# --- JSON form of bodies ---------------------------------------------------------------


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json` (the tests carry their own copy)."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


# --- the vectors -----------------------------------------------------------------------

INTS = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
]  # fmt: skip


def cases() -> list[dict[str, Any]]:
    return [
        {
            "name": "profile",
            "seed": SEED_1,
            "type": "profile",
            "created": CREATED,
            "body": {
                "name": "Ada Lovelace",
                "bio": "Notes on the Analytical Engine. 🖋️",
                "next_key": hashlib.sha256(b"civitas next key").digest(),
            },
        },
        {
            "name": "canonical_edge_cases",
            "seed": SEED_1,
            "type": "model",
            "created": CREATED + 1,
            "body": {
                "é": "non-ASCII key: sorts after every ASCII key (0xc3 0xa9)",
                "aa": {"é": 1, "z": 2, "B": 3, "a": {"y": True, "x": False, "": None}},
                "a": "7.5",
                "B": -33,
                "ints": INTS,
                "ref": hashlib.sha256(b"civitas referenced record").digest(),
                "str8": "s" * 32,
                "fixstr31": "f" * 31,
                "bin8": bytes(range(200)),
                "empty": {"list": [], "map": {}, "str": "", "bin": b""},
                "weights": ["0.8", "1", "-0.25"],
            },
        },
        {
            "name": "unknown_type",
            "seed": SEED_2,
            "type": "future_thing",
            "created": CREATED + 2,
            "body": {"whatever": ["newer", "nodes", 1, b"\x00\xff"], "nested": {"k": "v"}},
        },
        {
            "name": "empty_body_at_epoch",
            "seed": SEED_2,
            "type": "tombstone",
            "created": 0,
            "body": {},
        },
    ]


def build() -> dict[str, Any]:
    vectors = []
    for case in cases():
        key = SigningKey.from_seed(case["seed"])
        did = did_of(key.public_bytes)
        unsigned = {
            "v": 1,
            "type": case["type"],
            "author": did,
            "created": case["created"],
            "body": case["body"],
        }
        unsigned_bytes = mp(unsigned)
        record_id = hashlib.sha256(ID_DOMAIN + unsigned_bytes).digest()
        sig = key.sign(record_id)
        raw = mp({**unsigned, "sig": sig})

        record = sign_record(key, case["type"], case["body"], created=case["created"])
        if (key.did, record.id, record.sig, record.raw) != (did, record_id, sig, raw):
            raise SystemExit(f"{case['name']}: node.p2p.records disagrees; fix the node")
        if case["created"] >= EARLIEST_CREATED_MS:  # older ones are pinned for their bytes
            verify_record(raw, now=case["created"])

        vectors.append(
            {
                "name": case["name"],
                "seed": case["seed"].hex(),
                "did": did,
                "type": case["type"],
                "created": case["created"],
                "body": to_json(case["body"]),
                "unsigned": unsigned_bytes.hex(),
                "id": record_id.hex(),
                "sig": sig.hex(),
                "raw": raw.hex(),
            }
        )
        assert from_json(vectors[-1]["body"]) == case["body"]
    return {
        "about": (
            "Known-answer vectors for Civitas signed records (DESIGN.md section 1). "
            "Written by generate.py; never regenerate casually: a change here is a change "
            "of the wire format. Binary values are {\"$bin\": hex}; 'unsigned' is the "
            "canonical msgpack of the envelope without sig; id = sha256(domain + unsigned); "
            "sig = Ed25519(seed, id); raw = canonical msgpack of the whole envelope."
        ),
        "domain_hex": ID_DOMAIN.hex(),
        "vectors": vectors,
    }


def main(argv: list[str]) -> int:
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in argv:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} differs from what generate.py produces", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
