"""Workers sign their requests with their worker key, as nodes sign theirs.

The scheme is the federation's (``node.p2p.federation.signing``): the worker's did in
``Civitas-Node``, a time, and an Ed25519 signature over method, path, the body's
SHA-256, the time and this node's did. Output uploads can be large, and are named by
their SHA-256, so their signature covers the digest in the path: it is checked (with a
replay cache) before a byte of the body is read, and the body must then hash to it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from aiohttp import StreamReader, web

from node.errors import BadSignature, PayloadTooLarge, Unauthorized
from node.http import parse_int, read_capped
from node.p2p.federation.signing import (
    DOMAIN,
    NODE_HEADER,
    SIGNATURE_HEADER,
    SKEW_MS,
    TIME_HEADER,
    RequestVerifier,
)
from node.p2p.keys import SigningKey, verify_signature

CHUNK = 1024 * 1024


def signed_digest_string(
    method: str, path: str, digest_hex: str, timestamp: int, destination: str
) -> bytes:
    """The federation's signed string, for a body known by its SHA-256 digest."""
    return "\n".join(
        (DOMAIN, method.upper(), path, digest_hex, str(timestamp), destination)
    ).encode()


def sign_digest(
    key: SigningKey, method: str, path: str, digest_hex: str, destination: str
) -> dict[str, str]:
    when = int(time.time() * 1000)
    sig = key.sign(signed_digest_string(method, path, digest_hex, when, destination))
    encoded = base64.urlsafe_b64encode(sig).decode().rstrip("=")
    return {NODE_HEADER: key.did, TIME_HEADER: str(when), SIGNATURE_HEADER: encoded}


class WorkerAuth:
    """Checks worker-signed requests addressed to this node (with a replay cache)."""

    def __init__(self, node_did: str) -> None:
        self.node_did = node_did
        self.verifier = RequestVerifier(node_did)
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # upload signatures, 10 min

    async def json_request(self, request: web.Request, max_bytes: int) -> tuple[str, bytes]:
        """The signing worker's did and the (small) body it signed."""
        body = await read_capped(request.content, max_bytes, "the request body")
        did = self.verifier.verify(request.method, request.path_qs, body, request.headers)
        return did, body

    def verify_digest(self, request: web.Request, digest_hex: str) -> str:
        """The signing worker's did, for a body that must hash to ``digest_hex``.

        Nothing of the body is read: an upload is authenticated before it is received.
        """
        headers: Mapping[str, str] = request.headers
        sender, stamp, encoded = (
            headers.get(NODE_HEADER),
            headers.get(TIME_HEADER),
            headers.get(SIGNATURE_HEADER),
        )
        if not sender or not stamp or not encoded:
            raise Unauthorized("a worker request must be signed with the worker key")
        when = parse_int(stamp, 0, 2**62)
        try:
            sig = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise Unauthorized("malformed request signature headers") from None
        if when is None:
            raise Unauthorized("malformed request signature headers: the time is not a number")
        if abs(int(time.time() * 1000) - when) > SKEW_MS:
            raise Unauthorized("the request's time is more than 5 minutes off")
        message = signed_digest_string(
            request.method, request.path_qs, digest_hex, when, self.node_did
        )
        try:
            verify_signature(sender, sig, message)
        except (BadSignature, ValueError) as exc:
            raise Unauthorized(f"the request signature does not verify: {exc}") from None
        self._remember(sig, when)
        return sender

    def _remember(self, sig: bytes, when: int) -> None:
        if sig in self._seen:
            raise Unauthorized("this signed request was seen before (replay)")
        self._seen[sig] = when
        now = int(time.time() * 1000)
        while self._seen and (
            len(self._seen) > self.verifier.cache_size
            or now - next(iter(self._seen.values())) > 2 * SKEW_MS
        ):
            self._seen.popitem(last=False)


def remove_now(path: Path) -> None:
    """Remove a temp file at once, without awaiting: safe in a cancelled task's cleanup."""
    path.unlink(missing_ok=True)


async def spool(content: StreamReader, temp: Path, max_bytes: int) -> tuple[str, int]:
    """Stream a body to ``temp``, hashing it; its SHA-256 (lowercase hex) and size.

    On any failure (too large, the client gone, cancelled) ``temp`` is removed before the
    error rises, synchronously, so not even a cancelled task leaves it behind.
    """
    hasher = hashlib.sha256()
    size = 0
    handle = await asyncio.to_thread(open, temp, "wb")
    try:
        while chunk := await content.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"an output may be at most {max_bytes:,} bytes")
            hasher.update(chunk)
            await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        handle.close()
        remove_now(temp)
        raise
    await asyncio.to_thread(handle.close)
    return hasher.hexdigest(), size
