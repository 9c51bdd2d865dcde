"""Malformed input is a 4xx with a JSON error, never a 500; a bug in our code stays a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.app import Node
from node.http import error_middleware, parse_json
from node.p2p.federation.signing import NODE_HEADER, SIGNATURE_HEADER, TIME_HEADER
from node.p2p.keys import SigningKey
from tests.catalog.conftest import lora_file

PASSWORD = "correct horse battery"
JSON = {"Content-Type": "application/json"}
HUGE = "9" * 5000


async def _json_error(resp: web.StreamResponse | object, *statuses: int) -> str:
    assert resp.status in statuses, resp.status  # type: ignore[attr-defined]
    body = await resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "message"}
    return str(body["error"])


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/v1/model-versions/by-hash"])
@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 50 + "1" + "}" * 50])
async def test_deeply_nested_json_is_400(client: TestClient, path: str, body: str) -> None:
    assert await _json_error(await client.post(path, data=body, headers=JSON), 400)


def test_json_nesting_and_surrogates_are_refused_at_parse() -> None:
    assert parse_json('{"a": [[["x"]]]}') == {"a": [[["x"]]]}
    for bad in ['"\\ud800"', '{"\\udfff": 1}', "[" * 40 + "]" * 40, "1" * 5000, "{"]:
        with pytest.raises(Exception) as refused:
            parse_json(bad)
        assert getattr(refused.value, "status", None) == 400


async def test_a_lone_surrogate_in_a_login_name_is_4xx(client: TestClient, node: Node) -> None:
    body = '{"username": "al\\ud800ice", "password": "correct horse battery"}'
    assert await _json_error(await client.post("/api/auth/login", data=body, headers=JSON), 400)
    await client.get("/login")
    token = client.session.cookie_jar.filter_cookies(client.make_url("/"))["civitas_form"].value
    form = b"username=%ED%A0%80&password=xxxxxxxxxx&csrf_token=" + token.encode()
    resp = await client.post(
        "/login", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status in (400, 401)


async def test_five_thousand_digit_integers_in_headers_and_queries_are_4xx(
    client: TestClient,
) -> None:
    signed = {NODE_HEADER: SigningKey.generate().did, TIME_HEADER: HUGE, SIGNATURE_HEADER: "AA"}
    resp = await client.post("/federation/v1/inbox", data=b"\x90", headers=signed)
    assert await _json_error(resp, 400, 401)
    for path in ["/api/v1/models?limit=", "/api/v1/models?page=", "/api/v1/images?limit="]:
        assert await _json_error(await client.get(path + HUGE), 400)
    resp = await client.get("/healthz", headers={"Content-Length": HUGE})
    assert resp.status == 400  # refused by the HTTP parser itself
    resp = await client.get("/static/app.js", headers={"Range": f"bytes={HUGE}-"})
    assert resp.status == 416


def _multipart(disposition: bytes, content: bytes) -> bytes:
    return (
        b'--XX\r\nContent-Disposition: form-data; name="metadata"\r\n'
        b"Content-Type: application/json\r\n\r\n"
        b'{"name": "m", "type": "LORA", "base_model": "SD 1.5"}\r\n'
        b"--XX\r\nContent-Disposition: " + disposition + b"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--XX--\r\n"
    )


@pytest.mark.parametrize(
    "disposition",
    [
        b'form-data; name="file"; filename="a\x00b.safetensors"',
        b"form-data; name=\"file\"; filename*=UTF-8''a%00b.safetensors",
        b"form-data; name=\"file\"; filename*=UTF-8''a%0Ab.safetensors",
    ],
)
async def test_a_nul_in_a_multipart_filename_is_4xx(
    client: TestClient, node: Node, disposition: bytes, tmp_path: Path
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    token = await node.accounts.create_token("alice")
    resp = await client.post(
        "/api/models",
        data=_multipart(disposition, lora_file(tmp_path / "m.safetensors", 1).read_bytes()),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=XX",
        },
    )
    assert await _json_error(resp, 400, 413, 415, 422)


async def test_value_errors_are_400_only_when_aiohttp_parsing_raised_them() -> None:
    async def parse_range(request: web.Request) -> web.Response:
        return web.json_response({"start": request.http_range.start})

    async def buggy(request: web.Request) -> web.Response:
        raise ValueError("a bug in our own code")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/range", parse_range)
    app.router.add_get("/bug", buggy)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/range", headers={"Range": "bytes=x-y"})
        assert await _json_error(resp, 400) == "malformed_request"
        assert await _json_error(await client.get("/bug"), 500) == "internal_error"
