"""Catalog pages of the web UI: browse, model, image, creator, tags, publish and edit.

Thin like the JSON routes: each page calls the same CatalogService and CatalogViews
methods the API does and hands Civitai-shaped dicts to a template. Publishing without
JavaScript is a normal multipart POST here, streamed into ``publish_upload``; with
JavaScript the page uploads to ``POST /api/models`` instead, with a progress bar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web
from multidict import MultiDict, MultiDictProxy

from node.accounts.routes import FORM_FIELD, PENDING_SESSION, check_form_token
from node.catalog import feeds
from node.catalog.detect import BASE_MODELS
from node.catalog.genmeta import format_a1111
from node.catalog.routes import CATALOG, UPLOAD_CHUNK, int_id, read_preview
from node.catalog.schemas import MODEL_TYPES, RATINGS
from node.catalog.search import SORTS, SearchQuery
from node.catalog.service import MAX_PREVIEWS
from node.errors import BadRequest, CivitasError, Forbidden, NotFound, PayloadTooLarge
from node.http import principal, require_user
from node.render import RENDERER, page, set_flash, shown_ratings

PAGE_SIZE = 24
CARD_WIDTH = 450  # one of images.PREVIEW_WIDTHS (Civitai cards ask for 450 too)
MAX_FIELD = 64 * 1024
SORT_LABELS = {"newest": "Newest", "most_downloaded": "Most downloaded", "name": "Name"}
# Civitai's plain words for a model's permissions, as form fields: (label, field, value).
PERMISSIONS = (
    ("Use the model without crediting the creator", "allow_no_credit", "1"),
    ("Sell images they generate", "allow_commercial_use", "Image"),
    ("Run on services that generate images for money", "allow_commercial_use", "Rent"),
    ("Run on Civitas nodes' generation services", "allow_commercial_use", "RentCivit"),
    ("Share merges using this model", "allow_derivatives", "1"),
    ("Sell this model or merges", "allow_commercial_use", "Sell"),
    ("Have different permissions when sharing merges", "allow_different_license", "1"),
)
_FLAGS = {
    "allow_no_credit": "allowNoCredit",
    "allow_derivatives": "allowDerivatives",
    "allow_different_license": "allowDifferentLicense",
}
FORM_CHOICES: dict[str, Any] = {
    "types": MODEL_TYPES,
    "base_models": BASE_MODELS,
    "ratings": RATINGS,
    "permissions": PERMISSIONS,
}


def image_src(image: dict[str, Any], width: int | None = None) -> str:
    """A site-relative URL of an image (the API's URLs carry the node's public base)."""
    name = str(image["url"]).rsplit("/", 1)[-1]
    transform = f"width={width}" if width and width < image["width"] else "original=true"
    return f"/images/{image['civitas']['sha256']}/{transform}/{name}"


def permissions(model: dict[str, Any]) -> list[tuple[str, bool]]:
    """Each permission in plain words, and whether the creator grants it."""
    uses = set(model["allowCommercialUse"])
    return [
        (label, value in uses if name == "allow_commercial_use" else bool(model[_FLAGS[name]]))
        for label, name, value in PERMISSIONS
    ]


def checked(pairs: Any) -> set[str]:
    """``field=value`` of the ticked permission boxes, from a form or a model's grants."""
    return {f"{name}={value}" for name, value in pairs}


def card(model: dict[str, Any]) -> dict[str, Any]:
    versions = model["modelVersions"]
    images = [i for v in versions for i in v["images"]]
    return {
        "id": model["id"],
        "name": model["name"],
        "type": model["type"],
        "base_model": versions[0]["baseModel"] if versions else None,
        "creator": model["creator"]["username"],
        "rating": model["civitas"]["rating"],
        "downloads": model["stats"]["downloadCount"],
        "preview": image_src(images[0], CARD_WIDTH) if images else None,
    }


# --- browsing ---------------------------------------------------------------------------


