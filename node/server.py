"""Running the node process: lock the home, start the HTTP server, stop on a signal.

The server guards itself against slow and greedy clients: a connection must send its
request's headers within ``server.header_timeout_s`` (aiohttp's keep-alive timer, which
also runs while a request's headers are incomplete), a body that stalls is dropped (see
``body_timeout_middleware`` in node/http.py), and one address may hold at most
``server.max_connections_per_address`` connections (trusted proxies exempt).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Callable
from typing import cast

from aiohttp import web

from node.app import build_node, create_app, set_public_url
from node.config import Config, ServerSection
from node.errors import ConfigError
from node.home import Home
from node.http import TrustedProxies
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


async def start_server(app: web.Application, settings: ServerSection) -> web.AppRunner:
    """Serve ``app`` on ``settings.host:port``; the caller cleans up the runner."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=float(settings.header_timeout_s),
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


async def run_node(config: Config, home: Home, stop: asyncio.Event) -> None:
    node = build_node(config, home)  # loads (and permission-checks) the node key
    app = create_app(node, home.admin_token())
    runner = await start_server(app, config.server)
    try:
        port = runner.addresses[0][1]
        url = f"http://{config.server.host}:{port}"
        if not config.node.public_url:
            set_public_url(app, url)
        home.write_runtime(url)
        log.info("serving", extra={"url": url, "did": node.node_key.did, "home": str(home.path)})
        print(f"civitas node {node.node_key.did} serving on {url}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        home.clear_runtime()
        await runner.cleanup()


def serve_forever(config: Config, home: Home) -> None:
    setup_logging(config.log.level, config.log.format)
    lock = home.lock()
    try:

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_node(config, home, stop)

        asyncio.run(main())
    finally:
        lock.release()
