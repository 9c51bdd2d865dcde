"""Server-rendered pages: the Jinja2 environment, security headers, page helpers.

Templates live in the repository's ``web/templates`` (static files in ``web/static``);
a wheel ships them inside the package as ``node/web`` (see :func:`web_dir`).
Every string a template prints is escaped; Markdown is rendered with markdown-it and
then sanitized with nh3, so user-written descriptions cannot carry script.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import nh3
from aiohttp import web
from markdown_it import MarkdownIt
from markupsafe import Markup

import node
from node.errors import CivitasError, ConfigError, Unauthorized
from node.http import FORM_COOKIE, principal

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
RATING_COOKIE = "civitas_ratings"
FLASH_COOKIE = "civitas_flash"
SAFE_RATINGS = ("PG", "PG13")
ALL_RATINGS = ("PG", "PG13", "R", "X")
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_markdown = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def web_dir() -> Path:
    """The web UI's templates and static assets.

    An installed wheel carries them inside the package (``node/web``, mapped from the
    repository's ``web/`` by setup.py); a checkout (``pip install -e .``, ``make run``)
    keeps them in the repository's ``web/`` beside ``node/``.
    """
    package = Path(node.__file__).resolve().parent
    candidates = (package / "web", package.parent / "web")
    for found in candidates:
        if (found / "templates").is_dir() and (found / "static").is_dir():
            return found
    raise ConfigError(
        f"the web UI's templates are in neither {candidates[0]} nor {candidates[1]}: "
        "reinstall Civitas (its wheel ships them as node/web)"
    )


def render_markdown(text: str | None) -> Markup:
    """Markdown (or the HTML Civitai descriptions carry) to sanitized HTML."""
    html = nh3.clean(_markdown.render(text or ""), link_rel="noopener noreferrer nofollow ugc")
    return Markup(html)  # noqa: S704 - sanitized by nh3 just above


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # unreachable; keeps mypy sure of a return


def human_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def human_date(iso: str) -> str:
    try:
        return (
            datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).strftime("%d %b %Y")
        )
    except ValueError:
        return iso


def shown_ratings(request: web.Request) -> tuple[str, ...]:
    """Content ratings this visitor chose to see: PG and PG13 unless they opted in."""
    return ALL_RATINGS if request.cookies.get(RATING_COOKIE) == "all" else SAFE_RATINGS


def set_flash(response: web.StreamResponse, messages: list[str]) -> None:
    """Notes for the next page (warnings after publishing), shown once."""
    if messages:
        blob = base64.urlsafe_b64encode(json.dumps(messages[:8]).encode()).decode()
        response.set_cookie(FLASH_COOKIE, blob, httponly=True, samesite="Lax", max_age=120)


def _read_flash(request: web.Request) -> list[str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(request.cookies.get(FLASH_COOKIE, "")))
    except ValueError:
        return []
    return [str(m)[:500] for m in data][:8] if isinstance(data, list) else []


class Renderer:
    """Renders a template into an HTML response with the page's common context."""

    def __init__(self, root: Path, *, signup_open: Callable[[], bool] = lambda: False) -> None:
        self.static_dir = root / "static"
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            markdown=render_markdown, size=human_size, count=human_count, date=human_date
        )
        self.env.globals.update(
            static=self.static_url,
            quote=functools.partial(quote, safe=""),
            signup_open=signup_open,  # whether the nav offers "Sign up" beside "Log in"
        )
        self._versions: dict[str, str] = {}

    def static_url(self, name: str) -> str:
        """``/static/NAME?v=HASH``, so browsers fetch a changed file anew."""
        version = self._versions.get(name)
        if version is None:
            digest = hashlib.sha256((self.static_dir / name).read_bytes()).hexdigest()
            version = self._versions[name] = digest[:10]
        return f"/static/{name}?v={version}"

    def render(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        who = principal(request)
        token, new_token = who.csrf_token, False
        if token is None:
            token = request.cookies.get(FORM_COOKIE)
            if not token or len(token) > 64:
                token, new_token = secrets.token_urlsafe(24), True
        flash = _read_flash(request)
        html = self.env.get_template(template).render(
            who=who,
            csrf_token=token,
            path_qs=request.path_qs,
            show_mature=shown_ratings(request) == ALL_RATINGS,
            flash=flash,
            **context,
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "private, no-cache"
        if new_token:
            response.set_cookie(
                FORM_COOKIE, token, httponly=True, samesite="Lax", path="/", secure=request.secure
            )
        if flash:
            response.del_cookie(FLASH_COOKIE)
        return response


RENDERER = web.AppKey("renderer", Renderer)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: nosniff and referrer policy everywhere, CSP on HTML.

    Static files asked for by their versioned URL (see ``static_url``) never change.
    """
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
    elif request.path.startswith("/static/") and "v" in request.query and response.status == 200:
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"


def page(handler: PageHandler) -> PageHandler:
    """A page route: errors become an HTML error page; a needed login, a redirect to it."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Unauthorized as exc:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}") from None
            return render_error(request, exc)
        except CivitasError as exc:
            return render_error(request, exc)

    return wrapped


def render_error(request: web.Request, exc: CivitasError) -> web.Response:
    return request.app[RENDERER].render(
        request, "error.html", status=exc.status, title="Error", error=exc
    )
