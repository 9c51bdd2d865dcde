"""The operator's transfers in the web UI: "fetch to this node" and the Downloads page.

The page renders without JavaScript; ``downloads.js`` then follows
``GET /api/downloads/events``, a Server-Sent Events stream of the same data.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from node.accounts.routes import FORM_FIELD, check_form_token
from node.catalog.routes import CATALOG, int_id
from node.errors import BadRequest, Forbidden
from node.http import require_admin
from node.render import RENDERER, page, set_flash

EVENT_EVERY_S = 1.0
HEARTBEAT_S = 15.0


@page
async def downloads_page(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    fetcher = request.app[CATALOG].fetcher
    return request.app[RENDERER].render(
        request,
        "downloads.html",
        title="Downloads",
        downloads=await fetcher.list_downloads(),
        torrents=fetcher.seeding(),
    )


@page
async def fetch_to_node(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    who = check_form_token(request, str(form.get(FORM_FIELD, "")))
    if not who.is_admin:
        raise Forbidden("only the node's administrators fetch files to it")
    version_id = str(form.get("version_id", ""))
    if int_id(version_id) is None:
        raise BadRequest("version_id must be a model version id")
    status = await request.app[CATALOG].fetcher.fetch(version_id)
    response = web.HTTPSeeOther("/downloads")
    set_flash(response, [f"Fetching {status['name']}: it is verified before it is seeded."])
    raise response


async def transfer_events(request: web.Request) -> web.StreamResponse:
    """``event: transfers`` whenever downloads or seeding change; a heartbeat otherwise."""
    require_admin(request)
    fetcher = request.app[CATALOG].fetcher
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    last, quiet = "", 0.0
    try:
        while True:
            payload = json.dumps(
                {"downloads": await fetcher.list_downloads(), "torrents": fetcher.seeding()}
            )
            if payload != last:
                await response.write(f"event: transfers\ndata: {payload}\n\n".encode())
                last, quiet = payload, 0.0
            elif quiet >= HEARTBEAT_S:
                await response.write(b": still here\n\n")
                quiet = 0.0
            await asyncio.sleep(EVENT_EVERY_S)
            quiet += EVENT_EVERY_S
    except ConnectionResetError:  # the page was closed
        pass
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/downloads", downloads_page)
    app.router.add_post("/models/{id}/fetch", fetch_to_node)
    app.router.add_get("/api/downloads/events", transfer_events)