async def _listing(
    request: web.Request, heading: str, username: str | None = None, feed: str | None = None
) -> web.Response:
    q = request.query
    shown = shown_ratings(request)
    sort = q.get("sort", "newest")
    query = SearchQuery(
        text=q.get("q") or None,
        types=[q["type"]] if q.get("type") in MODEL_TYPES else [],
        base_models=[q["base"]] if q.get("base") else [],
        ratings=[q["rating"]] if q.get("rating") in shown else list(shown),
        username=username,
        tag=q.get("tag") or None,
        sort=sort if sort in SORTS else "newest",
        limit=PAGE_SIZE,
        cursor=q.get("cursor") or None,
    )
    items, cursor = await request.app[CATALOG].search(query)
    params = {k: v for k, v in q.items() if k != "cursor" and v}
    return request.app[RENDERER].render(
        request,
        "browse.html",
        title=heading,
        heading=heading,
        cards=[card(m) for m in items],
        query=params,
        shown_ratings=shown,
        sorts=SORT_LABELS,
        next_url=f"{request.path}?{urlencode({**params, 'cursor': cursor})}" if cursor else None,
        first_url=f"{request.path}?{urlencode(params)}" if query.cursor else None,
        feed_url=feed,
        **FORM_CHOICES,
    )


@page
async def browse(request: web.Request) -> web.StreamResponse:
    tag = request.query.get("tag")
    heading = f"Models tagged “{tag}”" if tag else "Models"
    return await _listing(request, heading, feed=feeds.feed_url(tag=tag or None))


@page
async def creator(request: web.Request) -> web.StreamResponse:
    name = request.match_info["username"]
    return await _listing(
        request, f"Models by {name}", username=name, feed=feeds.feed_url(creator=name)
    )


