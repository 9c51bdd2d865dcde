"""HTTP plumbing shared by every package's routes: errors, auth, JSON bodies.

Routes stay thin: parse with :func:`read_json`, call a service, answer with
:func:`json_ok`. A :class:`CivitasError` becomes ``{"error": code, "message": ...}``
with its status; anything else is logged and answered with a bare 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from node.errors import (
    BadRequest,
    CivitasError,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    outage_of,
)

log = logging.getLogger("civitas.http")


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a local user, the node's own admin (the CLI), or anonymous."""

    user: Any = None  # node.accounts.service.User; typed loosely to keep this layer low
    node_admin: bool = False
    csrf_token: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.node_admin or (self.user is not None and self.user.role == "admin")

    @property
    def is_moderator(self) -> bool:
        return self.is_admin or (self.user is not None and self.user.role == "moderator")

    @property
    def authenticated(self) -> bool:
        return self.node_admin or self.user is not None


ANONYMOUS = Principal()
PRINCIPAL = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_COOKIE = "civitas_session"
# A visitor's CSRF token for forms shown before they log in (log-in, sign-up, notices).
FORM_COOKIE = "civitas_form"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def json_ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _bug(request: web.Request) -> web.Response:
    """Log the exception being handled, with its traceback, and answer 500."""
    log.exception("unhandled error", extra={"method": request.method, "path": request.path})
    return error_response(500, "internal_error", "internal error (a bug); see the node's log")


CLIENT_CLOSED = 499  # logged for a request its client (or a stop) ended before its answer


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():  # another connection's
            return _bug(request)
        status = CLIENT_CLOSED  # the client went away mid-request: not the node's bug
        return error_response(400, "client_disconnected", "the connection was lost")
    except asyncio.CancelledError:  # the client went away, or a stop ended the request
        status = CLIENT_CLOSED
        raise
    except CivitasError as exc:
        status = exc.status
        response = error_response(exc.status, exc.code, exc.message)
        retry_after = getattr(exc, "retry_after_s", None)  # 429/503: when to try again
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    except web.HTTPRequestEntityTooLarge:
        status = 413
        return error_response(413, PayloadTooLarge.code, "request body is too large")
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        reason = exc.reason or "error"
        return error_response(exc.status, reason.lower().replace(" ", "_"), reason)
    except HttpProcessingError as exc:  # aiohttp refused a multipart part's headers …
        status = 400
        return error_response(400, "malformed_request", f"the request is malformed: {exc}"[:500])
    except (ValueError, UnicodeError) as exc:
        if not _from_request_parsing(exc.__traceback__):
            return _bug(request)
        status = 400
        return error_response(400, "malformed_request", f"the request is malformed: {exc}"[:500])
    except Exception as exc:
        if (outage := outage_of(exc)) is not None:  # storage, not a bug: say which
            status = outage.status
            log.error(outage.message, extra={"method": request.method, "path": request.path})
            return error_response(outage.status, outage.code, outage.message)
        return _bug(request)
    finally:
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )


# aiohttp's and its helpers' modules that parse what a client sent. A ValueError or
# UnicodeError raised inside them (and not in our code they called) is bad input: 400.
_PARSING_MODULES = ("aiohttp/web_request.py", "aiohttp/multipart.py")
_NODE_DIR = str(Path(__file__).parent)


def _from_request_parsing(tb: TracebackType | None) -> bool:
    """Whether the innermost frames are aiohttp parsing a request, not our code."""
    inside = False
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if filename.endswith(_PARSING_MODULES):
            inside = True
        elif filename.startswith(_NODE_DIR):
            inside = False  # our code, below the parser: a bug, not bad input
        tb = tb.tb_next
    return inside


MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or a 400 that says what is wrong with it."""
    if request.content_type != "application/json":
        raise BadRequest("send a JSON body with Content-Type: application/json")
    data = parse_json(await request.read())
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def parse_json(raw: bytes | str, what: str = "the body") -> Any:
    """Client-sent JSON, or a 400: not JSON, nested deeper than :data:`MAX_JSON_DEPTH`,
    or holding a lone surrogate (``"\\ud800"`` parses, but no database can store it)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    _check_json(data, what)
    return data


def _check_json(data: Any, what: str) -> None:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise BadRequest(f"{what} holds a lone surrogate (\\ud800-\\udfff)")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


async def read_capped(stream: StreamReader, limit: int, what: str = "the body") -> bytes:
    """All of ``stream`` to its end, or PayloadTooLarge once it passes ``limit`` bytes.

    One ``StreamReader.read(n)`` returns only what has arrived so far, not ``n`` bytes: a
    body sent in several packets was cut short. This reads until the end or the cap, for
    request bodies (the error answers 413) and peers' responses alike."""
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit + 1 - size):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


# Cursors and ids from a query string: ASCII digits, at most this (a signed 64-bit column
# holds it with room to spare), so no peer's number reaches SQL as an overflow.
MAX_QUERY_INT = 2**62


