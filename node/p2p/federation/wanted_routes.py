"""The operator's view of wanted files (``civitas files wanted``):

- ``GET /api/admin/wanted`` — how many files are wanted, and the first of them;
- ``POST /api/admin/wanted/retry`` — make every wanted file due now.
"""

from __future__ import annotations

from aiohttp import web

from node.http import json_ok, require_admin
from node.p2p.federation.wanted import WantedFiles

WANTED = web.AppKey("wanted_files", WantedFiles)


async def list_wanted(request: web.Request) -> web.Response:
    require_admin(request)
    total, items = await request.app[WANTED].listing()
    return json_ok({"count": total, "files": [w.public() for w in items]})


async def retry_wanted(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"due": await request.app[WANTED].retry_all()})


def add_routes(app: web.Application, wanted: WantedFiles) -> None:
    app[WANTED] = wanted
    app.router.add_get("/api/admin/wanted", list_wanted)
    app.router.add_post("/api/admin/wanted/retry", retry_wanted)
