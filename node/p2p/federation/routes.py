"""Federation endpoints, and the operator's peer management API.

- ``GET /federation/v1/records?after=SEQ&limit=N`` — our log, paged, msgpack;
- ``GET /federation/v1/records/{id}`` — one visible record's bytes;
- ``GET /federation/v1/blobs/{sha256}`` — a file we hold (image previews);
- ``POST /federation/v1/inbox`` — a peer pushes a batch (≤ 50), signed by its node key.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from node.errors import BadRequest, CivitasError, Forbidden, NotFound
from node.http import field, json_ok, query_int, read_capped, read_json, require_admin
from node.p2p.federation import wire
from node.p2p.federation.service import Federation
from node.p2p.federation.signing import RequestVerifier
from node.p2p.records import MAX_RECORD_BYTES

FEDERATION = web.AppKey("federation", Federation)
VERIFIER = web.AppKey("request_verifier", RequestVerifier)
log = logging.getLogger("civitas.federation")
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_INBOX_BYTES = wire.MAX_PUSH * (MAX_RECORD_BYTES + 16) + 1024


async def record_page(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0)
    limit = query_int(request, "limit", 100, lo=1, hi=wire.MAX_PAGE)
    page = await request.app[FEDERATION].page(after, limit)
    return web.Response(body=wire.encode_page(page), content_type=wire.MSGPACK)


async def one_record(request: web.Request) -> web.Response:
    record_id = request.match_info["id"]
    if not HEX64.match(record_id):
        raise NotFound("a record id is 64 hex characters")
    state, raw = await request.app[FEDERATION].record(bytes.fromhex(record_id))
    if raw is None:
        return web.json_response(
            {"error": "record_" + state, "message": f"the record is {state}"}, status=410
        )
    return web.Response(body=raw, content_type=wire.MSGPACK)


async def blob(request: web.Request) -> web.StreamResponse:
    sha256 = request.match_info["sha256"]
    path = await request.app[FEDERATION].store.public_path(sha256) if HEX64.match(sha256) else None
    if path is None:
        raise NotFound("this node does not hold that file")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def inbox(request: web.Request) -> web.Response:
    body = await read_capped(
        request.content, MAX_INBOX_BYTES, f"an inbox batch (at most {wire.MAX_PUSH} records)"
    )
    sender = request.app[VERIFIER].verify(request.method, request.path_qs, body, request.headers)
    federation = request.app[FEDERATION]
    try:
        peer = await federation.trusted_peer(sender)
    except CivitasError as exc:
        raise Forbidden(exc.message) from None
    batch = wire.decode_batch(body)
    federation.take_push_allowance(peer.did, len(batch))
    accepted, errors = await federation.accept(batch, peer)
    return json_ok({"accepted": accepted, "rejected": errors})


# --- the operator's side ---------------------------------------------------------------------


async def list_peers(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"peers": [p.public() for p in await request.app[FEDERATION].list_peers()]})


async def add_peer(request: web.Request) -> web.Response:
    require_admin(request)
    data = await read_json(request)
    peer = await request.app[FEDERATION].add_peer(field(data, "url"))
    return json_ok({"peer": peer.public()}, status=201)


async def remove_peer(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[FEDERATION].remove_peer(request.match_info["did"])
    return json_ok({"removed": request.match_info["did"]})


async def sync_now(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"peers": await request.app[FEDERATION].sync_all(force=True)})


async def known_nodes(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"nodes": await request.app[FEDERATION].known_nodes()})


async def blocked_authors(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"authors": await request.app[FEDERATION].log.list_blocked()})


async def block_author(request: web.Request) -> web.Response:
    require_admin(request)
    data = await read_json(request) if request.can_read_body else {}
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("'reason' must be a string")
    did = request.match_info["did"]
    suppressed = await request.app[FEDERATION].log.block_author(did, reason)
    return json_ok({"blocked": did, "suppressed": suppressed})


async def unblock_author(request: web.Request) -> web.Response:
    require_admin(request)
    did = request.match_info["did"]
    restored = await request.app[FEDERATION].log.unblock_author(did)
    return json_ok({"unblocked": did, "restored": restored})


async def unfreeze_author(request: web.Request) -> web.Response:
    require_admin(request)
    data = await read_json(request)
    did = request.match_info["did"]
    await request.app[FEDERATION].log.unfreeze(did, field(data, "keep"))
    return json_ok({"unfrozen": did, "kept": data["keep"]})


async def block_peer(request: web.Request) -> web.Response:
    require_admin(request)
    peer = await request.app[FEDERATION].set_blocked(request.match_info["did"], True)
    return json_ok({"peer": peer.public()})


async def unblock_peer(request: web.Request) -> web.Response:
    require_admin(request)
    peer = await request.app[FEDERATION].set_blocked(request.match_info["did"], False)
    return json_ok({"peer": peer.public()})


def add_routes(app: web.Application, federation: Federation, verifier: RequestVerifier) -> None:
    app[FEDERATION] = federation
    app[VERIFIER] = verifier
    r = app.router
    r.add_get("/federation/v1/records", record_page)
    r.add_get("/federation/v1/records/{id}", one_record)
    r.add_get("/federation/v1/blobs/{sha256}", blob)
    r.add_post("/federation/v1/inbox", inbox)
    r.add_get("/api/admin/peers", list_peers)
    r.add_post("/api/admin/peers", add_peer)
    r.add_delete("/api/admin/peers/{did}", remove_peer)
    r.add_post("/api/admin/sync", sync_now)
    r.add_get("/api/admin/nodes", known_nodes)
    r.add_get("/api/admin/authors/blocked", blocked_authors)
    r.add_post("/api/admin/authors/{did}/block", block_author)
    r.add_post("/api/admin/authors/{did}/unblock", unblock_author)
    r.add_post("/api/admin/authors/{did}/unfreeze", unfreeze_author)
    r.add_post("/api/admin/peers/{did}/block", block_peer)
    r.add_post("/api/admin/peers/{did}/unblock", unblock_peer)
