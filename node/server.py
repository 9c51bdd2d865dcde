"""Running the node process: lock the home, start the HTTP server, stop on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from node.app import build_node, create_app, set_public_url
from node.config import Config
from node.errors import ConfigError
from node.home import Home
from node.logs import setup_logging

log = logging.getLogger("civitas.node")


async def run_node(config: Config, home: Home, stop: asyncio.Event) -> None:
    node = build_node(config, home)  # loads (and permission-checks) the node key
    app = create_app(node, home.admin_token())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()  # runs cleanup_ctx startup: database check, schema check
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {config.server.host}:{config.server.port} "
                f"(server.host, server.port): {exc.strerror or exc}"
            ) from None
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
