"""Moderation pages of the web UI: the takedown notice form, a notice's status (with the
counter-notice form, and the decide form for moderators), the review queue, the audit log.

Thin like moderation's JSON routes: each form post calls one ModerationService method,
so a notice filed here is the same signed record as one sent to ``POST /api/takedowns``.
Forms post back to the page they came from and redirect (303) when done; an invalid form
comes back with what was wrong and what the user had entered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from node.accounts.routes import FORM_FIELD, check_form_token
from node.catalog.routes import CATALOG
from node.errors import BadRequest, CivitasError, Forbidden, Unauthorized
from node.http import Principal, principal, require_user
from node.moderation.routes import MODERATION, actor_name, record_id, require_moderator
from node.moderation.service import Submitter
from node.ratelimit import client_key
from node.render import RENDERER, page, set_flash

AUDIT_PAGE = 50
REASONS = {
    "copyright": "Copyright: my work was used without permission",
    "artist_opt_out": "Artist opt-out: my style or name is used without my consent",
    "likeness": "Likeness of a real person without their consent",
    "ncii": "Non-consensual intimate imagery",
    "illegal": "Other illegal content",
}
ACTIONS = {
    "remove": "Remove the content",
    "remove_name": "Only remove my name (the terms below) from the model's text",
}
FORM_FIELDS = ("claimant_name", "contact", "works", "targets", "reason", "action")
TEXT_FIELDS = ("names", "proof_urls", "statement")
_SPLIT = re.compile(r"[\s,]+")


def when(ms: int | None) -> str:
    """A record's millisecond timestamp as a date and time people read (UTC)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%d %b %Y %H:%M UTC")


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _items(text: str, *, lines: bool = False) -> list[str]:
    """A textarea's entries: one a line (names may hold spaces), or split on spaces too."""
    parts = text.splitlines() if lines else _SPLIT.split(text)
    return [p.strip() for p in parts if p.strip()]


def form_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """What the user entered, as the form shows it again."""
    values: dict[str, Any] = {k: _text(form, k) for k in (*FORM_FIELDS, *TEXT_FIELDS)}
    values["good_faith"] = _text(form, "good_faith") == "1"
    values["accurate"] = _text(form, "accurate") == "1"
    return values