@page
async def tags(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q") or None
    found = await request.app[CATALOG].views.tags(query, 200, 1)
    return request.app[RENDERER].render(
        request, "tags.html", title="Tags", tags=found, q=query or ""
    )


# --- a model ------------------------------------------------------------------------------


async def _model(request: web.Request, key: str = "id") -> dict[str, Any]:
    views = request.app[CATALOG].views
    root = await views.root_for_int(int_id(request.match_info[key]) or 0)
    found = await views.models_by_root([root]) if root else []
    if not found:
        raise NotFound("there is no such model on this node")
    return found[0]


@page
async def model_page(request: web.Request) -> web.StreamResponse:
    model = await _model(request)
    versions = model["modelVersions"]
    wanted = int_id(request.query.get("version"))
    current = next((v for v in versions if v["id"] == wanted), versions[0] if versions else None)
    for version in versions:
        for image in version["images"]:
            image["src"] = image_src(image, CARD_WIDTH)
    return request.app[RENDERER].render(
        request,
        "model.html",
        title=model["name"],
        model=model,
        versions=versions,
        current=current,
        card=card(model),
        permissions=permissions(model),
        hidden=model["civitas"]["rating"] not in shown_ratings(request),
        is_author=_is_author(request, model),
    )


def _is_author(request: web.Request, model: dict[str, Any]) -> bool:
    user = principal(request).user
    return user is not None and bool(user.did == model["civitas"]["author"])


# --- an image -----------------------------------------------------------------------------


@page
async def image_page(request: web.Request) -> web.StreamResponse:
    image = await request.app[CATALOG].views.image(request.match_info["sha256"])
    if image is None:
        raise NotFound("there is no such image on this node")
    meta = image["meta"] or {}
    return request.app[RENDERER].render(
        request,
        "image.html",
        title=f"Image by {image['username']}",
        image=image,
        src=image_src(image),
        version=image["civitas"]["modelVersion"],
        author=image["username"],
        meta=meta,
        resources=image["civitas"]["resources"][:16],
        a1111=format_a1111(meta) if meta else "",
        hidden=image["civitas"]["rating"] not in shown_ratings(request),
    )


# --- publishing and editing -----------------------------------------------------------------


def form_metadata(fields: MultiDict[str] | MultiDictProxy[Any]) -> dict[str, Any]:
    """The publish form's fields as the JSON API's metadata (the same names)."""
    data: dict[str, Any] = {
        key: str(fields[key]).strip()
        for key in ("name", "type", "base_model", "version", "license", "rating", "tags")
        if str(fields.get(key, "")).strip()
    }
    for key in ("description", "version_description", "trained_words"):
        if fields.get(key):
            data[key] = str(fields[key])
    # Checkboxes: an unticked one is simply not sent.
    for key in ("allow_no_credit", "allow_derivatives", "allow_different_license"):
        data[key] = key in fields
    data["allow_commercial_use"] = [str(u) for u in fields.getall("allow_commercial_use", [])]
    return data


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        data += chunk
        if len(data) > MAX_FIELD:
            raise PayloadTooLarge(f"the field {part.name!r} is longer than {MAX_FIELD} bytes")
    return data.decode("utf-8", "replace")


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        yield bytes(chunk)


def _publish_form(
    request: web.Request, values: Any, error: str | None = None, status: int = 200
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "publish.html",
        status=status,
        title="Publish a model",
        values=values,
        ticked=checked(values.items()) if values else checked((n, v) for _, n, v in PERMISSIONS),
        error=error,
        max_previews=MAX_PREVIEWS,
        **FORM_CHOICES,
    )


@page
async def publish_form(request: web.Request) -> web.StreamResponse:
    require_user(request)
    return _publish_form(request, MultiDict())


@page
async def publish(request: web.Request) -> web.StreamResponse:
    """The form without JavaScript: the form's token first, fields, preview images, the
    file last.

    Its sender is known before a byte of the body is read: a session's cookie (its form
    token, in the body, is checked first thing) or an API token; anyone else is answered
    401 with no slot taken. The slot is then that account's (429 past its share), held
    while the whole body keeps up the minimum rate (previews are held in memory)."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send the publish form as multipart/form-data")
    pending = request.get(PENDING_SESSION)
    sender = pending if pending is not None else require_user(request)
    if sender.user is None:
        raise BadRequest("publish as a user: log in")
    slots = request.app[CATALOG].publisher.slots
    async with slots.upload(sender.user.did, request.content):
        return await _read_publish_form(request)


async def _read_publish_form(request: web.Request) -> web.StreamResponse:
    reader = await request.multipart()
    fields: MultiDict[str] = MultiDict()
    images: list[bytes] = []
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart is not supported")
            if part.name != FORM_FIELD and FORM_FIELD not in fields:
                raise Forbidden("the form's token must come first: reload the page")
            if part.name == FORM_FIELD:
                fields[FORM_FIELD] = await _field(part)
                check_form_token(request, fields[FORM_FIELD])
                require_user(request)
            elif part.name == "image":
                blob = await read_preview(part, images)
                if part.filename and blob:
                    images.append(blob)
            elif part.name == "file":
                return await _publish_file(request, part, fields, images)
            else:
                fields.add(part.name or "", await _field(part))
        raise BadRequest("choose a .safetensors file to publish")
    except (Forbidden, PayloadTooLarge):
        raise
    except CivitasError as exc:
        return _publish_form(request, fields, exc.message, exc.status)


async def _publish_file(
    request: web.Request, part: BodyPartReader, fields: MultiDict[str], images: list[bytes]
) -> web.StreamResponse:
    who = require_user(request)
    if who.user is None:
        raise BadRequest("publish as a user: log in")
    if not part.filename:
        raise BadRequest("choose a .safetensors file to publish")
    result = await request.app[CATALOG].publish_upload(
        who.user.did,
        part.filename,
        _chunks(part),
        form_metadata(fields),
        images,
        expected_size=request.content_length,
    )
    notes = list(result["warnings"])
    if not result["created"]:
        notes.insert(0, "You had published this file already: here it is.")
    response = web.HTTPSeeOther(f"/models/{result['model']['id']}")
    set_flash(response, notes)
    raise response


@page
async def edit_form(request: web.Request) -> web.StreamResponse:
    require_user(request)
    model = await _model(request)
    if not _is_author(request, model):
        raise Forbidden("only the model's author may edit it")
    return _edit_form(request, model, None)


def _edit_form(
    request: web.Request, model: dict[str, Any], error: str | None, status: int = 200
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "edit.html",
        status=status,
        title=f"Edit {model['name']}",
        model=model,
        error=error,
        ticked=checked(
            (n, v) for (_, n, v), (_, ok) in zip(PERMISSIONS, permissions(model), strict=True) if ok
        ),
        **FORM_CHOICES,
    )


@page
async def edit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    who = check_form_token(request, str(form.get(FORM_FIELD, "")))
    if who.user is None:
        raise BadRequest("edit as the model's author: log in")
    model = await _model(request)
    data = form_metadata(form)
    data.setdefault("description", "")
    data["tags"] = str(form.get("tags", ""))
    data["license"] = data.get("license")
    try:
        await request.app[CATALOG].edit_model(who.user.did, model["id"], data)
    except (BadRequest, PayloadTooLarge) as exc:
        return _edit_form(request, model, exc.message, 400)
    raise web.HTTPSeeOther(f"/models/{model['id']}")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", browse)
    r.add_get("/tags", tags)
    r.add_get("/creators/{username}", creator)
    r.add_get("/models/{id}", model_page)
    r.add_get("/models/{id}/edit", edit_form)
    r.add_post("/models/{id}/edit", edit)
    r.add_get("/images/{sha256}", image_page)
    r.add_get("/publish", publish_form)
    r.add_post("/publish", publish)
    feeds.add_routes(app)
