"""Attacks a node already refused before the hardening issue, kept here so they stay
refused (issue 13): path traversal on every file-serving route, SQL in every query
parameter of the read API, markup in a model's text, forms without their CSRF token,
pickles and malformed safetensors uploaded as models."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from tests.catalog.conftest import PASSWORD, png_bytes

TRAVERSALS = [
    "/static/../node.json",
    "/static/..%2f..%2fnode.json",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/webseed/..%2f..%2fnode.json",
    "/webseed/../../etc/passwd",
    "/federation/v1/blobs/..%2f..%2fnode.json",
    "/federation/v1/blobs/....//....//etc/passwd",
    "/federation/v1/torrents/..%2f..%2fnode.json",
    "/api/download/models/..%2f..%2fnode.json",
    "/images/..%2f..%2fnode.json/width=450/x.png",
    "/images/AAAA/..%2f..%2fnode.json/x.png",
]

SQL = ["' OR '1'='1", "1; DROP TABLE models; --", '" OR ""="', "%' UNION SELECT 1 --", "\\'"]

# Every query parameter of the read API, per endpoint.
PARAMS = {
    "/api/v1/models": [
        "query", "tag", "username", "types", "baseModels", "sort", "nsfw", "cursor", "page",
        "limit", "ids", "rating", "period", "contentRating", "allowCommercialUse",
        "allowNoCredit", "allowDerivatives", "allowDifferentLicenses", "primaryFileOnly",
    ],
    "/api/v1/images": [
        "modelId", "modelVersionId", "username", "nsfw", "sort", "period", "postId", "cursor",
        "limit", "page",
    ],
    "/api/v1/creators": ["query", "page", "limit"],
    "/api/v1/tags": ["query", "page", "limit"],
}  # fmt: skip


@pytest.fixture
async def published(node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path) -> Any:
    preview = tmp_path / "preview.png"
    preview.write_bytes(png_bytes(1, (64, 64)))
    return await node.catalog.publish_path(
        alice.did,
        make_lora("fox.safetensors", 1),
        {
            "name": "Fox <script>alert(1)</script>",
            "description": 'Foxes <img src=x onerror="alert(2)"> [x](javascript:alert(3))',
            "tags": ["watercolor"],
        },
        previews=[preview],
    )


async def test_no_file_route_serves_anything_outside_its_store(
    client: TestClient, published: Any
) -> None:
    for path in TRAVERSALS:
        resp = await client.get(path, allow_redirects=False)
        body = await resp.read()
        assert resp.status in (400, 403, 404), (path, resp.status)
        assert b"root:" not in body and b"log_epoch" not in body and b'"did"' not in body, path


async def test_sql_in_any_query_parameter_is_data_never_code(
    client: TestClient, published: Any
) -> None:
    for endpoint, params in PARAMS.items():
        baseline = await client.get(endpoint)
        assert baseline.status == 200
        total = len((await baseline.json())["items"])
        for param in params:
            for payload in SQL:
                resp = await client.get(endpoint, params={param: payload})
                assert resp.status in (200, 400), (endpoint, param, payload, resp.status)
                doc = await resp.json()
                if resp.status == 400:
                    assert doc["error"], (endpoint, param)
                else:  # a filter never widens what is answered
                    assert len(doc["items"]) <= total, (endpoint, param, payload)
    assert (await (await client.get("/api/v1/models")).json())["items"], "models table intact"


async def test_markup_in_a_model_is_shown_as_text(client: TestClient, published: Any) -> None:
    model_id = published["model"]["id"]
    page = await (await client.get(f"/models/{model_id}")).text()
    api = await (await client.get(f"/api/v1/models/{model_id}")).json()
    for html in (page, api["description"]):
        assert "<script>alert" not in html
        assert not re.search(r"<img[^>]*onerror", html, re.IGNORECASE)
        assert not re.search(r"href=[\"']?javascript:", html, re.IGNORECASE)


async def test_forms_without_their_csrf_token_are_refused(client: TestClient, alice: User) -> None:
    resp = await client.post(
        "/login",
        data={"username": alice.name, "password": PASSWORD, "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert "set-cookie" not in {k.lower() for k in resp.headers} or "session" not in (
        resp.headers.get("Set-Cookie", "")
    )


def _pickle_checkpoint() -> bytes:
    # The opening bytes of a torch pickle (PROTO 2, GLOBAL collections.OrderedDict): never
    # loaded, only recognised and refused.
    return b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01." + b"\x00" * 64


def _malformed_safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 16


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.ckpt", _pickle_checkpoint()),
        ("model.safetensors", _pickle_checkpoint()),
        ("model.safetensors", _malformed_safetensors()),
        ("model.safetensors", struct.pack("<Q", 2**62) + b"{}"),
    ],
)
async def test_pickles_and_malformed_safetensors_are_refused_on_upload(
    client: TestClient, node: Node, alice: User, name: str, content: bytes
) -> None:
    token = await node.accounts.create_token(alice.name)
    meta = json.dumps({"name": "Bad", "type": "LORA", "base_model": "SD 1.5"})
    form = {"metadata": meta, "file": content}
    resp = await client.post(
        "/api/models",
        data=_multipart(form, name),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert 400 <= resp.status < 500, resp.status
    assert (await resp.json())["error"]
    listing = await (await client.get("/api/v1/models", params={"query": "Bad"})).json()
    assert listing["items"] == []


def _multipart(form: dict[str, Any], filename: str) -> Any:
    import aiohttp

    data = aiohttp.FormData()
    data.add_field("metadata", form["metadata"], content_type="application/json")
    data.add_field("file", form["file"], filename=filename, content_type="application/octet-stream")
    return data
