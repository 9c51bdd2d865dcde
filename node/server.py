"""Running the node process: lock the home, start the HTTP server, stop on a signal.

The server guards itself against slow and greedy clients: a connection must send its
request's headers within ``server.header_timeout_s`` (aiohttp's keep-alive timer, which
also runs while a request's headers are incomplete), a body that stalls is dropped (see
``body_timeout_middleware`` in node/http.py), and one address may hold at most
``server.max_connections_per_address`` connections (trusted proxies exempt).

A stop (SIGTERM, Ctrl-C) takes at most ``server.shutdown_timeout_s``: new requests are
answered 503 ``shutting_down`` at once; requests still running after half of it are
cancelled (an upload is answered 503 and its temp file removed, a download that had begun
is closed); then the services stop, and past the deadline the process exits anyway,
whatever a stuck handler or thread is doing (every write the node acknowledged is
committed already: that is what kill -9 relies on too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

from aiohttp import web

from node.app import build_node, create_app, set_public_url
from node.config import Config, ServerSection
from node.errors import ConfigError
from node.home import Home
from node.http import Handler, TrustedProxies, error_response
from node.logs import setup_logging

log = logging.getLogger("civitas.node")


class ConnectionGuard:
    """Counts open connections per client address and refuses those over the cap."""

    def __init__(self, max_per_address: int, exempt: TrustedProxies) -> None:
        self.max_per_address = max_per_address
        self.exempt = exempt
        self.open: Counter[str] = Counter()
        self.refused = 0

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.max_per_address and address not in self.exempt:
            self.refused += 1
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, factory)


class _GuardedConnection(asyncio.Protocol):
    """Admits a connection under the guard's cap, then hands everything to aiohttp."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self.factory = factory
        self.inner: asyncio.Protocol | None = None
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if not self.guard.admit(address):
            cast(asyncio.Transport, transport).abort()  # before aiohttp sees it
            return
        self.address = address
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.guard.release(self.address)
            self.inner.connection_lost(exc)
            self.inner = None

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with every connection passed through a :class:`ConnectionGuard`."""

    __slots__ = ("guard",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), self._host, self._port, backlog=self._backlog
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


_PREPARED = web.RequestKey("civitas_prepared", bool)


class Drain:
    """The requests in flight, so that a stop can refuse new ones and end the rest."""

    def __init__(self) -> None:
        self.stopping = False
        self.inflight: dict[asyncio.Task[object], web.Request] = {}
        self.ended = 0  # requests cancelled by a stop

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.stopping:
            return _shutting_down()
        task = asyncio.current_task()
        assert task is not None
        self.inflight[task] = request
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not self.stopping or request.get(_PREPARED):
                raise  # not ours, or its answer has begun: the connection closes
            task.uncancel()
            return _shutting_down()
        finally:
            self.inflight.pop(task, None)

    async def mark_prepared(self, request: web.Request, _response: web.StreamResponse) -> None:
        request[_PREPARED] = True

    async def stop(self, grace_s: float) -> None:
        """Refuse new requests; give the running ones ``grace_s``, then cancel them."""
        self.stopping = True
        if self.inflight:  # none can join now
            await asyncio.wait(list(self.inflight), timeout=grace_s)
        running = [t for t in self.inflight if not t.done()]
        self.ended = len(running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)


def _shutting_down() -> web.Response:
    response = error_response(
        503, "shutting_down", "the node is shutting down; try again when it is back"
    )
    response.headers["Connection"] = "close"
    response.headers["Retry-After"] = "10"
    return response


async def start_server(
    app: web.Application, settings: ServerSection, shutdown_timeout_s: float = 60.0
) -> web.AppRunner:
    """Serve ``app`` on ``settings.host:port``; the caller cleans up the runner."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=float(settings.header_timeout_s),
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()  # runs cleanup_ctx startup: database check, schema check
    guard = ConnectionGuard(
        settings.max_connections_per_address, TrustedProxies(settings.trusted_proxies)
    )
    site = GuardedSite(runner, settings.host, settings.port, guard)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} "
            f"(server.host, server.port): {exc.strerror or exc}"
        ) from None
    return runner


async def run_node(config: Config, home: Home, stop: asyncio.Event) -> bool:
    """Serve until ``stop`` is set; whether the stop kept within its deadline."""
    node = build_node(config, home)  # loads (and permission-checks) the node key
    app = create_app(node, home.admin_token())
    drain = Drain()
    app.middlewares.insert(0, drain.middleware)  # outermost: sees every request first
    app.on_response_prepare.append(drain.mark_prepared)
    limit_s = float(config.server.shutdown_timeout_s)
    # aiohttp waits this long for a connection's handler, then as long again after
    # cancelling it; the drain below has already ended the requests by then.
    runner = await start_server(app, config.server, shutdown_timeout_s=min(1.0, limit_s / 4))
    try:
        port = runner.addresses[0][1]
        url = f"http://{config.server.host}:{port}"
        if not config.node.public_url:
            set_public_url(app, url)
        home.write_runtime(url)
        log.info("serving", extra={"url": url, "did": node.node_key.did, "home": str(home.path)})
        print(f"civitas node {node.node_key.did} serving on {url}", flush=True)
        await stop.wait()
    except BaseException:
        home.clear_runtime()
        await runner.cleanup()
        raise
    started = time.monotonic()
    log.info("stopping", extra={"in_flight": len(drain.inflight), "limit_s": limit_s})
    home.clear_runtime()
    await drain.stop(limit_s / 2)
    left = max(0.5, limit_s - (time.monotonic() - started))
    try:
        await asyncio.wait_for(runner.cleanup(), left)
    except TimeoutError:
        log.error(
            "the node did not stop within server.shutdown_timeout_s; exiting anyway",
            extra={"limit_s": limit_s},
        )
        return False
    log.info(
        "stopped",
        extra={"s": round(time.monotonic() - started, 2), "requests_ended": drain.ended},
    )
    return True


def serve_forever(config: Config, home: Home) -> None:
    setup_logging(config.log.level, config.log.format)
    lock = home.lock()
    clean = True
    try:

        async def main() -> bool:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            return await run_node(config, home, stop)

        loop = asyncio.new_event_loop()
        try:
            clean = loop.run_until_complete(main())
            clean = _finish(loop, float(config.server.shutdown_timeout_s)) and clean
        finally:
            if clean:
                loop.close()
    finally:
        lock.release()
    if not clean:
        # A handler or thread is stuck (a blocking read on a dead disk …): exit now rather
        # than wait for it; every acknowledged write is committed already.
        logging.shutdown()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)


def _finish(loop: asyncio.AbstractEventLoop, limit_s: float) -> bool:
    """Cancel what is left on the loop and stop its threads, within ``limit_s / 4``;
    False when something did not end in time."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()

    async def settle() -> None:
        if left:
            await asyncio.wait(left, timeout=limit_s / 8)
        await loop.shutdown_asyncgens()
        await asyncio.wait_for(loop.shutdown_default_executor(), limit_s / 8)

    try:
        loop.run_until_complete(settle())
    except TimeoutError:
        return False
    return all(t.done() for t in left)
