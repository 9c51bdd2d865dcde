"""Atom feeds of the catalog, so feed readers can follow a node: the newest models,
the newest with a tag, and a creator's newest.

Each feed is the same search the browse page and ``GET /api/v1/models`` run (newest
first, at most ``MAX_ENTRIES``), so what a takedown, a withdrawal or a hidden author
keeps out of the catalog never appears here either. The XML is built with ElementTree
(every string escaped by it); a summary is the description as plain text, rendered and
sanitized as the model page shows it, then stripped of every tag.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from aiohttp import web

from node import __version__
from node.catalog.names import dids_named
from node.catalog.routes import CATALOG
from node.catalog.search import SearchQuery
from node.errors import BadRequest, NotFound
from node.p2p.routes import NODE_INFO
from node.render import ALL_RATINGS, SAFE_RATINGS, render_markdown

ATOM = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml"
MAX_ENTRIES = 50
MAX_SUMMARY = 1000  # characters of a summary; longer descriptions end with "…"
MAX_SEGMENT = 200  # characters of a tag or creator name in a feed's path
TYPE_SCHEME = "urn:civitas:model-type"
TAG_SCHEME = "urn:civitas:tag"
_BLOCKS = {"p", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "tr"}


class _Text(HTMLParser):
    """The text of sanitized HTML: character references decoded, tags dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        self.handle_endtag(tag)


def plain_text(markdown: str | None) -> str:
    """A description as one line of plain text (no markup, no script), at most
    ``MAX_SUMMARY`` characters."""
    parser = _Text()
    parser.feed(str(render_markdown(markdown)))  # nh3 drops <script> with its content
    parser.close()
    text = re.sub(r"\s+", " ", "".join(parser.parts)).strip()
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1].rstrip() + "…"


def _el(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, name, attrs)
    if text is not None:
        element.text = text
    return element


def _entry(feed: ET.Element, model: dict[str, Any], base: str) -> None:
    entry = _el(feed, "entry")
    civitas = model["civitas"]
    _el(entry, "title", model["name"], type="text")
    _el(entry, "link", rel="alternate", type="text/html", href=f"{base}/models/{model['id']}")
    # The root record's id names the model on every node of the federation alike.
    _el(entry, "id", f"urn:civitas:model:{civitas['rootId']}")
    _el(entry, "published", civitas["createdAt"])
    _el(entry, "updated", civitas["updatedAt"])
    author = _el(entry, "author")
    name = model["creator"]["username"]
    _el(author, "name", name)
    _el(author, "uri", f"{base}/creators/{quote(name, safe='')}")
    summary = plain_text(model["description"])
    if summary:
        _el(entry, "summary", summary, type="text")
    _el(entry, "category", term=model["type"], scheme=TYPE_SCHEME, label=model["type"])
    for tag in model["tags"]:
        _el(entry, "category", term=tag, scheme=TAG_SCHEME)


def atom(
    models: list[dict[str, Any]],
    *,
    title: str,
    feed_id: str,
    self_url: str,
    page_url: str,
    base: str,
) -> tuple[bytes, datetime]:
    """The Atom document of ``models`` (newest first) and when it last changed."""
    feed = ET.Element("feed", xmlns=ATOM)  # every element in the Atom namespace
    _el(feed, "title", title, type="text")
    _el(feed, "id", feed_id)
    stamps = [m["civitas"]["updatedAt"] for m in models]
    updated = (
        max(datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)
        if stamps
        else datetime.now(UTC)
    )
    _el(feed, "updated", updated.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    _el(feed, "link", rel="self", type=CONTENT_TYPE, href=self_url)
    _el(feed, "link", rel="alternate", type="text/html", href=page_url)
    _el(feed, "generator", "Civitas", version=__version__)
    for model in models:
        _entry(feed, model, base)
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body, updated


def _ratings(request: web.Request) -> list[str]:
    """PG and PG13, as the web UI shows a visitor; ``nsfw=true``: R and X too."""
    value = request.query.get("nsfw", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest("nsfw must be true or false")
    return list(ALL_RATINGS if value in ("true", "1") else SAFE_RATINGS)


def _segment(request: web.Request, key: str) -> str:
    value = request.match_info[key].strip()
    if not value or len(value) > MAX_SEGMENT:
        raise BadRequest(f"a {key} is 1 to {MAX_SEGMENT} characters")
    return value


async def _feed(
    request: web.Request, query: SearchQuery, *, title: str, kind: str, page_url: str
) -> web.Response:
    catalog = request.app[CATALOG]
    info = request.app[NODE_INFO]
    base = catalog.views.base_url
    query.sort, query.limit, query.ratings = "newest", MAX_ENTRIES, _ratings(request)
    models, _ = await catalog.search(query)
    body, updated = atom(
        models,
        title=f"{info.name}: {title}",
        feed_id=f"urn:civitas:feed:{info.did}:{kind}",
        self_url=f"{base}{request.rel_url.raw_path_qs}",
        page_url=f"{base}{page_url}",
        base=base,
    )
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(updated.astimezone(UTC), usegmt=True),
        "Cache-Control": "no-cache",  # revalidated (304): a withdrawal shows at once
    }
    wanted = {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}
    if etag in wanted or f"W/{etag}" in wanted or "*" in wanted:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=body, headers={**headers, "Content-Type": f"{CONTENT_TYPE}; charset=utf-8"}
    )


async def new_models(request: web.Request) -> web.Response:
    return await _feed(request, SearchQuery(), title="newest models", kind="new", page_url="/")


async def tag_models(request: web.Request) -> web.Response:
    tag = _segment(request, "tag").lower()
    return await _feed(
        request,
        SearchQuery(tag=tag),
        title=f"models tagged “{tag}”",
        kind=f"tag:{quote(tag, safe='')}",
        page_url=f"/?tag={quote(tag, safe='')}",
    )


async def creator_models(request: web.Request) -> web.Response:
    name = _segment(request, "name")
    async with request.app[CATALOG].views.db.read() as conn:
        known = await dids_named(conn, name)
    if not known:
        raise NotFound(f"there is no creator {name!r} on this node")
    return await _feed(
        request,
        SearchQuery(username=name),
        title=f"models by {name}",
        kind=f"creator:{quote(name, safe='')}",
        page_url=f"/creators/{quote(name, safe='')}",
    )


def feed_url(*, tag: str | None = None, creator: str | None = None) -> str:
    """The site-relative URL of a feed, for a page's ``<link rel="alternate">``."""
    if creator is not None:
        return f"/feeds/creators/{quote(creator, safe='')}.atom"
    if tag is not None:
        return f"/feeds/tags/{quote(tag.lower(), safe='')}.atom"
    return "/feeds/new.atom"


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/feeds/new.atom", new_models)
    r.add_get("/feeds/tags/{tag}.atom", tag_models)
    r.add_get("/feeds/creators/{name}.atom", creator_models)
