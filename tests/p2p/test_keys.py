"""Ed25519 keys, did:key identifiers, base58btc and key files."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from node.errors import BadSignature, KeyFileError, MalformedDid
from node.p2p.keys import (
    SigningKey,
    b58decode,
    b58encode,
    did_from_public_key,
    load_key,
    public_key_commitment,
    public_key_from_did,
    save_key,
    verify_signature,
)

# RFC 8032, section 7.1, TEST 1
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC8032_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
# RFC 8410: PKCS#8 of an Ed25519 key is this prefix and then the 32-byte seed
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")

KEY = SigningKey.from_seed(bytes(range(32)))


def tiny_b58(data: bytes) -> str:
    """Base58btc by schoolbook long division of the byte digits (not the node's way)."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    digits, out = list(data), []
    while any(digits):
        quotient, remainder = [], 0
        for byte in digits:
            accumulator = remainder * 256 + byte
            quotient.append(accumulator // 58)
            remainder = accumulator % 58
        out.append(alphabet[remainder])
        digits = quotient
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


# --- did:key ---------------------------------------------------------------------------


def test_rfc8032_test_1_key_has_the_known_did() -> None:
    key = SigningKey.from_seed(RFC8032_SECRET)
    assert key.public_bytes == RFC8032_PUBLIC
    assert key.did == "did:key:z" + tiny_b58(b"\xed\x01" + RFC8032_PUBLIC) == RFC8032_DID
    assert key.did.startswith("did:key:z6Mk")
    assert did_from_public_key(RFC8032_PUBLIC) == RFC8032_DID
    assert public_key_from_did(RFC8032_DID) == RFC8032_PUBLIC


def test_rfc8032_test_1_signature() -> None:
    key = SigningKey.from_seed(RFC8032_SECRET)
    assert key.sign(b"") == RFC8032_SIGNATURE
    verify_signature(RFC8032_DID, RFC8032_SIGNATURE, b"")
    with pytest.raises(BadSignature):
        verify_signature(RFC8032_DID, RFC8032_SIGNATURE, b"\x00")


@pytest.mark.parametrize("seed", range(20))
def test_did_round_trips(seed: int) -> None:
    key = SigningKey.from_seed(hashlib.sha256(seed.to_bytes(4, "big")).digest())
    did = key.did
    assert did.startswith("did:key:z6Mk")
    assert did == "did:key:z" + tiny_b58(b"\xed\x01" + key.public_bytes)
    assert public_key_from_did(did) == key.public_bytes
    assert did_from_public_key(public_key_from_did(did)) == did


def test_generated_keys_differ_and_round_trip() -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    assert first.did != second.did
    assert public_key_from_did(first.did) == first.public_bytes


@pytest.mark.parametrize(
    "did",
    [
        "did:web:example.com",
        "did:key:f" + (b"\xed\x01" + RFC8032_PUBLIC).hex(),
        RFC8032_DID.upper(),
        RFC8032_DID[len("did:key:z") :],
        RFC8032_DID.replace("z6Mk", "z6M0"),
        RFC8032_DID.replace("z6Mk", "z6MO"),
        RFC8032_DID.replace("z6Mk", "z6MI"),
        RFC8032_DID.replace("z6Mk", "z6Ml"),
        RFC8032_DID + " ",
        "did:key:z" + b58encode(b"\xec\x01" + RFC8032_PUBLIC),  # x25519-pub
        "did:key:z" + b58encode(b"\x12\x20" + RFC8032_PUBLIC),  # a sha2-256 multihash
        "did:key:z" + b58encode(RFC8032_PUBLIC + b"\x00\x00"),
        "did:key:z" + b58encode(b"\xed\x01" + RFC8032_PUBLIC[:31]),
        "did:key:z" + b58encode(b"\xed\x01" + RFC8032_PUBLIC + b"\x00"),
        "did:key:z1" + RFC8032_DID[len("did:key:z") :],
        "did:key:z",
        "",
        RFC8032_DID + "1" * 20,
    ],
)
def test_malformed_did_is_refused(did: str) -> None:
    with pytest.raises(MalformedDid):
        public_key_from_did(did)
    with pytest.raises(MalformedDid):
        verify_signature(did, RFC8032_SIGNATURE, b"")


@pytest.mark.parametrize("did", [None, 5, RFC8032_DID.encode()])
def test_did_that_is_not_a_string_is_refused(did: object) -> None:
    with pytest.raises(MalformedDid):
        public_key_from_did(did)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_did_needs_a_32_byte_public_key(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        did_from_public_key(bytes(length))


# --- base58btc -------------------------------------------------------------------------

B58_KNOWN = [
    (b"", ""),
    (b"\x00", "1"),
    (b"\x00\x00\x00", "111"),
    (b"\x00\x01", "12"),
    (b"\x01", "2"),
    (b"\x39", "z"),
    (b"\x3a", "21"),
    (bytes.fromhex("0000287fb4cd"), "11233QC4"),
    (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
    (
        b"The quick brown fox jumps over the lazy dog.",
        "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
    ),
]


@pytest.mark.parametrize(("data", "text"), B58_KNOWN)
def test_base58_known_answers(data: bytes, text: str) -> None:
    assert b58encode(data) == text == tiny_b58(data)
    assert b58decode(text) == data


def test_base58_round_trips_with_leading_zeros() -> None:
    rng = random.Random(58)
    for _ in range(200):
        data = bytes(rng.randrange(0, 4)) + rng.randbytes(rng.randrange(0, 40))
        text = b58encode(data)
        assert text == tiny_b58(data)
        assert b58decode(text) == data
        zeros = len(data) - len(data.lstrip(b"\0"))
        assert text[:zeros] == "1" * zeros
        assert text[zeros : zeros + 1] != "1"


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "+", "/", " ", "é", "2NEpo7TZRRrLZSi2U="])
def test_base58_refuses_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(ValueError, match="base58"):
        b58decode(bad)


# --- key files -------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 000, so a key file's mode cannot come from the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_save_key_writes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    save_key(path, KEY)
    assert mode_of(path) == 0o600
    assert load_key(path).public_bytes == KEY.public_bytes


def test_save_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    save_key(path, KEY)
    other = SigningKey.from_seed(bytes(32))
    with pytest.raises(KeyFileError, match="exists"):
        save_key(path, other)
    assert load_key(path).did == KEY.did


@pytest.mark.usefixtures("open_umask")
def test_save_key_overwrite_tightens_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    save_key(path, KEY, overwrite=True)
    assert mode_of(path) == 0o600
    assert load_key(path).did == KEY.did


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610, 0o601, 0o777])
def test_load_key_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    save_key(path, KEY)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as refused:
        load_key(path)
    assert str(path) in refused.value.message
    assert f"{mode:04o}" in refused.value.message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_load_key_accepts_an_owner_only_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    save_key(path, KEY)
    path.chmod(mode)
    assert load_key(path).did == KEY.did


