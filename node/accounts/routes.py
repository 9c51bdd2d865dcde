"""Account routes: login/logout for the web UI, users and tokens for admins (and the CLI).

API tokens are managed only by a browser session or the node's admin token, never by an
API token (:func:`require_session`)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from node.accounts.service import AccountService
from node.accounts.signup import SignUps
from node.errors import BadRequest, Forbidden, NotFound
from node.http import (
    ANONYMOUS,
    CSRF_HEADER,
    FORM_COOKIE,
    PRINCIPAL,
    SAFE_METHODS,
    SESSION_COOKIE,
    Handler,
    Principal,
    field,
    json_ok,
    parse_int,
    principal,
    read_json,
    require_admin,
    require_user,
)
from node.ratelimit import client_key

ACCOUNTS = web.AppKey("accounts", AccountService)
SIGNUPS = web.AppKey("signups", SignUps)
# How the request's principal proved itself: a browser session's cookie, an API token, the
# node's admin token, or nothing.
CREDENTIAL = web.RequestKey("credential", str)
SESSION, API_TOKEN, ADMIN_TOKEN = "session", "api_token", "admin_token"
# The id of the API token a request came with (absent for any other credential).
API_TOKEN_ID = web.RequestKey("api_token_id", int)
SESSION_ONLY = (
    "an API token cannot create, list or revoke API tokens: use a logged-in browser "
    "session (the /account/tokens page) or the node's admin token (civitas token)"
)
ACCOUNTS_SESSION_ONLY = (
    "an API token cannot create accounts or make or delete invite codes: use a logged-in "
    "browser session or the node's admin token (civitas user add, civitas invite)"
)
# Logging in replaces whatever session the browser had, so it needs no CSRF token of one.
CSRF_EXEMPT = frozenset({"/api/auth/login", "/login"})
QUERY_TOKEN_PATHS = ("/api/v1/", "/api/download/")
# HTML forms cannot send the CSRF header: a page route's cookie session waits here, and
# becomes the request's principal only once the route has checked the form's token field.
PENDING_SESSION = web.RequestKey("pending_session", Principal)
# Forms of visitors without a session (log in, preferences) carry this cookie's value.
FORM_FIELD = "csrf_token"


def make_auth_middleware(accounts: AccountService, admin_token: str) -> Any:
    """Resolve the request's principal from a Bearer token or the session cookie.

    An unknown Bearer token is anonymous (Civitai tools send their own key); cookie
    sessions must prove same-site origin and carry the CSRF token on state changes: the
    header for the API, the form's token field for page routes (see check_form_token).
    """

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        who, credential = ANONYMOUS, ""
        header = request.headers.get("Authorization", "")
        if not header and "token" in request.query and _query_token_allowed(request):
            header = f"Bearer {request.query['token']}"  # Civitai tools' ?token=
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :].strip()
            if hmac.compare_digest(token.encode(), admin_token.encode()):
                who, credential = Principal(node_admin=True), ADMIN_TOKEN
            else:
                found = await accounts.token_user(token)
                if found is not None:
                    who, credential = Principal(user=found[0]), API_TOKEN
                    request[API_TOKEN_ID] = found[1]
        elif SESSION_COOKIE in request.cookies and request.path not in CSRF_EXEMPT:
            session = await accounts.session(request.cookies[SESSION_COOKIE])
            if session is not None:
                who, credential = _cookie_principal(request, session), SESSION
        if request.method not in SAFE_METHODS and _cross_site(request):
            raise Forbidden("cross-site requests may not change anything")
        request[PRINCIPAL] = who
        request[CREDENTIAL] = credential
        return await handler(request)

    return auth_middleware


def require_session(request: web.Request, refusal: str = SESSION_ONLY) -> Principal:
    """The requester, if they are a logged-in browser session (whose changes carry its
    CSRF token) or the node's admin token; 403 for an API token. Managing API tokens and
    accounts is kept from tokens themselves: a stolen one could otherwise mint itself a
    successor that never expires, revoke its owner's other tokens, or (an admin's) create
    admin accounts of its own."""
    who = require_user(request)
    if not who.node_admin and request.get(CREDENTIAL) != SESSION:
        raise Forbidden(refusal)
    return who


def require_admin_session(request: web.Request) -> Principal:
    """An admin in a browser session, or the node's admin token: who may create accounts
    and invite codes (see :func:`require_session`)."""
    require_admin(request)
    return require_session(request, ACCOUNTS_SESSION_ONLY)


def _query_token_allowed(request: web.Request) -> bool:
    """``?token=`` stands for a Bearer token on reads of the Civitai-compatible API and
    downloads, as Civitai's own API takes it (tools pass it that way); nowhere else."""
    return request.method in ("GET", "HEAD") and request.path.startswith(QUERY_TOKEN_PATHS)


def _cookie_principal(request: web.Request, session: Principal) -> Principal:
    if request.method in SAFE_METHODS:
        return session
    if request.path.startswith("/api/") or CSRF_HEADER in request.headers:
        _check_same_site(request, session)
        return session
    request[PENDING_SESSION] = session  # anonymous until the page route checks its form
    return ANONYMOUS


def _cross_site(request: web.Request) -> bool:
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def _check_same_site(request: web.Request, session: Principal) -> None:
    if _cross_site(request):
        raise Forbidden("cross-site requests may not change anything")
    sent = request.headers.get(CSRF_HEADER, "")
    if not session.csrf_token or not hmac.compare_digest(
        sent.encode(), session.csrf_token.encode()
    ):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header")


