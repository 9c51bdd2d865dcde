"""HTTP request metrics (a middleware) and database time per request (engine events)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMATCHED = "(unmatched)"  # any path no route serves: one label value, not one per URL
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Seconds of database statements spent for the request being handled (a one-item list,
# shared by every task the request's handler runs in its context).
_DB_TIME: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "civitas_db_time", default=None
)


def route_label(request: web.Request) -> str:
    """The route's canonical path (``/api/v1/models/{id}``), or one value for no route."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "civitas_http_requests",
            "HTTP requests answered, by route (canonical path), method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "civitas_http_request_duration_seconds",
            "Time to answer an HTTP request (until the handler returns), by route and method.",
            ("route", "method"),
            registry=registry,
        )
        self.db_time = Histogram(
            "civitas_http_request_db_seconds",
            "Database time spent answering one HTTP request (its unit of work), by route.",
            ("route",),
            buckets=DB_BUCKETS,
            registry=registry,
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        db_time = [0.0]
        token = _DB_TIME.set(db_time)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _DB_TIME.reset(token)
            route = route_label(request)
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route, request.method).observe(time.perf_counter() - started)
            self.db_time.labels(route).observe(db_time[0])


def _before(conn: sa.Connection, *_args: Any) -> None:
    conn.info["civitas_started"] = time.perf_counter()  # a connection runs one at a time


def _after(conn: sa.Connection, *_args: Any) -> None:
    started = conn.info.pop("civitas_started", None)
    spent = _DB_TIME.get()
    if started is not None and spent is not None:
        spent[0] += time.perf_counter() - started


def time_statements(engine: AsyncEngine) -> None:
    """Add each statement's duration to the current request's database time (once per engine)."""
    sync = engine.sync_engine
    if not sa.event.contains(sync, "before_cursor_execute", _before):
        sa.event.listen(sync, "before_cursor_execute", _before)
        sa.event.listen(sync, "after_cursor_execute", _after)
