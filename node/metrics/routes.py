"""``GET /metrics``: the Prometheus text format, behind the admin token unless public."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from node.http import require_admin
from node.metrics.collect import NodeMetrics

METRICS = web.AppKey("metrics", NodeMetrics)


async def metrics(request: web.Request) -> web.Response:
    if not request.app[METRICS_PUBLIC]:
        require_admin(request)
    body = await request.app[METRICS].scrape()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


METRICS_PUBLIC = web.AppKey("metrics_public", bool)


def add_routes(app: web.Application, collector: NodeMetrics, public: bool) -> None:
    app[METRICS] = collector
    app[METRICS_PUBLIC] = public
    app.router.add_get("/metrics", metrics)