def notice_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values as ``file_notice`` takes them (the JSON API's names)."""
    return {
        "claimant_name": values["claimant_name"].strip(),
        "works": values["works"].strip(),
        "targets": _items(values["targets"]),
        "reason": values["reason"] or None,
        "action": values["action"] or "remove",
        "names": _items(values["names"], lines=True),
        "proof_urls": _items(values["proof_urls"]),
        "statement": values["statement"].strip(),
        "good_faith": values["good_faith"],
        "accurate": values["accurate"],
    }


def _author(who: Principal) -> Any:
    if who.user is None:
        raise BadRequest("the node's admin has no author key: log in as a user")
    return who.user


# --- filing a notice ------------------------------------------------------------------------


def _notice_form(
    request: web.Request, values: dict[str, Any], error: str | None = None, status: int = 200
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "moderation/notice_form.html",
        status=status,
        title="File a takedown notice",
        values=values,
        error=error,
        reasons=REASONS,
        actions=ACTIONS,
    )


@page
async def notice_form(request: web.Request) -> web.StreamResponse:
    _author(require_user(request))
    values = form_values({})
    values["targets"] = "\n".join(request.query.getall("target", []))
    return _notice_form(request, values)


@page
async def file_notice(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    user = _author(require_user(request))
    values = form_values(form)
    service = request.app[MODERATION]
    submitter = Submitter(
        contact=values["contact"].strip(), account=user.name, address=client_key(request)
    )
    try:
        notice = await service.file_notice(
            service.author_key(user.did), notice_fields(values), submitter
        )
    except (Forbidden, Unauthorized):
        raise
    except CivitasError as exc:
        return _notice_form(request, values, exc.message, exc.status)
    response = web.HTTPSeeOther(f"/takedowns/{notice['id']}")
    set_flash(response, ["Your notice was filed: this node's moderators will review it."])
    raise response


# --- a notice's status ------------------------------------------------------------------------


async def _model_links(
    request: web.Request, targets: list[dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """``model:ROOT`` targets this node shows, to their model pages' ids and names."""
    roots = [bytes.fromhex(t["value"]) for t in targets if t["kind"] == "model"]
    if not roots:
        return {}
    found = await request.app[CATALOG].views.models_by_root(roots)
    return {m["civitas"]["rootId"]: {"id": m["id"], "name": m["name"]} for m in found}


async def _notice_page(
    request: web.Request,
    *,
    status: int = 200,
    counter_error: str | None = None,
    statement: str = "",
    decide_error: str | None = None,
    note: str = "",
) -> web.Response:
    who = principal(request)
    notice = await request.app[MODERATION].notice(record_id(request), moderator=who.is_moderator)
    return request.app[RENDERER].render(
        request,
        "moderation/notice.html",
        status=status,
        title=f"Takedown notice by {notice['claimant']['name']}",
        notice=notice,
        models=await _model_links(request, notice["targets"]),
        reasons=REASONS,
        actions=ACTIONS,
        when=when,
        node_did=request.app[MODERATION].key.did,
        can_counter=who.user is not None,
        counter_error=counter_error,
        statement=statement,
        decide_error=decide_error,
        note=note,
    )


@page
async def notice_page(request: web.Request) -> web.StreamResponse:
    return await _notice_page(request)


@page
async def file_counter(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    user = _author(require_user(request))
    statement = _text(form, "statement").strip()
    notice_id = record_id(request)
    service = request.app[MODERATION]
    try:
        await service.file_counter(
            service.author_key(user.did),
            notice_id,
            statement,
            Submitter(account=user.name, address=client_key(request)),
        )
    except (Forbidden, Unauthorized):
        raise
    except CivitasError as exc:
        return await _notice_page(
            request, status=exc.status, counter_error=exc.message, statement=statement
        )
    response = web.HTTPSeeOther(f"/takedowns/{notice_id.hex()}")
    set_flash(response, ["Your counter-notice was filed: the moderators will review it."])
    raise response


@page
async def decide(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    who = require_moderator(request)
    notice_id = record_id(request)
    note = _text(form, "note").strip()
    try:
        await request.app[MODERATION].decide(
            actor_name(who), notice_id, _text(form, "verdict"), None, note
        )
    except (Forbidden, Unauthorized):
        raise
    except CivitasError as exc:
        return await _notice_page(request, status=exc.status, decide_error=exc.message, note=note)
    raise web.HTTPSeeOther(f"/takedowns/{notice_id.hex()}")


# --- the moderators' pages --------------------------------------------------------------------


@page
async def queue_page(request: web.Request) -> web.StreamResponse:
    require_moderator(request)
    status = "closed" if request.query.get("status") == "closed" else "open"
    items = await request.app[MODERATION].queue(status)
    return request.app[RENDERER].render(
        request,
        "moderation/queue.html",
        title="Moderation queue",
        items=items,
        shown=status,
        when=when,
    )


@page
async def review(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    who = require_moderator(request)
    honor = _text(form, "honor") == "1"
    outcome = await request.app[MODERATION].review_decision(
        actor_name(who), record_id(request), honor
    )
    response = web.HTTPSeeOther("/moderation")
    set_flash(response, [f"The decision was {'honored' if honor else 'dismissed'}: {outcome}."])
    raise response


@page
async def release_held(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    who = require_moderator(request)
    await request.app[MODERATION].release_held(actor_name(who), record_id(request))
    response = web.HTTPSeeOther("/moderation")
    set_flash(response, ["The image was released: it is shown again."])
    raise response


@page
async def audit_page(request: web.Request) -> web.StreamResponse:
    require_moderator(request)
    entries = await request.app[MODERATION].audit_entries(limit=AUDIT_PAGE)
    return request.app[RENDERER].render(
        request, "moderation/audit.html", title="Moderation audit log", entries=entries, when=when
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/takedowns/new", notice_form)
    r.add_post("/takedowns/new", file_notice)
    r.add_get("/takedowns/{id}", notice_page)
    r.add_post("/takedowns/{id}/counter", file_counter)
    r.add_post("/takedowns/{id}/decide", decide)
    r.add_get("/moderation", queue_page)
    r.add_get("/moderation/audit", audit_page)
    r.add_post("/moderation/decisions/{id}/review", review)
    r.add_post("/moderation/held/{id}/release", release_held)
