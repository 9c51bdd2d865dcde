"""Moderation's HTTP API (thin: parse, call the service, serialize).

- ``POST /api/takedowns`` — file a notice: JSON fields (a logged-in claimant, signed with
  their account's key) or a notice signed elsewhere (``application/msgpack``, anyone);
- ``GET /api/takedowns/{id}`` — a notice's status; ``GET /api/takedowns`` (moderators);
- ``POST /api/takedowns/{id}/decision`` — a moderator decides;
- ``POST /api/takedowns/{id}/counter`` — the creator answers with a counter-notice;
- ``/api/moderation/…`` — the queue, reviews, held images, deletions, audit log and
  subscriptions; ``POST /api/reports`` — anyone reports content;
- ``GET /moderation/v1/takedowns?after=&limit=`` — this node's takedown list, public.
"""

from __future__ import annotations

import re

from aiohttp import web

from node.catalog.routes import CATALOG, int_id
from node.errors import BadRequest, Forbidden, NotFound
from node.http import (
    Principal,
    field,
    json_ok,
    parse_int,
    principal,
    query_int,
    read_capped,
    read_json,
    require_admin,
    require_user,
)
from node.moderation.schemas import Target
from node.moderation.service import ModerationService, Submitter
from node.p2p.records import MAX_RECORD_BYTES
from node.ratelimit import client_key

MODERATION = web.AppKey("moderation", ModerationService)
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def record_id(request: web.Request, name: str = "id") -> bytes:
    value = request.match_info[name]
    if not HEX64.match(value):
        raise NotFound("a record id is 64 hexadecimal characters")
    return bytes.fromhex(value)


def require_moderator(request: web.Request) -> Principal:
    who = require_user(request)
    if not who.is_moderator:
        raise Forbidden("only a moderator may do this")
    return who


def actor_name(who: Principal) -> str:
    return who.user.name if who.user is not None else "admin"


def _submitter(request: web.Request, contact: str = "") -> Submitter:
    who = principal(request)
    return Submitter(
        contact=contact,
        account=who.user.name if who.user is not None else None,
        address=client_key(request),
    )


def _target(text: object) -> Target:
    try:
        return Target.parse(str(text))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def file_notice(request: web.Request) -> web.Response:
    service = request.app[MODERATION]
    if request.content_type == "application/msgpack":
        raw = await read_capped(request.content, MAX_RECORD_BYTES, "a notice")
        contact = request.query.get("contact", "")
        notice = await service.submit_raw(raw, _submitter(request, contact))
        return json_ok({"notice": notice}, status=201)
    who = require_user(request)
    if who.user is None:
        raise BadRequest("the node's admin token has no author key: send a signed notice")
    data = await read_json(request)
    contact = field(data, "contact", default="")
    key = request.app[MODERATION].author_key(who.user.did)
    notice = await service.file_notice(key, data, _submitter(request, contact))
    return json_ok({"notice": notice}, status=201)


async def get_notice(request: web.Request) -> web.Response:
    who = principal(request)
    notice = await request.app[MODERATION].notice(record_id(request), moderator=who.is_moderator)
    return json_ok({"notice": notice})


async def list_notices(request: web.Request) -> web.Response:
    require_moderator(request)
    return json_ok({"notices": await request.app[MODERATION].notices()})


async def decide(request: web.Request) -> web.Response:
    who = require_moderator(request)
    data = await read_json(request)
    targets = field(data, "targets", list, default=None)
    notice = await request.app[MODERATION].decide(
        actor_name(who),
        record_id(request),
        field(data, "verdict"),
        [_target(t) for t in targets] if targets else None,
        field(data, "note", default=""),
    )
    return json_ok({"notice": notice}, status=201)


async def counter(request: web.Request) -> web.Response:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("the node's admin token has no author key")
    data = await read_json(request)
    key = request.app[MODERATION].author_key(who.user.did)
    notice = await request.app[MODERATION].file_counter(
        key, record_id(request), field(data, "statement"), _submitter(request)
    )
    return json_ok({"notice": notice}, status=201)


async def proof_check(request: web.Request) -> web.Response:
    require_moderator(request)
    results = await request.app[MODERATION].check_proof_now(record_id(request))
    return json_ok({"proof": results})


async def queue(request: web.Request) -> web.Response:
    require_moderator(request)
    status = request.query.get("status", "open")
    if status not in ("open", "closed"):
        raise BadRequest("status must be open or closed")
    return json_ok({"items": await request.app[MODERATION].queue(status)})


async def review(request: web.Request) -> web.Response:
    who = require_moderator(request)
    data = await read_json(request)
    honor = field(data, "honor", bool)
    outcome = await request.app[MODERATION].review_decision(
        actor_name(who), record_id(request), honor
    )
    return json_ok({"outcome": outcome})


