"""``civitas serve`` with one hostile route added, for the forced-exit tests: run as
``python tests/faults/stuck_serve.py MODE --home HOME serve ...``.

``GET /stuck`` then never ends, in one of three ways a real bug could:
``loop`` blocks the event loop (a blocking call made on it), ``thread`` waits on a
worker thread that never returns (a read on a dead disk), ``ignores-cancel`` swallows
every cancellation and goes on waiting.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

from aiohttp import web

import node.server
from node.cli import main

FOREVER_S = 3600


async def _stuck(request: web.Request) -> web.Response:
    mode = request.app[MODE]
    print("stuck", flush=True)
    if mode == "loop":
        time.sleep(FOREVER_S)  # noqa: ASYNC251 (the bug this test is about)
    elif mode == "thread":
        never = threading.Event()
        await asyncio.shield(asyncio.to_thread(never.wait))
    else:
        while True:
            try:
                await asyncio.sleep(FOREVER_S)
            except asyncio.CancelledError:
                continue
    return web.Response(text="unreachable")


MODE = web.AppKey("stuck_mode", str)


def _with_stuck_route(mode: str) -> Any:
    real = node.server.create_app

    def create_app(*args: Any, **kwargs: Any) -> web.Application:
        app = real(*args, **kwargs)
        app[MODE] = mode
        app.router.add_get("/stuck", _stuck)
        return app

    return create_app


if __name__ == "__main__":
    node.server.create_app = _with_stuck_route(sys.argv[1])  # type: ignore[assignment]
    sys.exit(main(sys.argv[2:]))
