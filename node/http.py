"""HTTP plumbing shared by every package's routes: errors, auth, JSON bodies.

Routes stay thin: parse with :func:`read_json`, call a service, answer with
:func:`json_ok`. A :class:`CivitasError` becomes ``{"error": code, "message": ...}``
with its status; anything else is logged and answered with a bare 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader, web

from node.errors import BadRequest, CivitasError, Forbidden, PayloadTooLarge, Unauthorized

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
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def json_ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
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
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(500, "internal_error", "internal error; see the node's log")
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


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or a 400 that says what is wrong with it."""
    if request.content_type != "application/json":
        raise BadRequest("send a JSON body with Content-Type: application/json")
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


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
