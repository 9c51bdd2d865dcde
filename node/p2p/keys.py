"""Ed25519 keys, did:key identifiers and key files.

A did:key for Ed25519 is ``did:key:z`` + base58btc(0xed 0x01 + 32-byte public key);
every such identifier starts with ``did:key:z6Mk``. Key files are PKCS#8 PEM, written
with mode 0600 and refused (like ssh does) when group or others may read them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from node.errors import BadSignature, KeyFileError, MalformedDid

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_ED25519_MULTICODEC = b"\xed\x01"
DID_KEY_PREFIX = "did:key:z"
MAX_DID_LENGTH = 64


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"{ch!r} is not a base58 character") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def did_from_public_key(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return DID_KEY_PREFIX + b58encode(_ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> bytes:
    """Decode a did:key into the 32 raw bytes of its Ed25519 public key."""
    if not isinstance(did, str) or len(did) > MAX_DID_LENGTH:
        raise MalformedDid("a did:key is a string of at most 64 characters")
    if not did.startswith(DID_KEY_PREFIX):
        raise MalformedDid(f"{did!r} is not a base58btc did:key (it must start with did:key:z)")
    try:
        raw = b58decode(did[len(DID_KEY_PREFIX) :])
    except ValueError as exc:
        raise MalformedDid(f"{did!r}: {exc}") from None
    if len(raw) != 34 or raw[:2] != _ED25519_MULTICODEC:
        raise MalformedDid(f"{did!r} is not an Ed25519 did:key (multicodec 0xed01, 32 bytes)")
    return raw[2:]


def verify_signature(did: str, signature: bytes, message: bytes) -> None:
    """Raise BadSignature unless ``signature`` is ``did``'s Ed25519 signature of ``message``."""
    public = Ed25519PublicKey.from_public_bytes(public_key_from_did(did))
    try:
        public.verify(signature, message)
    except InvalidSignature:
        raise BadSignature(f"the signature does not verify with {did}") from None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its did:key."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def did(self) -> str:
        return did_from_public_key(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def to_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes, source: str = "key") -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{source} is not an unencrypted PKCS#8 PEM key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{source} holds a key that is not Ed25519")
        return cls(key)


def public_key_commitment(public_key: bytes) -> bytes:
    """SHA-256 of a raw public key: what a profile commits to for pre-rotation."""
    return hashlib.sha256(public_key).digest()


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists already; refusing to overwrite it") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private_file(path: Path) -> None:
    """Refuse a secret file that group or others can access, as ssh does."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"permissions {stat.S_IMODE(mode):04o} for {path} are too open; "
            f"it must be readable by its owner only (chmod 600 {path})"
        )


def save_key(path: Path, key: SigningKey, *, overwrite: bool = False) -> None:
    write_private_file(path, key.to_pem(), overwrite=overwrite)


def load_key(path: Path) -> SigningKey:
    check_private_file(path)
    return SigningKey.from_pem(path.read_bytes(), source=str(path))