def parse_int(raw: str, lo: int = 0, hi: int = MAX_QUERY_INT) -> int | None:
    """``raw`` as an integer in [lo, hi], or None: ASCII digits with an optional minus
    (``int`` alone also takes spaces, underscores and other scripts' digits)."""
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def query_int(
    request: web.Request, name: str, default: int, *, lo: int = 0, hi: int = MAX_QUERY_INT
) -> int:
    """The integer query parameter ``name`` (``default`` when absent), or a 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw, lo, hi)
    if value is None:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}")
    return value


MAX_FILENAME = 255
_BAD_FILENAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff/\\\\]")


def upload_filename(sent: str | None, default: str) -> str:
    """A multipart part's file name as given to a file, a record and a download: its last
    path component, or a 400 for control characters, lone surrogates or excess length."""
    if not sent:
        return default
    name = sent.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", "..") or len(name) > MAX_FILENAME or _BAD_FILENAME.search(name):
        raise BadRequest(
            f"a file name is 1 to {MAX_FILENAME} printable characters without control characters"
        )
    return name


_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (for ``next=`` redirects), else ``default``.

    Read as a browser reads a ``Location``: tabs and newlines anywhere are dropped, C0
    controls and spaces at either end trimmed, backslashes taken as slashes. What is left
    must start with one ``/`` (``//host`` is another site) and hold only printable ASCII;
    that normalised form is returned, so the browser sees exactly what was checked."""
    if not target:
        return default
    path = target.translate(_TAB_OR_NEWLINE).strip(_C0_AND_SPACE).replace("\\", "/")
    if not path.startswith("/") or path.startswith("//"):
        return default
    if not all(0x21 <= ord(c) < 0x7F for c in path):
        return default
    return path


def field(data: dict[str, Any], name: str, kind: type = str, *, default: Any = ...) -> Any:
    value = data.get(name, default)
    if value is ...:
        raise BadRequest(f"{name!r} is required")
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"{name!r} must be a {kind.__name__}")
    return value


def principal(request: web.Request) -> Principal:
    return request.get(PRINCIPAL, ANONYMOUS)


def require_user(request: web.Request) -> Principal:
    who = principal(request)
    if not who.authenticated:
        raise Unauthorized("log in or send an API token (Authorization: Bearer …)")
    return who


def require_admin(request: web.Request) -> Principal:
    who = require_user(request)
    if not who.is_admin:
        raise Forbidden("only an administrator may do this")
    return who


# --- client address, behind trusted proxies ----------------------------------------------

CLIENT_ADDRESS = web.RequestKey("client_address", str)


class TrustedProxies:
    """Reverse proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed."""

    def __init__(self, spec: str = "") -> None:
        self.networks = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in spec.split(",")
            if part.strip()
        ]

    def __contains__(self, address: object) -> bool:
        if not self.networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: list[str]) -> str:
        """The first address, from the right, that is not one of our proxies. A hop that
        is not an address ends the walk: what the last trusted hop said is all we know."""
        address = peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        for hop in reversed(hops):
            if address not in self:
                break
            hop_address = _hop_address(hop)
            if hop_address is None:
                break
            address = hop_address
        return address


# A hop some proxies write with the client's port: 1.2.3.4:5678, [2001:db8::1]:443, [::1].
_HOP_WITH_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<port6>[0-9]{1,5}))?"
    r"|(?P<v4>[0-9.]+):(?P<port4>[0-9]{1,5}))"
)


def _hop_address(hop: str) -> str | None:
    """An ``X-Forwarded-For`` hop's address, with or without a port; None if not one."""
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        pass
    match = _HOP_WITH_PORT.fullmatch(hop)
    if match is None or int(match["port6"] or match["port4"] or 0) > 65535:
        return None
    try:
        if match["v6"] is not None:
            return str(ipaddress.IPv6Address(match["v6"]))
        return str(ipaddress.IPv4Address(match["v4"]))
    except ValueError:
        return None


def client_address(request: web.Request) -> str:
    """The client's address: the socket's peer, or what a trusted proxy forwarded."""
    return request.get(CLIENT_ADDRESS) or request.remote or ""


def make_forwarded_middleware(trusted: TrustedProxies) -> Any:
    """Behind a trusted proxy, the request's ``remote`` and ``scheme`` become the client's
    (so ``request.secure`` sets the session cookie's Secure flag behind TLS)."""

    @web.middleware
    async def forwarded_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if peer not in trusted:
            request[CLIENT_ADDRESS] = peer
            return await handler(request)
        address = trusted.client_of(peer, request.headers.getall("X-Forwarded-For", []))
        protos = request.headers.get("X-Forwarded-Proto", "").split(",")
        proto = protos[-1].strip().lower()
        forwarded = request.clone(
            remote=address, scheme=proto if proto in ("http", "https") else request.scheme
        )
        forwarded[CLIENT_ADDRESS] = address
        return await handler(forwarded)

    return forwarded_middleware


# --- slow bodies -------------------------------------------------------------------------


def make_body_timeout_middleware(timeout_s: float) -> Any:
    """Drop a request whose body stalls: ``timeout_s`` seconds with the handler waiting
    for the client's next byte and none arriving. Time the handler spends elsewhere (a
    database, a queue for an ingest slot) does not count; a slow but moving body is fine."""
    tick = min(1.0, timeout_s / 4)

    async def watch(request: web.Request) -> bool:
        content, loop = request.content, asyncio.get_running_loop()
        seen, since = content.total_bytes, loop.time()
        while not content.is_eof():
            await asyncio.sleep(tick)
            now = loop.time()
            # StreamReader keeps no public "a reader is waiting" flag; _waiter is it.
            if content.total_bytes != seen or getattr(content, "_waiter", None) is None:
                seen, since = content.total_bytes, now
            elif now - since >= timeout_s:
                log.info(
                    "request body stalled",
                    extra={"path": request.path, "address": client_address(request)},
                )
                if request.transport is not None:
                    request.transport.abort()
                return True
        return False

    @web.middleware
    async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        watcher = asyncio.create_task(watch(request), name="civitas-body-watch")
        try:
            return await handler(request)
        except Exception:
            if watcher.done() and not watcher.cancelled() and watcher.result():
                raise web.HTTPRequestTimeout() from None  # the client is gone anyway
            raise
        finally:
            watcher.cancel()

    return body_timeout_middleware