async def close_item(request: web.Request) -> web.Response:
    who = require_moderator(request)
    item_id = parse_int(request.match_info["item"])
    if item_id is None:
        raise NotFound("a queue item id is an integer")
    data = await read_json(request) if request.can_read_body else {}
    note = data.get("note", "")
    if not isinstance(note, str):
        raise BadRequest("'note' must be a string")
    await request.app[MODERATION].close_item(actor_name(who), item_id, note)
    return json_ok({"closed": item_id})


async def release_held(request: web.Request) -> web.Response:
    who = require_moderator(request)
    await request.app[MODERATION].release_held(actor_name(who), record_id(request))
    return json_ok({"released": request.match_info["id"]})


async def confirm_delete(request: web.Request) -> web.Response:
    who = require_moderator(request)
    deleted = await request.app[MODERATION].confirm_delete(actor_name(who), record_id(request))
    return json_ok({"deleted": deleted})


async def rerate(request: web.Request) -> web.Response:
    who = require_moderator(request)
    model_id = int_id(request.match_info["id"])
    if model_id is None:
        raise NotFound("a model id is a 53-bit integer")
    root = await request.app[CATALOG].views.root_for_int(model_id)
    if root is None:
        raise NotFound(f"no model {model_id}")
    await request.app[MODERATION].rerate(actor_name(who), root, await read_json(request))
    (model,) = await request.app[CATALOG].views.models_by_root([root])
    return json_ok({"model": model})


async def rerate_image(request: web.Request) -> web.Response:
    who = require_moderator(request)
    image_int = int_id(request.match_info["id"])
    if image_int is None:
        raise NotFound("an image id is a 53-bit integer")
    views = request.app[CATALOG].views
    image_id = await views.image_id_for_int(image_int)
    if image_id is None:
        raise NotFound(f"no image {image_int}")
    data = await read_json(request)
    if set(data) - {"rating"}:
        raise BadRequest("an image takes only a rating")
    await request.app[MODERATION].rerate(actor_name(who), image_id, data)
    return json_ok({"image": {"id": image_int, "rating": data.get("rating")}})


async def audit(request: web.Request) -> web.Response:
    require_moderator(request)
    before = query_int(request, "before", 0) or None
    return json_ok({"entries": await request.app[MODERATION].audit_entries(before=before)})


async def list_subscriptions(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"subscriptions": await request.app[MODERATION].list_subscriptions()})


async def subscribe(request: web.Request) -> web.Response:
    require_admin(request)
    data = await read_json(request)
    sub = await request.app[MODERATION].subscribe(
        field(data, "node"), field(data, "policy", default="review")
    )
    return json_ok({"subscription": sub}, status=201)


async def unsubscribe(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[MODERATION].unsubscribe(request.match_info["did"])
    return json_ok({"unsubscribed": request.match_info["did"]})


async def report(request: web.Request) -> web.Response:
    who = principal(request)
    data = await read_json(request)
    result = await request.app[MODERATION].report(
        _target(field(data, "target")),
        field(data, "reason"),
        field(data, "comment", default=""),
        who.user.name if who.user is not None else None,
        client_key(request),
    )
    return json_ok({"report": result}, status=201)


async def takedown_list(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0)
    limit = query_int(request, "limit", 100, lo=1, hi=500)
    return json_ok(await request.app[MODERATION].takedown_list(after, limit))


def add_routes(app: web.Application, service: ModerationService) -> None:
    app[MODERATION] = service
    r = app.router
    r.add_post("/api/takedowns", file_notice)
    r.add_get("/api/takedowns", list_notices)
    r.add_get("/api/takedowns/{id}", get_notice)
    r.add_post("/api/takedowns/{id}/decision", decide)
    r.add_post("/api/takedowns/{id}/counter", counter)
    r.add_post("/api/takedowns/{id}/proof-check", proof_check)
    r.add_get("/api/moderation/queue", queue)
    r.add_post("/api/moderation/queue/{item}/close", close_item)
    r.add_post("/api/moderation/decisions/{id}/review", review)
    r.add_post("/api/moderation/decisions/{id}/delete-files", confirm_delete)
    r.add_post("/api/moderation/held/{id}/release", release_held)
    r.add_get("/api/moderation/audit", audit)
    r.add_post("/api/moderation/models/{id}/rating", rerate)
    r.add_post("/api/moderation/images/{id}/rating", rerate_image)
    r.add_get("/api/moderation/subscriptions", list_subscriptions)
    r.add_post("/api/moderation/subscriptions", subscribe)
    r.add_delete("/api/moderation/subscriptions/{did}", unsubscribe)
    r.add_post("/api/reports", report)
    r.add_get("/moderation/v1/takedowns", takedown_list)
