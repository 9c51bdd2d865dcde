"""The OpenAPI 3.1 document of the node's HTTP API, served at ``/api/openapi.json``.

Written by hand, next to the routes it describes; a test fails when a route exists that
this document does not describe.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import __version__


def _params(*specs: tuple[str, str, str]) -> list[dict[str, Any]]:
    """(name, where, type) triples; path parameters are required."""
    return [
        {"name": name, "in": where, "required": where == "path", "schema": {"type": kind}}
        for name, where, kind in specs
    ]


def _op(
    summary: str,
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    auth: bool = False,
    ok: str = "200",
    content: str = "application/json",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "success", "content": {content: {}}},
            "4XX": {
                "description": "a client error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {body: {"schema": {"type": "object"}}}}
    if auth:
        op["security"] = [{"bearer": []}, {"session": []}]
    return op


ID = ("id", "path", "integer")
PAGE = (("limit", "query", "integer"), ("page", "query", "integer"))

PATHS: dict[str, dict[str, Any]] = {
    "/.well-known/civitas": {"get": _op("Node identity: did, name, version, endpoints")},
    "/healthz": {"get": _op("200 when the database answers, else 503")},
    "/api/openapi.json": {"get": _op("This document")},
    "/api/auth/login": {"post": _op("Log in; sets the session cookie", body="application/json")},
    "/api/auth/logout": {"post": _op("End the session", auth=True)},
    "/api/auth/me": {"get": _op("Who you are", auth=True)},
    "/api/admin/status": {"get": _op("Node status and counts (admin)", auth=True)},
    "/api/admin/users": {
        "get": _op("List local accounts (admin)", auth=True),
        "post": _op("Create an account (admin)", body="application/json", auth=True, ok="201"),
    },
    "/api/admin/users/{name}/tokens": {
        "post": _op(
            "Create an API token",
            params=_params(("name", "path", "string")),
            body="application/json",
            auth=True,
            ok="201",
        ),
    },
    "/api/v1/models": {
        "get": _op(
            "Search models (Civitai-compatible)",
            params=_params(
                ("limit", "query", "integer"),
                ("page", "query", "integer"),
                ("cursor", "query", "string"),
                ("query", "query", "string"),
                ("tag", "query", "string"),
                ("username", "query", "string"),
                ("types", "query", "string"),
                ("baseModels", "query", "string"),
                ("sort", "query", "string"),
                ("nsfw", "query", "boolean"),
                ("rating", "query", "string"),
            ),
        ),
    },
    "/api/v1/models/{id}": {"get": _op("One model with its versions", params=_params(ID))},
    "/api/v1/model-versions/{id}": {"get": _op("One model version", params=_params(ID))},
    "/api/v1/model-versions/by-hash/{hash}": {
        "get": _op(
            "The version holding a file with this hash (any type, any case)",
            params=_params(("hash", "path", "string")),
        ),
    },
    "/api/v1/model-versions/by-hash": {
        "post": _op("Versions for up to 100 SHA256 hashes", body="application/json"),
    },
    "/api/v1/images": {
        "get": _op(
            "Images with generation metadata",
            params=_params(
                *PAGE,
                ("modelId", "query", "integer"),
                ("modelVersionId", "query", "integer"),
                ("username", "query", "string"),
                ("withMeta", "query", "boolean"),
            ),
        ),
    },
    "/api/v1/creators": {
        "get": _op("Creators", params=_params(*PAGE, ("query", "query", "string"))),
    },
    "/api/v1/tags": {"get": _op("Tags", params=_params(*PAGE, ("query", "query", "string")))},
    "/api/download/models/{id}": {
        "get": _op(
            "Download a version's primary file (Range, Content-Disposition)",
            params=_params(ID),
            content="application/octet-stream",
        ),
    },
    "/images/{sha256}/{transform}/{name}": {
        "get": _op(
            "An image; transform is width=N (resized) or original=true",
            params=_params(
                ("sha256", "path", "string"),
                ("transform", "path", "string"),
                ("name", "path", "string"),
            ),
            content="image/*",
        ),
    },
    "/api/models": {
        "post": _op(
            "Publish: multipart metadata (JSON), image parts, then the file part",
            body="multipart/form-data",
            auth=True,
            ok="201",
        ),
    },
    "/api/models/publish-path": {
        "post": _op(
            "Publish a file on the node's disk (admin)",
            body="application/json",
            auth=True,
            ok="201",
        ),
    },
    "/api/models/{model_id}/versions": {
        "post": _op(
            "Publish a new version of a model (multipart, like /api/models)",
            params=_params(("model_id", "path", "integer")),
            body="multipart/form-data",
            auth=True,
            ok="201",
        ),
    },
    "/api/models/{id}": {
        "patch": _op(
            "Edit a model (a signed revision)",
            params=_params(ID),
            body="application/json",
            auth=True,
        ),
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Civitas node API", "version": __version__},
        "paths": PATHS,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "civitas_session"},
            },
        },
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())
