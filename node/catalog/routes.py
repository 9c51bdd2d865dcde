"""Catalog HTTP routes: the Civitai-compatible read API, downloads, images, publishing."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, StreamReader, web

from node.catalog.civitai import (
    DOWNLOAD_CHOICES,
    civitai_model,
    civitai_version,
    download_choice,
    primary_files_only,
    safe_images_only,
)
from node.catalog.ids import BITS
from node.catalog.image_search import IMAGE_SORTS, ImageQuery, nsfw_ratings
from node.catalog.images import MAX_IMAGE_BYTES, preview_width, resized
from node.catalog.progress import Progress, sse_events
from node.catalog.search import PERIODS, SearchQuery
from node.catalog.service import MAX_PREVIEWS, CatalogService
from node.catalog.views import FileChoice
from node.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from node.http import (
    json_ok,
    parse_json,
    read_json,
    require_admin,
    require_user,
    upload_filename,
)
from node.p2p.records import now_ms
from node.p2p.torrent_routes import TORRENT_INDEX

CATALOG = web.AppKey("catalog", CatalogService)
CIVITAI_SORTS = {
    "Newest": "newest",
    "Most Downloaded": "most_downloaded",
    "Highest Rated": "highest_rated",
    "Name": "name",
}
MAX_IMAGE_UPLOAD = MAX_IMAGE_BYTES  # one preview part; the app's 1 MiB body cap is for JSON
MAX_PREVIEW_TOTAL = 64 * 1024 * 1024  # all preview parts of one upload, held in memory
UPLOAD_CHUNK = 1024 * 1024
SAFE_RATINGS = ["PG", "PG13"]


def _int(
    request: web.Request, name: str, default: int | None = None, *, lo: int = 1, hi: int = 2**53
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be from {lo} to {hi}")
    return value


def _list(request: web.Request, name: str) -> list[str]:
    return [
        v.strip() for raw in request.query.getall(name, []) for v in raw.split(",") if v.strip()
    ]


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false")


def int_id(raw: str | None) -> int | None:
    """A Civitai integer id as written in a URL, or None: ids are 53-bit (ids.py), so
    anything else (a sign, non-ASCII digits, 10**40) names nothing and never reaches SQL."""
    if not raw or not (raw.isascii() and raw.isdigit()) or len(raw) > 16:
        return None
    value = int(raw)
    return value if value < 1 << BITS else None


def _path_int(request: web.Request, name: str) -> int:
    value = int_id(request.match_info[name])
    if value is None:
        raise NotFound(f"no such {name}")
    return value


# --- Civitai-compatible read API ----------------------------------------------------------


def _ids(request: web.Request, name: str) -> list[int]:
    """Integer ids, comma-separated or repeated; one that is not an id is a 400."""
    out = []
    for raw in _list(request, name):
        value = int_id(raw)
        if value is None:
            raise BadRequest(f"{name} must be integer ids, comma-separated or repeated")
        out.append(value)
    return out


def _choice(request: web.Request, name: str, choices: Any, default: str | None = None) -> Any:
    raw = request.query.get(name) or default
    if raw is not None and raw not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return raw


def _since(request: web.Request) -> int | None:
    """``period`` as the earliest publication time it keeps (unix ms; a model: of a
    version, an image: its own); AllTime: None."""
    age = PERIODS[_choice(request, "period", PERIODS, "AllTime")]
    return None if age is None else now_ms() - age


def _ratings(request: web.Request) -> tuple[list[str], int | None]:
    """(content ratings, star rating). ``rating`` is Civitai's star rating (0-5, a
    fraction rounded down as Civitai does: 4.5 is 4); the content rating is
    ``contentRating`` (PG, PG13, R, X). A ``rating`` of content rating names (how this
    node read it before) is still read as content ratings."""
    content = _list(request, "contentRating")
    stars = None
    for value in _list(request, "rating"):
        if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,6})?", value):
            stars = math.floor(float(value))
        else:
            content.append(value)
    return content, stars


def _owner(request: web.Request, name: str) -> str | None:
    """For ``favorites``/``hidden``: the did whose list is asked for, or None when not
    asked. Civitai answers these for the authenticated user only: anonymous gets 401."""
    if not _bool(request, name):
        return None
    who = require_user(request)
    return str(who.user.did) if who.user is not None else "node-admin"


def _paging(request: web.Request, page: int, limit: int, total: int) -> dict[str, Any]:
    """Civitai's page-based metadata: totals, and the next and previous pages' URLs."""
    pages = -(-total // limit)
    out: dict[str, Any] = {
        "totalItems": total,
        "currentPage": page,
        "pageSize": limit,
        "totalPages": pages,
    }
    params = {k: v for k, v in request.query.items() if k not in ("cursor", "page")}
    if page < pages:
        out["nextPage"] = str(request.url.with_query({**params, "page": str(page + 1)}))
    if page > 1:
        out["prevPage"] = str(request.url.with_query({**params, "page": str(page - 1)}))
    return out


async def list_models(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    sort = request.query.get("sort", "Newest")
    if sort not in CIVITAI_SORTS:
        raise BadRequest(f"sort must be one of {', '.join(CIVITAI_SORTS)}")
    limit = _int(request, "limit", 20, hi=100)
    nsfw = _bool(request, "nsfw")
    content, stars = _ratings(request)
    text = request.query.get("query") or None
    ids = _ids(request, "ids")  # checked either way; Civitai ignores it beside a query
    query = SearchQuery(
        text=text,
        types=_list(request, "types"),
        base_models=_list(request, "baseModels"),
        ratings=content or (SAFE_RATINGS if nsfw is False else []),
        username=request.query.get("username") or None,
        tag=request.query.get("tag") or None,
        sort=CIVITAI_SORTS[sort],  # type: ignore[arg-type]
        limit=limit or 20,
        cursor=request.query.get("cursor") or None,
        ids=[] if text else ids,
        min_stars=stars,
        published_since=_since(request),
        favorites_of=_owner(request, "favorites"),
        hidden_by=_owner(request, "hidden"),
        supports_generation=_bool(request, "supportsGeneration"),
        allow_no_credit=_bool(request, "allowNoCredit"),
        allow_derivatives=_bool(request, "allowDerivatives"),
        allow_different_license=_bool(request, "allowDifferentLicenses"),
        commercial_uses=_list(request, "allowCommercialUse"),
    )
    page = _int(request, "page", None)
    if page is not None and query.cursor is None:
        query.offset = (page - 1) * query.limit
    items, cursor = await catalog.search(query)
    if _bool(request, "primaryFileOnly"):
        items = [primary_files_only(m) for m in items]
    metadata: dict[str, Any] = {"pageSize": query.limit}
    if page is not None and query.cursor is None:  # page-based: Civitai gives totals
        total = await catalog.search_index.count(query)
        metadata.update(_paging(request, page, query.limit, total))
    elif cursor:
        metadata["nextCursor"] = cursor
        params = {k: v for k, v in request.query.items() if k not in ("cursor", "page")}
        params["cursor"] = cursor
        metadata["nextPage"] = str(request.url.with_query(params))
    shaped = [civitai_model(m) for m in items]
    if nsfw is False:  # Civitai: "returns safer images" too, not only safer models
        shaped = [safe_images_only(m, SAFE_RATINGS) for m in shaped]
    shaped = await catalog.views.with_blurhashes(shaped)
    return json_ok({"items": shaped, "metadata": metadata})


async def get_model(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    root = await catalog.views.root_for_int(_path_int(request, "id"))
    found = await catalog.views.models_by_root([root]) if root else []
    if not found:
        raise NotFound("no such model")
    return json_ok((await catalog.views.with_blurhashes([civitai_model(found[0])]))[0])


async def get_version(request: web.Request) -> web.Response:
    views = request.app[CATALOG].views
    version = await views.version(_path_int(request, "id"))
    if version is None:
        raise NotFound("no such model version")
    return json_ok((await views.with_blurhashes([civitai_version(version)]))[0])


async def version_by_hash(request: web.Request) -> web.Response:
    views = request.app[CATALOG].views
    version = await views.version_by_hash(request.match_info["hash"])
    if version is None:
        raise NotFound("no model version has a file with this hash")
    return json_ok((await views.with_blurhashes([civitai_version(version)]))[0])


async def versions_by_hashes(request: web.Request) -> web.Response:
    hashes = parse_json(await request.read(), "a JSON list of SHA256 hashes")
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise BadRequest("send a JSON list of SHA256 hashes")
    if len(hashes) > 100:
        raise BadRequest("at most 100 hashes per request")
    views = request.app[CATALOG].views
    found = await views.versions_by_sha256(hashes)
    return json_ok(await views.with_blurhashes([civitai_version(v) for v in found]))


async def list_images(request: web.Request) -> web.Response:
    limit = _int(request, "limit", 100, hi=200) or 100
    page = _int(request, "page", 1) or 1
    sort = _choice(request, "sort", IMAGE_SORTS, "Newest")
    query = ImageQuery(
        version_int=_int(request, "modelVersionId"),
        model_int=_int(request, "modelId"),
        post_id=_int(request, "postId"),
        ratings=nsfw_ratings(request.query.get("nsfw")),
        created_since=_since(request),
        sort=IMAGE_SORTS[sort],
        limit=limit,
        page=page,
        cursor=request.query.get("cursor") or None,
    )
    items, cursor = await request.app[CATALOG].views.image_list(
        query,
        username=request.query.get("username") or None,
        with_meta=_bool(request, "withMeta") is not False,
    )
    metadata: dict[str, Any] = {"pageSize": limit}
    if query.cursor is None:
        metadata["currentPage"] = page
    if cursor:
        params = {k: v for k, v in request.query.items() if k not in ("cursor", "page")}
        metadata["nextCursor"] = cursor
        metadata["nextPage"] = str(request.url.with_query({**params, "cursor": cursor}))
    items = await request.app[CATALOG].views.with_blurhashes(items)
    return json_ok({"items": items, "metadata": metadata})


async def list_creators(request: web.Request) -> web.Response:
    views = request.app[CATALOG].views
    limit = _int(request, "limit", 20, hi=200) or 20
    page = _int(request, "page", 1) or 1
    query = request.query.get("query") or None
    items = await views.creators(query, limit, page)
    metadata = _paging(request, page, limit, await views.creator_count(query))
    return json_ok({"items": items, "metadata": metadata})


async def list_tags(request: web.Request) -> web.Response:
    views = request.app[CATALOG].views
    limit = _int(request, "limit", 20, hi=200) or 20
    page = _int(request, "page", 1) or 1
    query = request.query.get("query") or None
    items = await views.tags(query, limit, page)
    metadata = _paging(request, page, limit, await views.tag_count(query))
    return json_ok({"items": items, "metadata": metadata})


# --- files ----------------------------------------------------------------------------------


async def download(request: web.Request) -> web.StreamResponse:
    catalog = request.app[CATALOG]
    choice = FileChoice(
        **{name: download_choice(name, request.query.get(name)) for name in DOWNLOAD_CHOICES}
    )
    row = await catalog.views.version_file(_path_int(request, "id"), choice)
    if row is None:
        if choice != FileChoice() and await catalog.views.primary_file(_path_int(request, "id")):
            raise NotFound("no file of this version has that type, format, size and fp")
        raise NotFound("no such model version")
    await request.app[TORRENT_INDEX].check(row.sha256)  # taken down: no bytes, no magnet
    path = await catalog.store.local_path(row.sha256)
    if path is None:
        seed = await catalog.fetcher.peer_web_seed(row.sha256)
        if seed is not None:  # a peer holds it: send the client there
            raise web.HTTPFound(seed)
        magnet = catalog.views.magnet_for(row) if row.infohash else None
        return web.json_response(
            {
                "error": "not_found",
                "message": "this node does not hold the file; fetch it over BitTorrent",
                "magnet": magnet,
            },
            status=404,
        )
    if request.method == "GET" and "Range" not in request.headers:
        await catalog.views.count_download(row.vid)
    disposition = f"attachment; filename*=UTF-8''{_quote(row.name)}"
    return web.FileResponse(path, headers={"Content-Disposition": disposition})


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


async def image(request: web.Request) -> web.StreamResponse:
    catalog = request.app[CATALOG]
    sha256 = request.match_info["sha256"].upper()
    row = await catalog.views.image_by_sha(sha256)  # a shown image, not a model file
    path = await catalog.store.public_path(sha256) if row else None
    if row is None or path is None:
        raise NotFound("no such image")
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    transform = request.match_info["transform"]
    width = None
    for part in transform.split(","):
        if part.startswith("width="):
            try:
                width = int(part[len("width=") :])
            except ValueError:
                raise NotFound("bad width") from None
    if width is not None and width < 1:
        raise NotFound("width must be a positive number of pixels")
    # Only a few widths are made (a request is rounded up to one); else the original.
    served = preview_width(width, row.width, row.height, row.mime) if width else None
    if served is None:
        return web.FileResponse(path, headers={**headers, "Content-Type": row.mime})
    data = await catalog.previews.get(sha256, path, served, resized)
    return web.Response(body=data, content_type=row.mime, headers=headers)


# --- publishing -------------------------------------------------------------------------------


def _author(request: web.Request, data: dict[str, Any]) -> str:
    """The did that signs: the logged-in user's, or (node admin) the named user's."""
    who = require_user(request)
    if who.user is not None:
        return str(who.user.did)
    raise BadRequest("the node's admin token publishes for a user: name it in 'user'")


async def publish_path(request: web.Request) -> web.Response:
    who = require_admin(request)
    data = await read_json(request)
    path = data.get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest("'path' (a file on the node's disk) is required")
    if who.user is not None and "user" not in data:
        did = who.user.did
    else:
        name = data.get("user")
        if not isinstance(name, str):
            raise BadRequest("'user' (who publishes) is required")
        did = (await request.app[CATALOG].accounts.get_user(name)).did
    previews = data.get("images", [])
    if not isinstance(previews, list) or not all(isinstance(p, str) for p in previews):
        raise BadRequest("'images' must be a list of paths")
    result = await request.app[CATALOG].publish_path(
        did, Path(path), data, [Path(p) for p in previews]
    )
    return json_ok(result, status=201 if result["created"] else 200)


async def publish_upload(request: web.Request) -> web.Response:
    """multipart/form-data: a ``metadata`` JSON part, then ``image`` parts, then ``file``.

    With ``?upload=ID`` its progress can be watched at ``/api/uploads/{ID}/events``.
    """
    who = require_user(request)
    progress = request.app[CATALOG].uploads.start(
        request.query.get("upload"),
        who.user.did if who.user is not None else None,
        request.content_length,
    )
    with progress.failing():
        # The slot is taken before a byte of the body is read (previews are held in memory),
        # and the whole body, every part, must keep up the minimum rate.
        account = who.user.did if who.user is not None else None  # None: the node admin
        async with request.app[CATALOG].publisher.slots.upload(account, request.content):
            result = await _publish_multipart(request, progress)
        progress.done(
            modelId=result["model"]["id"], sha256=result["sha256"], created=result["created"]
        )
    return json_ok(result, status=201 if result["created"] else 200)


async def _publish_multipart(request: web.Request, progress: Progress) -> dict[str, Any]:
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send multipart/form-data: metadata, image…, then file")
    reader = await request.multipart()
    data: dict[str, Any] = {}
    images: list[bytes] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart is not supported")
        if part.name == "metadata":
            data = parse_json(await part.read(decode=True), "the metadata part")
            if not isinstance(data, dict):
                raise BadRequest("the metadata part must be a JSON object")
        elif part.name == "image":
            images.append(await read_preview(part, images))
            progress.receive(request.content.total_bytes)
        elif part.name == "file":
            filename = upload_filename(part.filename, "model.safetensors")
            if "model_id" not in data and "model_id" in request.match_info:
                data["model_id"] = _path_int(request, "model_id")
            return await request.app[CATALOG].publish_upload(
                _author(request, data),
                filename,
                _chunks(part, progress, request.content),
                data,
                images,
                expected_size=request.content_length,
            )
        else:
            raise BadRequest(f"unexpected part {part.name!r}")
    raise BadRequest("no 'file' part")


async def read_preview(part: BodyPartReader, previous: list[bytes]) -> bytes:
    """One preview image part, read in chunks up to the image cap.

    ``part.read()`` would stop at the app's ``client_max_size`` (1 MiB, meant for JSON).
    The count of previews and their total are checked too, before more is read.
    """
    if len(previous) >= MAX_PREVIEWS:
        raise BadRequest(f"at most {MAX_PREVIEWS} preview images")
    room = min(MAX_IMAGE_UPLOAD, MAX_PREVIEW_TOTAL - sum(map(len, previous)))
    data = bytearray()
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        data += chunk
        if len(data) > room:
            raise PayloadTooLarge(
                f"a preview image is limited to {MAX_IMAGE_UPLOAD // 2**20} MiB and all of an "
                f"upload's previews to {MAX_PREVIEW_TOTAL // 2**20} MiB"
            )
    return bytes(data)


async def _chunks(
    part: BodyPartReader, progress: Progress, body: StreamReader
) -> AsyncIterator[bytes]:
    """The file part's bytes, counting what the request has delivered so far."""
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        progress.receive(body.total_bytes)
        yield bytes(chunk)
    progress.set_stage("checking")


