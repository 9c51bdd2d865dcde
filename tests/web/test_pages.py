"""Page routes over HTTP, on both databases: rendering, CSRF, CSP, forms without a browser."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.catalog import pages
from node.render import CSP, render_markdown
from tests.catalog.conftest import PASSWORD, lora_file, png_bytes
from tests.web.conftest import Catalog, publish_samples

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token_in(html: str) -> str:
    found = TOKEN.search(html)
    assert found, "the page has no form token"
    return found.group(1)


@pytest.fixture
async def samples(node: Node, tmp_path: Path) -> Catalog:
    return await publish_samples(node, tmp_path)


async def log_in(client: TestClient, user: str = "alice") -> str:
    """Log in through the form; return the session's CSRF token from the next page."""
    token = token_in(await (await client.get("/login")).text())
    resp = await client.post(
        "/login",
        data={"csrf_token": token, "username": user, "password": PASSWORD, "next": "/tags"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/tags"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return token_in(await (await client.get("/publish")).text())


async def test_pages_render_with_security_headers(client: TestClient, samples: Catalog) -> None:
    fox = samples.models["fox"]
    sha = fox["modelVersions"][0]["images"][0]["civitas"]["sha256"]
    for path in (
        "/",
        "/tags",
        "/login",
        f"/models/{fox['id']}",
        f"/images/{sha}",
        "/creators/alice",
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        html = await resp.text()
        assert '<html lang="en">' in html and '<main id="main"' in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
        assert " style=" not in html and "<style" not in html, "inline style"
    css = await client.get("/static/app.css")
    assert css.status == 200 and css.headers["X-Content-Type-Options"] == "nosniff"


async def test_missing_things_are_html_error_pages(client: TestClient) -> None:
    resp = await client.get("/models/12345")
    assert resp.status == 404 and resp.content_type == "text/html"
    assert "no such model" in await resp.text()
    assert "Content-Security-Policy" in resp.headers
    assert (await client.get("/images/" + "0" * 64)).status == 404
    resp = await client.get("/publish", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] in (
        "/login?next=%2Fpublish",
        "/login?next=/publish",
    )


async def test_browse_filters_sorts_and_pages(client: TestClient, samples: Catalog) -> None:
    html = await (await client.get("/")).text()
    assert "Watercolor Fox" in html and "Neon City" in html and "Bad Hands Embedding" in html
    assert "Mature Thing" not in html  # X is hidden by default
    html = await (await client.get("/?type=TextualInversion")).text()
    assert "Bad Hands Embedding" in html and "Watercolor Fox" not in html
    html = await (await client.get("/?q=watercolor&sort=name")).text()
    assert "Watercolor Fox" in html and "Neon City" not in html
    html = await (await client.get("/?base=SDXL+1.0")).text()
    assert "Neon City" in html and "Watercolor Fox" not in html
    html = await (await client.get("/?tag=animals")).text()
    assert "Watercolor Fox" in html and "Neon City" not in html
    assert 'href="/?tag=animals"' in await (await client.get("/tags")).text()


async def test_next_page_follows_the_search_cursor(
    client: TestClient, samples: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    html = await (await client.get("/?sort=name")).text()
    first = re.findall(r'class="card-title">([^<]+)<', html)
    assert first == ["Bad Hands Embedding", "Neon City"]
    next_url = re.search(r'rel="next" href="([^"]+)"', html)
    assert next_url and "sort=name" in next_url.group(1)
    html = await (await client.get(next_url.group(1).replace("&amp;", "&"))).text()
    assert re.findall(r'class="card-title">([^<]+)<', html) == ["Watercolor Fox"]
    assert 'rel="next"' not in html and "First page" in html


async def test_versions_are_tabs(
    client: TestClient, node: Node, samples: Catalog, tmp_path: Path
) -> None:
    fox = samples.models["fox"]
    alice = await node.accounts.get_user("alice")
    second = await node.catalog.publish_path(
        alice.did,
        lora_file(tmp_path / "fox2.safetensors", 21),
        {"model_id": fox["id"], "version": "v2", "trained_words": ["foxstyle2"]},
    )
    _v2, v1 = second["model"]["modelVersions"]
    html = await (await client.get(f"/models/{fox['id']}")).text()
    assert 'aria-label="Versions"' in html and "foxstyle2" in html
    assert f'href="/models/{fox["id"]}?version={v1["id"]}"' in html
    html = await (await client.get(f"/models/{fox['id']}?version={v1['id']}")).text()
    assert v1["files"][0]["hashes"]["SHA256"] in html and "foxstyle2" not in html
    assert f"/api/download/models/{v1['id']}" in html


async def test_mature_content_preference_is_a_cookie(client: TestClient, samples: Catalog) -> None:
    mature = samples.models["mature"]
    page = await (await client.get(f"/models/{mature['id']}")).text()
    assert "This model is rated X" in page and "/api/download/" not in page
    token = token_in(await (await client.get("/")).text())
    resp = await client.post(
        "/preferences",
        data={"csrf_token": token, "show_mature": "1", "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "civitas_ratings=all" in resp.headers["Set-Cookie"]
    assert "Mature Thing" in await (await client.get("/")).text()
    resp = await client.post("/preferences", data={"show_mature": "1"}, allow_redirects=False)
    assert resp.status == 403  # no form token


async def test_login_form_and_csrf_on_page_posts(client: TestClient, samples: Catalog) -> None:
    token = token_in(await (await client.get("/login")).text())
    resp = await client.post(
        "/login", data={"csrf_token": token, "username": "alice", "password": "wrong password"}
    )
    assert resp.status == 401 and "wrong username or password" in await resp.text()
    resp = await client.post(
        "/login",
        data={"csrf_token": token, "username": "alice", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert resp.status == 403
    session_token = await log_in(client)
    assert session_token != token
    # A cookie session posting a page form needs the session's token in the form.
    assert (await client.post("/logout", data={"csrf_token": token})).status == 403
    assert (await client.post("/logout", data={})).status == 403
    # … and the JSON API still wants its header.
    assert (await client.post("/api/auth/logout")).status == 403
    resp = await client.post("/logout", data={"csrf_token": session_token}, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/api/auth/me")).status == 401


async def test_publish_and_edit_without_javascript(
    client: TestClient, node: Node, samples: Catalog, tmp_path: Path
) -> None:
    token = await log_in(client)
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    for name, value in {
        "name": "Form Fox",
        "type": "LORA",
        "base_model": "SD 1.5",
        "description": "Made *by hand*",
        "tags": "forms, foxes",
        "trained_words": "formfox",
        "rating": "PG",
        "allow_no_credit": "1",
        "allow_commercial_use": "Image",
    }.items():
        form.add_field(name, value)
    form.add_field("image", png_bytes(4), filename="p.png", content_type="image/png")
    path = lora_file(tmp_path / "formfox.safetensors", 9)
    form.add_field("file", path.read_bytes(), filename="formfox.safetensors")
    resp = await client.post("/publish", data=form, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    model_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    model = await (await client.get(f"/api/v1/models/{model_id}")).json()
    assert model["name"] == "Form Fox" and model["tags"] == ["forms", "foxes"]
    assert model["allowCommercialUse"] == ["Image"] and model["allowDerivatives"] is False
    assert model["modelVersions"][0]["trainedWords"] == ["formfox"]
    assert len(model["modelVersions"][0]["images"]) == 1
    again = await client.post("/publish", data=form)  # the same file: a note, not a copy
    assert again.status == 200 and again.url.path == f"/models/{model_id}"
    assert "You had published this file already" in await again.text()
    assert "already" not in await (await client.get(f"/models/{model_id}")).text()  # once

    page = await (await client.get(f"/models/{model_id}/edit")).text()
    resp = await client.post(
        f"/models/{model_id}/edit",
        data={
            "csrf_token": token_in(page),
            "name": "Form Fox II",
            "description": "Edited",
            "tags": "foxes",
            "rating": "PG13",
            "allow_derivatives": "1",
            "allow_commercial_use": "Sell",
        },
        allow_redirects=False,
    )
    assert resp.status == 303
    model = await (await client.get(f"/api/v1/models/{model_id}")).json()
    assert (model["name"], model["civitas"]["descriptionMarkdown"], model["tags"]) == (
        "Form Fox II",
        "Edited",
        ["foxes"],
    )
    assert model["allowDerivatives"] is True and model["allowCommercialUse"] == ["Sell"]


async def test_publish_form_errors_are_shown(client: TestClient, samples: Catalog) -> None:
    token = await log_in(client)
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("name", "Pickle")
    form.add_field("file", b"\x80\x02}q\x00.", filename="evil.ckpt")
    resp = await client.post("/publish", data=form)
    assert resp.status == 415  # pickles are refused, and the form says why
    html = await resp.text()
    assert 'role="alert"' in html and "safetensors" in html
    assert 'value="Pickle"' in html  # what was typed is kept
    form = aiohttp.FormData()
    form.add_field("name", "No token")
    form.add_field("file", b"x", filename="x.safetensors")
    assert (await client.post("/publish", data=form)).status == 403


async def test_only_the_author_may_edit(client: TestClient, node: Node, samples: Catalog) -> None:
    await node.accounts.add_user("bob", PASSWORD)
    await log_in(client, "bob")
    fox = samples.models["fox"]
    assert (await client.get(f"/models/{fox['id']}/edit")).status == 403
    assert "Edit model" not in await (await client.get(f"/models/{fox['id']}")).text()


def test_markdown_is_sanitized() -> None:
    source = (
        "Para <img src=x onerror=alert(1)> *hi* [a](javascript:alert(1))\n\n"
        "<script>alert(1)</script>\n\n<a href='javascript:alert(2)' onclick='x()'>b</a>"
    )
    html = str(render_markdown(source))
    assert "<script" not in html and "alert(1)</script" not in html
    assert "onerror" not in html and "onclick" not in html and 'href="javascript' not in html
    assert "<em>hi</em>" in html and '<img src="x">' in html


async def test_model_page_says_who_signed_it_and_where_it_came_from(
    client: TestClient, samples: Catalog
) -> None:
    model = samples.models["fox"]
    html = await (await client.get(f"/models/{model['id']}")).text()
    assert model["civitas"]["author"][:20] in html
    assert "signature verified" in html
    assert "published on this node" in html
