"""A record forger: signs whatever a test names, with any key, ``created`` or envelope.

:func:`forge` builds records :func:`~node.p2p.records.sign_record` would refuse to make
(an envelope with extra or wrong fields, a ``created`` in 1970 or next year, bodies over
the limits), signed correctly over their id, so that only the receiving node's rules can
refuse them. The scenario helpers build the poison a hostile peer serves: foreign
tombstones, revisions by another key, versions whose model never arrives, oversized
fields and floods of unknown types.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from node.p2p.keys import SigningKey
from node.p2p.records import ID_DOMAIN, RECORD_VERSION, Record, verify_record

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
UNKNOWN_TYPE = "x_hostile_junk"


def key(label: str) -> SigningKey:
    """A key known by its label (the same label, the same key, in every run)."""
    return SigningKey.from_seed(hashlib.sha256(f"civitas hostile {label}".encode()).digest())


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def forge(
    signer: SigningKey,
    record_type: str,
    body: Any,
    *,
    created: int = T0,
    author: str | None = None,
    **envelope: Any,
) -> bytes:
    """The raw bytes of a record signed by ``signer`` over exactly these fields: ``author``
    may name another key, ``envelope`` may add fields or replace ``v``; nothing is checked."""
    unsigned = {
        "v": RECORD_VERSION,
        "type": record_type,
        "author": author or signer.did,
        "created": created,
        "body": body,
        **envelope,
    }
    sig = signer.sign(hashlib.sha256(ID_DOMAIN + _packed(unsigned)).digest())
    return _packed({**unsigned, "sig": sig})


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value, key=lambda k: str(k).encode())}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def _packed(value: Any) -> bytes:
    """The canonical encoding, without its limits (the node's own refuses to make poison)."""
    return bytes(msgpack.packb(_sorted(value), use_bin_type=True))


def record(signer: SigningKey, record_type: str, body: Any, created: int = T0) -> Record:
    """A forged record that verifies (for tests that need its id)."""
    return verify_record(forge(signer, record_type, body, created=created))


def model(signer: SigningKey, name: str, created: int = T0, **extra: Any) -> Record:
    body = {"name": name, "type": "LORA", "tags": ["hostile"], **extra}
    return record(signer, "model", body, created)


def version(signer: SigningKey, model_id: bytes, label: str, created: int = T0) -> Record:
    file = {
        "name": f"{label}.safetensors",
        "size": 1024,
        "sha256": digest(f"{label} sha256"),
        "blake3": digest(f"{label} blake3"),
        "crc32": digest(f"{label} crc32")[:4],
        "format": "SafeTensor",
        "primary": True,
    }
    body = {
        "model": model_id,
        "name": label,
        "base_model": "SD 1.5",
        "trained_words": [label],
        "files": [file],
    }
    return record(signer, "model_version", body, created)


def foreign_tombstone(attacker: SigningKey, target: bytes, created: int = T0) -> Record:
    """A tombstone for a record another key signed."""
    return record(attacker, "tombstone", {"target": target, "reason": "hostile"}, created)


def foreign_revision(attacker: SigningKey, root: bytes, created: int = T0) -> Record:
    """A ``model`` claiming to revise (``root``) a model another key signed."""
    return model(attacker, "hijacked", created, root=root)


def orphan_version(signer: SigningKey, label: str = "orphan") -> Record:
    """A version whose model never arrives anywhere."""
    return version(signer, digest(f"{label}: a model nobody signed"), label)


def oversized_model(signer: SigningKey) -> bytes:
    """A model whose description is over the schema's limit (and its strings' limit)."""
    return forge(signer, "model", {"name": "big", "type": "LORA", "description": "x" * 40_000})


def unknown(signer: SigningKey, n: int, start: int = 0) -> list[bytes]:
    """``n`` distinct records of a type no node knows."""
    return [forge(signer, UNKNOWN_TYPE, {"n": i}) for i in range(start, start + n)]