async def upload_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: an upload's stage and bytes received, until it finishes."""
    who = require_user(request)
    progress = await request.app[CATALOG].uploads.watch(
        request.match_info["id"],
        who.user.did if who.user is not None else None,
        admin=who.is_admin,
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
        }
    )
    await response.prepare(request)
    try:
        async for message in sse_events(progress):
            await response.write(message)
    except ConnectionResetError:
        pass  # the watcher went away
    return response


async def edit_model(request: web.Request) -> web.Response:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("edit as the model's author (log in or use their API token)")
    data = await read_json(request)
    model = await request.app[CATALOG].edit_model(who.user.did, _path_int(request, "id"), data)
    return json_ok(model)


async def withdraw_model(request: web.Request) -> web.Response:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("withdraw as the model's author (log in or use their API token)")
    data = await read_json(request) if request.can_read_body else {}
    model_id = _path_int(request, "id")
    await request.app[CATALOG].withdraw_model(who.user.did, model_id, data.get("reason"))
    return json_ok({"withdrawn": model_id})


# --- fetching over BitTorrent ------------------------------------------------------------


async def start_fetch(request: web.Request) -> web.Response:
    require_admin(request)
    data = await read_json(request)
    target = data.get("target")
    if not isinstance(target, str) or not target:
        raise BadRequest("'target' (a magnet link, model version id or SHA256) is required")
    nodes = data.get("from", [])
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise BadRequest("'from' must be a list of node URLs")
    if any(not n.startswith(("http://", "https://")) for n in nodes):
        raise BadRequest("'from' URLs must be http:// or https://")
    status = await request.app[CATALOG].fetcher.fetch(target, nodes)
    return json_ok(status, status=202)


