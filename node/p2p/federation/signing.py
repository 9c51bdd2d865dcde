"""Signed requests between nodes: pure functions, pinned by a test vector.

The sending node signs, with its node key::

    civitas-request-v1\\n
    <METHOD>\\n
    <path and query, as sent>\\n
    <SHA-256 of the body, lowercase hex>\\n
    <unix milliseconds>\\n
    <the destination node's did>

and sends ``Civitas-Node`` (its did), ``Civitas-Time`` and ``Civitas-Signature``
(base64url, no padding). The receiver checks, in order: the headers are there, the time
is within ±5 minutes, the destination is itself, the signature, then that the same
signature was not seen before (a short replay cache).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.errors import BadSignature, Unauthorized
from node.p2p.keys import SigningKey, public_key_from_did, verify_signature

DOMAIN = "civitas-request-v1"
SKEW_MS = 5 * 60 * 1000
NODE_HEADER, TIME_HEADER, SIGNATURE_HEADER = "Civitas-Node", "Civitas-Time", "Civitas-Signature"


def signed_string(method: str, path: str, body: bytes, timestamp: int, destination: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((DOMAIN, method.upper(), path, digest, str(timestamp), destination)).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_request(
    key: SigningKey,
    method: str,
    path: str,
    body: bytes,
    destination: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers that prove ``key``'s node sent this request to ``destination``."""
    when = int(time.time() * 1000) if timestamp is None else timestamp
    signature = key.sign(signed_string(method, path, body, when, destination))
    return {NODE_HEADER: key.did, TIME_HEADER: str(when), SIGNATURE_HEADER: _b64(signature)}


@dataclass
class RequestVerifier:
    """Checks signed requests addressed to ``own_did``; remembers signatures it has seen."""

    own_did: str
    cache_size: int = 10_000
    _seen: OrderedDict[bytes, int] = field(default_factory=OrderedDict)

    def verify(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        now: int | None = None,
    ) -> str:
        """The sender's did, or Unauthorized saying what is wrong."""
        sender = headers.get(NODE_HEADER)
        stamp = headers.get(TIME_HEADER)
        encoded = headers.get(SIGNATURE_HEADER)
        if not sender or not stamp or not encoded:
            raise Unauthorized(
                f"a node-to-node request needs {NODE_HEADER}, {TIME_HEADER} and "
                f"{SIGNATURE_HEADER} headers"
            )
        try:
            timestamp = int(stamp)
            signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise Unauthorized("malformed request signature headers") from None
        current = int(time.time() * 1000) if now is None else now
        if abs(current - timestamp) > SKEW_MS:
            raise Unauthorized("the request's time is more than 5 minutes off")
        public_key_from_did(sender)
        verify_signature_as_request(sender, signature, method, path, body, timestamp, self.own_did)
        if signature in self._seen:
            raise Unauthorized("this signed request was seen before (replay)")
        self._seen[signature] = timestamp
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)
        for old, when in list(self._seen.items()):
            if current - when <= 2 * SKEW_MS:
                break
            del self._seen[old]
        return sender


def verify_signature_as_request(
    sender: str,
    signature: bytes,
    method: str,
    path: str,
    body: bytes,
    timestamp: int,
    destination: str,
) -> None:
    try:
        verify_signature(
            sender, signature, signed_string(method, path, body, timestamp, destination)
        )
    except (BadSignature, ValueError) as exc:
        raise Unauthorized(f"the request signature does not verify: {exc}") from None