def test_load_key_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key(tmp_path / "absent.key")


def test_pem_round_trip_and_known_bytes() -> None:
    pem = KEY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pem.rstrip().endswith(b"-----END PRIVATE KEY-----")
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    assert der == PKCS8_ED25519_PREFIX + bytes(range(32))
    again = SigningKey.from_pem(pem)
    assert again.public_bytes == KEY.public_bytes
    assert again.sign(b"m") == KEY.sign(b"m")


def _pem(der: bytes) -> bytes:
    return (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"
    )


def _other_pems() -> dict[str, bytes]:
    pkcs8 = serialization.PrivateFormat.PKCS8
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    ed_der = PKCS8_ED25519_PREFIX + bytes(range(32))
    return {
        "empty": b"",
        "garbage": b"garbage",
        "binary": b"\xff\xfe\x00\x01",
        "raw seed": bytes(range(32)),
        "empty PEM": b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        "bad base64": b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        "truncated DER": _pem(ed_der[:-1]),
        "public key": KEY.private.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "encrypted": KEY.private.private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(b"passphrase")
        ),
        "openssh": KEY.private.private_bytes(pem, serialization.PrivateFormat.OpenSSH, plain),
        "x25519": x25519.X25519PrivateKey.from_private_bytes(bytes(32)).private_bytes(
            pem, pkcs8, plain
        ),
        "p-256": ec.derive_private_key(1, ec.SECP256R1()).private_bytes(pem, pkcs8, plain),
        # PKCS#8 naming an algorithm nobody knows (OID 1.3.101.99 in place of Ed25519)
        "unknown algorithm": _pem(ed_der.replace(b"\x06\x03\x2b\x65\x70", b"\x06\x03\x2b\x65\x63")),
    }


OTHER_PEMS = _other_pems()


@pytest.mark.parametrize("data", OTHER_PEMS.values(), ids=OTHER_PEMS.keys())
def test_from_pem_refuses_what_is_not_an_ed25519_pkcs8_key(data: bytes) -> None:
    with pytest.raises(KeyFileError, match=r"node\.key"):
        SigningKey.from_pem(data, source="node.key")


def test_load_key_refuses_garbage_content(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=re.escape(str(path))):
        load_key(path)


def test_public_key_commitment_is_sha256_of_the_raw_public_key() -> None:
    assert public_key_commitment(KEY.public_bytes) == hashlib.sha256(KEY.public_bytes).digest()
    assert public_key_commitment(RFC8032_PUBLIC) == hashlib.sha256(RFC8032_PUBLIC).digest()
    assert len(public_key_commitment(RFC8032_PUBLIC)) == 32
