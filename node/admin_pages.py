"""The admin's federation page: peers, nodes heard of, blocked authors and takedown-list
subscriptions, with a form for each thing ``civitas peer …``, ``civitas sync``,
``civitas author …`` and ``civitas takedown subscribe …`` do.

It combines two packages (federation and moderation), so it lives here rather than in
either. Like the other pages it is thin: each form post checks its token, then the
admin, calls one service method, flashes a one-line result (or what went wrong) and
redirects (303) back to ``/admin/federation``; no form post answers with a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from node.accounts.routes import FORM_FIELD, check_form_token
from node.errors import BadRequest, CivitasError
from node.http import require_admin
from node.moderation.pages import when
from node.moderation.routes import MODERATION
from node.moderation.service import POLICIES
from node.p2p.federation.routes import FEDERATION
from node.p2p.federation.service import Peer
from node.p2p.federation.wanted_routes import WANTED
from node.render import RENDERER, page, set_flash

HOME = "/admin/federation"
MAX_NOTE = 400  # characters of a flashed line: the notes travel in a cookie
WANTED_SHOWN = 20  # wanted files listed on the page (`civitas files wanted` lists more)
Action = Callable[[web.Request, Mapping[str, Any]], Awaitable[list[str]]]


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _required(form: Mapping[str, Any], name: str, what: str) -> str:
    value = _text(form, name)
    if not value:
        raise BadRequest(f"enter {what}")
    return value


def _label(peer: Peer) -> str:
    return peer.name or peer.url


def peer_state(peer: Peer) -> dict[str, str]:
    """How a peer is doing, in words: ``kind`` (for a badge) and ``text``."""
    if peer.blocked:
        return {"kind": "blocked", "text": "blocked"}
    if peer.failing_since is not None:
        return {"kind": "failing", "text": f"failing since {when(peer.failing_since)}"}
    behind = max(0, peer.their_high - peer.cursor)
    if behind:
        return {"kind": "behind", "text": f"behind by {behind} record{'s' * (behind != 1)}"}
    if peer.last_sync is None:
        return {"kind": "new", "text": "not synced yet"}
    return {"kind": "connected", "text": "connected"}


@page
async def federation_page(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    federation = request.app[FEDERATION]
    peers = await federation.list_peers()
    nodes = [n for n in await federation.known_nodes() if not n["self"]]
    wanted_count, wanted = await request.app[WANTED].listing(limit=WANTED_SHOWN)
    return request.app[RENDERER].render(
        request,
        "admin/federation.html",
        title="Federation",
        node_did=federation.key.did,
        peers=[(p, peer_state(p)) for p in peers],
        nodes=nodes,
        wanted=wanted,
        wanted_count=wanted_count,
        authors=await federation.log.list_blocked(),
        frozen=await federation.log.list_frozen(),
        subscriptions=await request.app[MODERATION].list_subscriptions(),
        policies=POLICIES,
        when=when,
    )


def _form_route(
    action: Action, failed: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A form post: token, then admin, then ``action``; flash its result or the error."""

    @page
    async def handler(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        check_form_token(request, _text(form, FORM_FIELD))
        require_admin(request)
        try:
            messages = await action(request, form)
        except CivitasError as exc:
            messages = [f"{failed}: {exc.message}"]
        response = web.HTTPSeeOther(HOME)
        set_flash(response, [m[:MAX_NOTE] for m in messages])
        raise response

    handler.__name__ = action.__name__
    return handler


# --- the actions, one a form ----------------------------------------------------------------


async def add_peer(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    url = _required(form, "url", "the peer's URL (http:// or https://)")
    did = _text(form, "did") or None
    peer = await request.app[FEDERATION].add_peer(url, expected_did=did)
    return [f"Added {_label(peer)} ({peer.did}) as a peer: it syncs in a moment."]


async def remove_peer(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    did = request.match_info["did"]
    await request.app[FEDERATION].remove_peer(did)
    return [f"Removed the peer {did}."]


async def block_peer(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    peer = await request.app[FEDERATION].set_blocked(request.match_info["did"], True)
    return [f"Blocked {_label(peer)}: no more syncing with it, its pushes are refused."]


async def unblock_peer(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    peer = await request.app[FEDERATION].set_blocked(request.match_info["did"], False)
    return [f"Unblocked {_label(peer)}: it syncs again."]


async def sync_now(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    federation = request.app[FEDERATION]
    report = await federation.sync_all(force=True)
    if not report:
        return ["Nothing to sync: this node has no unblocked peers."]
    names = {p.did: _label(p) for p in await federation.list_peers()}
    done = [r for r in report.values() if "pulled" in r]
    pulled = sum(r["pulled"] for r in done)
    pushed = sum(r["pushed"] for r in done)
    messages = [
        f"Synced {len(done)} of {len(report)} peer{'s' * (len(report) != 1)}: "
        f"{pulled} new record{'s' * (pulled != 1)} pulled, {pushed} pushed."
    ]
    messages += [
        f"{names.get(did, did)}: {r['error']}" for did, r in report.items() if "error" in r
    ]
    messages += [
        f"{names.get(did, did)}: pushes failing (its pulls go on): {r['push_error']}"
        for did, r in report.items()
        if "push_error" in r
    ]
    return messages


async def block_author(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    did = _required(form, "did", "the author's did:key")
    hidden = await request.app[FEDERATION].log.block_author(did, _text(form, "reason"))
    return [f"Blocked the author {did}: {hidden} record{'s' * (hidden != 1)} hidden."]


async def unblock_author(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    did = request.match_info["did"]
    shown = await request.app[FEDERATION].log.unblock_author(did)
    return [f"Unblocked the author {did}: {shown} record{'s' * (shown != 1)} shown again."]


async def unfreeze_author(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    did = _required(form, "did", "the frozen identity's did:key")
    keep = _required(form, "keep", "the key to keep")
    await request.app[FEDERATION].log.unfreeze(did, keep)
    return [f"Settled {did}: its rotation to {keep} is kept."]


async def subscribe(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    target = _required(form, "node", "a node's URL or did:key")
    sub = await request.app[MODERATION].subscribe(target, _text(form, "policy") or "review")
    message = f"Subscribed to the takedown list of {sub['did']} ({sub['policy']})."
    if sub["last_error"]:
        message += f" Its list could not be read yet: {sub['last_error']}"
    return [message]


async def unsubscribe(request: web.Request, form: Mapping[str, Any]) -> list[str]:
    did = request.match_info["did"]
    await request.app[MODERATION].unsubscribe(did)
    return [f"Unsubscribed from the takedown list of {did}."]


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(HOME, federation_page)
    r.add_post(f"{HOME}/peers", _form_route(add_peer, "The peer was not added"))
    r.add_post(f"{HOME}/peers/{{did}}/remove", _form_route(remove_peer, "Not removed"))
    r.add_post(f"{HOME}/peers/{{did}}/block", _form_route(block_peer, "Not blocked"))
    r.add_post(f"{HOME}/peers/{{did}}/unblock", _form_route(unblock_peer, "Not unblocked"))
    r.add_post(f"{HOME}/sync", _form_route(sync_now, "The sync failed"))
    r.add_post(f"{HOME}/authors/block", _form_route(block_author, "The author was not blocked"))
    r.add_post(
        f"{HOME}/authors/{{did}}/unblock",
        _form_route(unblock_author, "The author was not unblocked"),
    )
    r.add_post(f"{HOME}/authors/unfreeze", _form_route(unfreeze_author, "Not settled"))
    r.add_post(f"{HOME}/subscriptions", _form_route(subscribe, "Not subscribed"))
    r.add_post(f"{HOME}/subscriptions/{{did}}/remove", _form_route(unsubscribe, "Not unsubscribed"))
