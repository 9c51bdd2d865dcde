"""Node discovery: ``GET /.well-known/civitas``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from node.http import json_ok
from node.p2p.log import RecordLog

PROTOCOL = "civitas/1"


@dataclass
class NodeInfo:
    did: str
    name: str
    version: str
    public_url: str  # set to the bound address at startup when not configured
    log: RecordLog
    bittorrent: str | None = None  # "host:port" of the node's libtorrent, once listening

    async def describe(self) -> dict[str, object]:
        base = self.public_url
        return {
            "protocol": PROTOCOL,
            "did": self.did,
            "name": self.name,
            "software": {"name": "civitas", "version": self.version},
            "log_epoch": await self.log.epoch(),
            "endpoints": {
                "base": base,
                "api": f"{base}/api",
                "federation": f"{base}/federation/v1",
                "health": f"{base}/healthz",
            },
            # Where this node's BitTorrent session listens: peers name it in magnets (x.pe).
            "bittorrent": self.bittorrent,
        }


NODE_INFO = web.AppKey("node_info", NodeInfo)


async def well_known(request: web.Request) -> web.Response:
    return json_ok(await request.app[NODE_INFO].describe())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/.well-known/civitas", well_known)
