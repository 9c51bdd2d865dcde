"""Account pages of the web UI: log in and out with an HTML form, viewing preferences."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NoReturn

from aiohttp import web

from node.accounts.passwords import MIN_PASSWORD
from node.accounts.routes import (
    ACCOUNTS,
    FORM_FIELD,
    SIGNUPS,
    check_form_token,
    end_session,
    require_session,
    set_session_cookie,
)
from node.errors import BadRequest, CivitasError, NotFound, TooManyRequests, Unauthorized
from node.http import local_path, parse_int
from node.ratelimit import client_key
from node.render import RATING_COOKIE, RENDERER, page

PREFERENCE_SECONDS = 365 * 24 * 3600


@page
async def login_form(request: web.Request) -> web.StreamResponse:
    return request.app[RENDERER].render(
        request,
        "login.html",
        title="Log in",
        next=local_path(request.query.get("next")),
        username="",
        error=None,
        registration=request.app[SIGNUPS].registration,
    )


def _signup_page(
    request: web.Request, *, status: int = 200, error: str | None = None, **form: str
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "signup.html",
        status=status,
        title="Sign up",
        next=form.get("next", "/"),
        username=form.get("username", ""),
        invite=form.get("invite", ""),
        error=error,
        registration=request.app[SIGNUPS].registration,
        min_password=MIN_PASSWORD,
    )


@page
async def signup_form(request: web.Request) -> web.StreamResponse:
    return _signup_page(
        request,
        next=local_path(request.query.get("next")),
        invite=request.query.get("invite", "")[:100],  # an invite link fills it in
    )


@page
async def signup(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    fields = {k: _text(form, k) for k in ("username", "invite")}
    target = local_path(_text(form, "next"))
    try:
        session_id, _user = await request.app[SIGNUPS].sign_up(
            fields["username"],
            _text(form, "password"),
            fields["invite"] or None,
            client_key(request),
        )
    except CivitasError as exc:
        form_page = _signup_page(
            request, status=exc.status, error=exc.message, next=target, **fields
        )
        return _refused(form_page, exc)
    _logged_in(request, session_id, target)


@page
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    username, target = _text(form, "username"), local_path(_text(form, "next"))
    try:
        session_id, _user = await request.app[ACCOUNTS].login(
            username, _text(form, "password"), client_key(request)
        )
    except (Unauthorized, TooManyRequests) as exc:
        answer = request.app[RENDERER].render(
            request,
            "login.html",
            status=exc.status,
            title="Log in",
            next=target,
            username=username,
            error=exc.message,
            registration=request.app[SIGNUPS].registration,
        )
        return _refused(answer, exc)
    _logged_in(request, session_id, target)


def _refused(form_page: web.Response, exc: CivitasError) -> web.Response:
    """The form again, with the error; a 429 says when to try again."""
    if isinstance(exc, TooManyRequests):
        form_page.headers["Retry-After"] = str(exc.retry_after_s)
    return form_page


def _logged_in(request: web.Request, session_id: str, target: str) -> NoReturn:
    """Set the new session's cookie and send the browser on to ``target``."""
    response = web.HTTPSeeOther(target)
    set_session_cookie(request, response, session_id)
    raise response


@page
async def logout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    response = web.HTTPSeeOther("/")
    await end_session(request, response)
    raise response


@page
async def preferences(request: web.Request) -> web.StreamResponse:
    """Whether to show R and X content, remembered in a cookie (no account needed)."""
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    response = web.HTTPSeeOther(local_path(_text(form, "next")))
    choice = "all" if _text(form, "show_mature") == "1" else "safe"
    response.set_cookie(
        RATING_COOKIE,
        choice,
        max_age=PREFERENCE_SECONDS,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=request.secure,
    )
    raise response


@page
async def tokens_page(request: web.Request) -> web.StreamResponse:
    return await _tokens(request)


@page
async def create_token(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    name = _own_name(request)
    days_text = _text(form, "expires_days").strip()
    days = parse_int(days_text, 1) if days_text else None
    if days_text and days is None:
        return await _tokens(request, status=400, error="expiry: a number of days, or empty")
    try:
        token = await request.app[ACCOUNTS].create_token(name, _text(form, "label"), days)
    except BadRequest as exc:
        return await _tokens(request, status=400, error=exc.message)
    return await _tokens(request, status=201, new_token=token)


@page
async def revoke_token(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    name = _own_name(request)
    token_id = parse_int(request.match_info["id"])
    if token_id is None:
        raise NotFound("a token id is a positive integer")
    await request.app[ACCOUNTS].revoke_token(name, token_id)
    raise web.HTTPSeeOther("/account/tokens")


def _own_name(request: web.Request) -> str:
    """The logged-in user managing their tokens: a browser session, not an API token."""
    who = require_session(request)
    if who.user is None:
        raise Unauthorized("log in to manage your API tokens")
    return str(who.user.name)


async def _tokens(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    name = _own_name(request)
    tokens = await request.app[ACCOUNTS].list_tokens(name)
    for t in tokens:
        t["created_text"] = _date(t["created"])
        t["expires_text"] = _date(t["expires"]) if t["expires"] else "never"
    return request.app[RENDERER].render(
        request,
        "account/tokens.html",
        status=status,
        title="API tokens",
        name=name,
        tokens=tokens,
        error=context.get("error"),
        new_token=context.get("new_token"),
    )


def _date(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_get("/signup", signup_form)
    app.router.add_post("/signup", signup)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/preferences", preferences)
    app.router.add_get("/account/tokens", tokens_page)
    app.router.add_post("/account/tokens", create_token)
    app.router.add_post("/account/tokens/{id}/revoke", revoke_token)
