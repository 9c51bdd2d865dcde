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
import faulthandler
import fcntl
import logging
import os
import signal
import struct
import sys
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import NoReturn, cast

from aiohttp import web

from node.app import build_node, create_app, set_public_url
from node.config import Config, ServerSection
from node.errors import ConfigError
from node.home import Home
from node.http import Handler, TrustedProxies, error_response
from node.logs import setup_logging
from node.ratelimit import address_key
from node.tasks import stop_tasks

log = logging.getLogger("civitas.node")


class ConnectionGuard:
    """Counts open connections per client address (an IPv6 client: per /64, what one host
    is given) and refuses those over the cap; closes connections whose client stopped
    reading what the node sends (:meth:`watch`)."""

    def __init__(
        self, max_per_address: int, exempt: TrustedProxies, send_timeout_s: float = 60.0
    ) -> None:
        self.max_per_address = max_per_address
        self.exempt = exempt
        self.send_timeout_s = send_timeout_s
        self.open: Counter[str] = Counter()
        self.refused = 0
        self.stalled = 0
        self.connections: set[_GuardedConnection] = set()

    key = staticmethod(address_key)  # an IPv6 client counts as its /64

    def admit(self, address: str) -> bool:
        key = self.key(address)
        if self.open[key] >= self.max_per_address and address not in self.exempt:
            self.refused += 1
            return False
        self.open[key] += 1
        return True

    def release(self, address: str) -> None:
        key = self.key(address)
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, factory)

    async def watch(self) -> None:
        """Every so often, look at each connection's kernel send queue: bytes the node sent
        that the client has not taken. A queue that holds data and has not moved for
        ``send_timeout_s`` is a client that stopped reading (a response streamed by
        sendfile never fills the transport's own buffer, so this asks the socket)."""
        every = max(0.05, min(1.0, self.send_timeout_s / 4))
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.stalled_for(now) >= self.send_timeout_s:
                    self.stalled += 1
                    log.info(
                        "client stopped reading: connection closed",
                        extra={"address": conn.address, "after_s": self.send_timeout_s},
                    )
                    conn.abort()


class _GuardedConnection(asyncio.Protocol):
    """Admits a connection under the guard's cap, then hands everything to aiohttp."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self.factory = factory
        self.inner: asyncio.Protocol | None = None
        self.address = ""
        self.transport: asyncio.Transport | None = None
        self.queued = 0  # the send queue's size when last looked at
        self.since = 0.0  # since when it has held that much

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if not self.guard.admit(address):
            cast(asyncio.Transport, transport).abort()  # before aiohttp sees it
            return
        self.address = address
        self.transport = cast(asyncio.Transport, transport)
        self.guard.connections.add(self)
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.connections.discard(self)
        if self.inner is not None:
            self.guard.release(self.address)
            self.inner.connection_lost(exc)
            self.inner = None

    def stalled_for(self, now: float) -> float:
        """Seconds the kernel has held the same unsent bytes for this client (0: moving)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        try:
            queued = _unsent(sock.fileno()) if sock is not None else 0
        except OSError:
            queued = 0
        if queued == 0 or queued != self.queued:
            self.queued, self.since = queued, now
            return 0.0
        return now - self.since

    def abort(self) -> None:
        """Close the connection and end its handler: a response being sent by sendfile
        would otherwise wait for a socket that is gone, holding its file open."""
        handler = getattr(self.inner, "_task_handler", None)  # aiohttp's task for it
        if self.transport is not None:
            self.transport.abort()
        if isinstance(handler, asyncio.Task):
            handler.cancel()

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

    __slots__ = ("_watch", "guard")

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
        self._watch = asyncio.create_task(self.guard.watch(), name="stalled-readers")

    async def stop(self) -> None:
        await stop_tasks([getattr(self, "_watch", None)])
        await super().stop()


def _unsent(fd: int) -> int:
    """Bytes in a TCP socket's send queue not yet taken by the other side (Linux SIOCOUTQ;
    0 where the platform has no such ioctl)."""
    if not hasattr(termios, "TIOCOUTQ"):
        return 0
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])


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
        settings.max_connections_per_address,
        TrustedProxies(settings.trusted_proxies),
        float(settings.send_timeout_s),
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


class StopSignals:
    """SIGTERM and SIGINT: the first asks the node to stop and arms a watchdog thread that
    ends the process if the stop overruns ``deadline_s``; a second ends it at once.

    Plain ``signal.signal`` handlers, not the loop's: Python runs them between any two
    bytecodes, so a stop is seen even while a blocking call holds the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
        deadline_s: float,
        home: Home,
    ):
        self.loop = loop
        self.stop = stop
        self.deadline_s = deadline_s
        self.home = home
        self.watchdog: threading.Timer | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.watchdog is not None:
            self._exit_now("a second signal: exiting at once", signal=signal.Signals(signum).name)
        self.watchdog = threading.Timer(
            self.deadline_s,
            self._exit_now,
            ("the node did not stop within server.shutdown_timeout_s; exiting anyway",),
            {"limit_s": self.deadline_s},
        )
        self.watchdog.daemon = True
        self.watchdog.start()
        # The watchdog above needs Python's GIL; should a thread hold it for ever (a
        # deadlock inside a C extension), faulthandler's own C thread prints every
        # thread's stack and exits the process two seconds later.
        faulthandler.dump_traceback_later(self.deadline_s + 2, exit=True)
        self.loop.call_soon_threadsafe(self.stop.set)

    def _exit_now(self, message: str, **facts: object) -> NoReturn:
        """End the process now, whatever its threads and loop are doing: every write the
        node acknowledged is committed already (what kill -9 relies on too)."""
        log.error(message, extra=facts)
        with contextlib.suppress(OSError):
            self.home.clear_runtime()
        _flush_and_exit()


def _flush_and_exit() -> NoReturn:
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def serve_forever(config: Config, home: Home) -> NoReturn:
    setup_logging(config.log.level, config.log.format)
    lock = home.lock()
    limit_s = float(config.server.shutdown_timeout_s)
    try:

        async def main() -> bool:
            stop = asyncio.Event()
            # the stop's own budget (limit_s), then _finish's, then a second to spare
            StopSignals(asyncio.get_running_loop(), stop, limit_s * 1.25 + 1, home).install()
            return await run_node(config, home, stop)

        loop = asyncio.new_event_loop()
        clean = loop.run_until_complete(main())
        if not _finish(loop, limit_s) and clean:  # run_node logged its own overrun
            log.error(
                "the node did not stop within server.shutdown_timeout_s; exiting anyway",
                extra={"limit_s": limit_s},
            )
    finally:
        lock.release()
    # Threads the node started may still run (a cancelled request's hashing, a read on a
    # dead disk): the interpreter would wait for each at exit, so the process ends here.
    _flush_and_exit()


def _finish(loop: asyncio.AbstractEventLoop, limit_s: float) -> bool:
    """Cancel what is left on the loop, within ``limit_s / 4``; False when something did
    not end in time. Threads are not waited for (see serve_forever)."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()

    async def settle() -> None:
        if left:
            await asyncio.wait(left, timeout=limit_s / 8)
        await asyncio.wait_for(loop.shutdown_asyncgens(), limit_s / 8)

    try:
        loop.run_until_complete(settle())
    except TimeoutError:
        return False
    return all(t.done() for t in left)