async def list_downloads(request: web.Request) -> web.Response:
    require_admin(request)
    fetcher = request.app[CATALOG].fetcher
    return json_ok({"downloads": await fetcher.list_downloads(), "torrents": fetcher.seeding()})


async def get_download(request: web.Request) -> web.Response:
    require_admin(request)
    return json_ok(await request.app[CATALOG].fetcher.describe(request.match_info["infohash"]))


# --- CORS for the public read API -----------------------------------------------------

PUBLIC_READ = "/api/v1/"
CORS_METHODS = ("GET", "HEAD", "OPTIONS")


async def public_read_cors(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: browser tools on any origin may read the Civitai-compatible
    API. Only reads: never Allow-Credentials, so a browser never sends its cookies along
    (a site cannot read anything as a logged-in visitor) and nothing here writes. A
    refused preflight (a write asked for) gets no Allow-Origin either."""
    if not request.path.startswith(PUBLIC_READ) or request.method not in CORS_METHODS:
        return
    if request.method == "OPTIONS" and response.status != 204:
        return
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "Content-Disposition"


async def preflight(request: web.Request) -> web.Response:
    """A browser's CORS preflight for a read (a token may ride in Authorization). One
    for any other method (POST /api/v1/model-versions/by-hash included) is refused:
    cross-origin pages only read."""
    wanted = request.headers.get("Access-Control-Request-Method", "GET").upper()
    if wanted not in ("GET", "HEAD"):
        raise Forbidden("cross-origin requests may only read (GET, HEAD) the /api/v1 API")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, HEAD",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "86400",
        },
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    app.on_response_prepare.append(public_read_cors)
    r.add_route("OPTIONS", PUBLIC_READ + "{tail:.*}", preflight)
    r.add_get("/api/v1/models", list_models)
    r.add_get("/api/v1/models/{id}", get_model)
    r.add_get("/api/v1/model-versions/by-hash/{hash}", version_by_hash)
    r.add_post("/api/v1/model-versions/by-hash", versions_by_hashes)
    r.add_get("/api/v1/model-versions/{id}", get_version)
    r.add_get("/api/v1/images", list_images)
    r.add_get("/api/v1/creators", list_creators)
    r.add_get("/api/v1/tags", list_tags)
    r.add_get("/api/download/models/{id}", download)
    r.add_get("/images/{sha256}/{transform}/{name}", image)
    r.add_post("/api/models", publish_upload)
    r.add_post("/api/models/publish-path", publish_path)
    r.add_post("/api/models/{model_id}/versions", publish_upload)
    r.add_get("/api/uploads/{id}/events", upload_events)
    r.add_patch("/api/models/{id}", edit_model)
    r.add_delete("/api/models/{id}", withdraw_model)
    r.add_post("/api/downloads", start_fetch)
    r.add_get("/api/downloads", list_downloads)
    r.add_get("/api/downloads/{infohash:[0-9a-f]{40}}", get_download)
