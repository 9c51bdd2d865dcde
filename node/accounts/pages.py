"""Account pages of the web UI: log in and out with an HTML form, viewing preferences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from node.accounts.routes import (
    ACCOUNTS,
    FORM_FIELD,
    check_form_token,
    end_session,
    set_session_cookie,
)
from node.errors import TooManyRequests, Unauthorized
from node.http import client_address, local_path
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
    )


@page
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    check_form_token(request, _text(form, FORM_FIELD))
    username, target = _text(form, "username"), local_path(_text(form, "next"))
    try:
        session_id, _user = await request.app[ACCOUNTS].login(
            username, _text(form, "password"), client_address(request)
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
        )
        if isinstance(exc, TooManyRequests):
            answer.headers["Retry-After"] = str(exc.retry_after_s)
        return answer
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


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/preferences", preferences)