def check_form_token(request: web.Request, sent: str | None) -> Principal:
    """Check an HTML form's ``csrf_token`` field; return who posts it.

    A cookie session must send its own CSRF token (then it becomes the principal); a
    visitor without one sends the value of their ``civitas_form`` cookie (double submit).
    Requests with a Bearer token carry no ambient credential and need neither.
    """
    pending = request.get(PENDING_SESSION)
    if pending is None and principal(request).authenticated:
        return principal(request)
    expected = pending.csrf_token if pending is not None else request.cookies.get(FORM_COOKIE)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("this form has expired or did not come from this site: reload the page")
    if pending is not None:
        request[PRINCIPAL] = pending
    return principal(request)


def set_session_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Lax",
        path="/",
        max_age=request.app[ACCOUNTS].session_ms // 1000,
        secure=request.secure,
    )


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Log out the request's session (if it has one) and clear the cookie."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and principal(request).user is not None:
        await request.app[ACCOUNTS].logout(session_id)
    response.del_cookie(SESSION_COOKIE, path="/")


async def login(request: web.Request) -> web.Response:
    data = await read_json(request)
    session_id, user = await request.app[ACCOUNTS].login(
        field(data, "username"), field(data, "password"), client_key(request)
    )
    who = await request.app[ACCOUNTS].session(session_id)
    assert who is not None
    response = json_ok({"user": user.public(), "csrf_token": who.csrf_token})
    set_session_cookie(request, response, session_id)
    return response


async def signup(request: web.Request) -> web.Response:
    """Create a member account (as ``accounts.registration`` allows) and log it in."""
    data = await read_json(request)
    invite = data.get("invite")
    session_id, user = await request.app[SIGNUPS].sign_up(
        field(data, "username"),
        field(data, "password"),
        invite if isinstance(invite, str) else None,
        client_key(request),
    )
    who = await request.app[ACCOUNTS].session(session_id)
    assert who is not None
    response = json_ok({"user": user.public(), "csrf_token": who.csrf_token}, status=201)
    set_session_cookie(request, response, session_id)
    return response


async def registration(request: web.Request) -> web.Response:
    return json_ok({"registration": request.app[SIGNUPS].registration})


def _admin_name(request: web.Request) -> str:
    who = require_admin_session(request)
    return who.user.name if who.user is not None else "node admin"


async def create_invite(request: web.Request) -> web.Response:
    code, invite = await request.app[SIGNUPS].create_invite(_admin_name(request))
    return json_ok({"code": code, "invite": invite.public()}, status=201)


async def list_invites(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok({"invites": [i.public() for i in await request.app[SIGNUPS].list_invites()]})


async def revoke_invite(request: web.Request) -> web.Response:
    require_admin_session(request)
    invite_id = parse_int(request.match_info["id"])
    if invite_id is None:
        raise NotFound("an invite id is a positive integer")
    await request.app[SIGNUPS].revoke_invite(invite_id)
    return json_ok({"revoked": invite_id})


async def logout(request: web.Request) -> web.Response:
    response = json_ok({"ok": True})
    await end_session(request, response)
    return response


async def rotate_key(request: web.Request) -> web.Response:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("the node's admin token has no author key to rotate")
    user = await request.app[ACCOUNTS].rotate_key(who.user.name)
    return json_ok({"user": user.public()})


async def me(request: web.Request) -> web.Response:
    who = require_user(request)
    return json_ok(
        {
            "user": who.user.public() if who.user else None,
            "node_admin": who.node_admin,
            "csrf_token": who.csrf_token,
        }
    )


async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    users = await request.app[ACCOUNTS].list_users()
    return json_ok({"users": [u.public() for u in users]})


async def add_user(request: web.Request) -> web.Response:
    require_admin_session(request)
    data = await read_json(request)
    user = await request.app[ACCOUNTS].add_user(
        field(data, "name"), field(data, "password"), field(data, "role", default="member")
    )
    return json_ok({"user": user.public()}, status=201)


def _token_owner(request: web.Request) -> str:
    """The user named in the path, if the requester is an admin or that user, logged in
    with a browser session (or the node's admin token): see :func:`require_session`."""
    who = require_session(request)
    name = request.match_info["name"]
    if not who.is_admin and (who.user is None or who.user.name != name):
        raise Forbidden("you may only manage your own tokens")
    return name


async def create_token(request: web.Request) -> web.Response:
    name = _token_owner(request)
    data = await read_json(request) if request.can_read_body else {}
    token = await request.app[ACCOUNTS].create_token(
        name, field(data, "label", default="cli"), field(data, "expires_days", int, default=None)
    )
    return json_ok({"token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    return json_ok({"tokens": await request.app[ACCOUNTS].list_tokens(_token_owner(request))})


async def revoke_token(request: web.Request) -> web.Response:
    name = _token_owner(request)
    token_id = parse_int(request.match_info["id"])
    if token_id is None:
        raise NotFound("a token id is a positive integer")
    await request.app[ACCOUNTS].revoke_token(name, token_id)
    return json_ok({"revoked": token_id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/auth/login", login)
    app.router.add_post("/api/auth/logout", logout)
    app.router.add_post("/api/auth/signup", signup)
    app.router.add_get("/api/auth/registration", registration)
    app.router.add_post("/api/admin/invites", create_invite)
    app.router.add_get("/api/admin/invites", list_invites)
    app.router.add_delete("/api/admin/invites/{id}", revoke_invite)
    app.router.add_get("/api/auth/me", me)
    app.router.add_post("/api/auth/rotate-key", rotate_key)
    app.router.add_get("/api/admin/users", list_users)
    app.router.add_post("/api/admin/users", add_user)
    app.router.add_post("/api/admin/users/{name}/tokens", create_token)
    app.router.add_get("/api/admin/users/{name}/tokens", list_tokens)
    app.router.add_delete("/api/admin/users/{name}/tokens/{id}", revoke_token)
