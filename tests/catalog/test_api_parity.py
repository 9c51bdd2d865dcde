"""Civitai API parity, as Civitai's own handlers read each parameter (issue 17).

Each test fails when the node ignores the parameter or reads it otherwise than Civitai:
``period`` counts a model's latest version, ``ids`` gives way to ``query``, ``nsfw=false``
also keeps mature images out of the galleries, each version says ``supportsGeneration``,
``?token=`` stands for a Bearer token only on reads of the API and downloads, and CORS
lets other origins read, never write. The catalog is tests/catalog/civitai_catalog.py's.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.p2p.records import now_ms
from tests.catalog.civitai_catalog import (
    PEER,
    A,
    B,
    Catalog,
    civitai_file,
    image_labels,
    names,
    signed_version,
)
from tests.catalog.conftest import PASSWORD

# --- GET /api/v1/models ------------------------------------------------------------------


async def test_period_counts_the_models_latest_version(
    client: TestClient, node: Node, catalog: Catalog
) -> None:
    """Civitai keeps a model whose latest version came out within the period
    (lastVersionAt), however long ago the model itself was first published."""
    assert "Old bear" not in await names(client, "period=Week")
    old_bear = await (await client.get(f"/api/v1/models/{catalog.ids['Old bear']}")).json()
    root = bytes.fromhex(old_bear["modelVersions"][0]["civitas"]["modelRoot"])
    # A version of the bear by someone else is not the bear's (never shown): no change.
    stray = signed_version(B, root, [civitai_file("bear stray")], now_ms() - 1000)
    await node.log.accept_verified([stray], PEER, refused=[])
    assert "Old bear" not in await names(client, "period=Week")
    # Its author's new version, published today, brings it into every period.
    fresh = signed_version(A, root, [civitai_file("bear v2")], now_ms() - 1000)
    await node.log.accept_verified([fresh], PEER, refused=[])
    for period in ("Day", "Week", "Month", "Year"):
        assert sorted(await names(client, f"period={period}")) == [
            "Fox style",
            "Night owl",
            "Old bear",
        ], period
    page = await (await client.get("/api/v1/models?period=Day&page=1&limit=2")).json()
    assert page["metadata"]["totalItems"] == 3  # the count filters the same way


async def test_star_rating_as_civitai_reads_it(client: TestClient, catalog: Catalog) -> None:
    """``rating`` is a star rating, rounded down (Civitai floors it): 0 keeps every model,
    1 and up none until reviews exist; content ratings have their own parameter."""
    assert len(await names(client, "rating=0")) == 3
    assert len(await names(client, "rating=0.9")) == 3
    for stars in ("1", "4.5", "5", "5.0"):
        assert await names(client, f"rating={stars}") == [], stars
    assert await names(client, "contentRating=X") == []
    assert await names(client, "contentRating=R") == ["Night owl"]


async def test_ids_give_way_to_a_query(client: TestClient, catalog: Catalog) -> None:
    """Civitai: ``ids`` "if provided will only return the provided ids. Ignored if a query
    is provided." A bad id is still a 400."""
    fox = catalog.ids["Fox style"]
    assert await names(client, f"ids={fox}") == ["Fox style"]
    assert await names(client, f"ids={fox}&query=owl") == ["Night owl"]
    resp = await client.get("/api/v1/models?ids=fox&query=owl")
    assert resp.status == 400 and (await resp.json())["error"] == "bad_request"


async def test_nsfw_false_keeps_mature_images_out_of_the_galleries(
    client: TestClient, catalog: Catalog
) -> None:
    """Civitai: ``nsfw=false`` "will return safer images and hide models that don't have
    safe images": the Fox's R image leaves its gallery, its PG images stay."""

    async def gallery(query: str) -> dict[str, list[int]]:
        listing = await (await client.get(f"/api/v1/models?{query}")).json()
        return {
            m["name"]: sorted(i["nsfwLevel"] for v in m["modelVersions"] for i in v["images"])
            for m in listing["items"]
        }

    assert (await gallery("limit=10"))["Fox style"] == [1, 1, 4]
    assert (await gallery("limit=10&nsfw=true"))["Fox style"] == [1, 1, 4]
    safe = await gallery("limit=10&nsfw=false")
    assert safe == {"Fox style": [1, 1], "Old bear": [2]}  # the R owl is gone itself


async def test_each_version_says_whether_it_supports_generation(
    client: TestClient, catalog: Catalog
) -> None:
    listing = await (await client.get("/api/v1/models")).json()
    by_name = {m["name"]: m for m in listing["items"]}
    for name, expected in (("Fox style", True), ("Night owl", False), ("Old bear", False)):
        model = by_name[name]
        assert model["supportsGeneration"] is expected, name
        assert [v["supportsGeneration"] for v in model["modelVersions"]] == [expected], name
        version_id = model["modelVersions"][0]["id"]
        one = await (await client.get(f"/api/v1/model-versions/{version_id}")).json()
        assert one["supportsGeneration"] is expected, name


async def test_image_username_matches_without_regard_to_case(
    client: TestClient, catalog: Catalog
) -> None:
    listed = (await (await client.get("/api/v1/images")).json())["items"]
    beta = next(i["username"] for i in listed if i["id"] == catalog.images["owl-x"])
    assert beta.startswith("Beta@")
    for name in (beta, beta.upper(), beta.lower()):
        labels = await image_labels(client, catalog, f"username={name}")
        assert sorted(labels) == ["fox-by-b", "owl-x"], name


@pytest.mark.parametrize(
    "query",
    [
        "ids=1.5",
        "rating=9",
        "rating=4.5.1",
        "rating=-1",
        "contentRating=NC17",
        "period=Forever",
        "favorites=perhaps",
        "hidden=2",
        "primaryFileOnly=yes please",
        "supportsGeneration=maybe",
        "allowNoCredit=sometimes",
        "allowDerivatives=x",
        "allowDifferentLicenses=x",
        "allowCommercialUse=Everything",
        "nsfw=Mature",  # a level is an images parameter; models take a boolean
        "sort=Highest",
        "limit=0",
        "page=0",
        "cursor=not-a-cursor",
    ],
)
async def test_bad_model_parameters_are_400_json(
    client: TestClient, catalog: Catalog, query: str
) -> None:
    resp = await client.get(f"/api/v1/models?{query}")
    assert resp.status == 400, (query, await resp.text())
    body = await resp.json()
    assert body["error"] == "bad_request" and body["message"], query


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/images", "nsfw=Extreme"),
        ("/api/v1/images", "sort=Best"),
        ("/api/v1/images", "period=Decade"),
        ("/api/v1/images", "postId=abc"),
        ("/api/v1/images", "cursor=%%%"),
        ("/api/v1/images", "limit=201"),
        ("/api/v1/images", "withMeta=often"),
        ("/api/v1/tags", "page=0"),
        ("/api/v1/creators", "limit=500"),
    ],
)
async def test_bad_listing_parameters_are_400_json(
    client: TestClient, catalog: Catalog, path: str, query: str
) -> None:
    resp = await client.get(f"{path}?{query}")
    assert resp.status == 400, (path, query, await resp.text())
    assert (await resp.json())["error"] == "bad_request"


# --- /api/download/models/{id} ------------------------------------------------------------


async def test_download_choices_take_civitais_values(client: TestClient, catalog: Catalog) -> None:
    """``type``, ``format``, ``size`` and ``fp`` take the values Civitai's download route
    takes (in any case): another value is a 400, a known one no file has a 404."""
    base = f"/api/download/models/{catalog.versions['Fox style']}"
    for query in ("fp=fp99", "size=tiny", "format=zip", "type=Weights", "fp=16"):
        resp = await client.get(f"{base}?{query}")
        assert resp.status == 400, (query, await resp.text())
        assert (await resp.json())["error"] == "bad_request", query
    for query in ("fp=bf16", "format=GGUF", "type=VAE"):
        resp = await client.get(f"{base}?{query}")
        assert resp.status == 404, query
        assert "no file of this version" in (await resp.json())["message"], query
    upper = await (await client.get(f"{base}?fp=FP16&size=Pruned")).json()
    assert "fox-pruned" in upper["magnet"]


# --- ?token= -------------------------------------------------------------------------------


async def test_query_token_counts_only_on_api_reads_and_downloads(
    client: TestClient, node: Node, catalog: Catalog
) -> None:
    await node.accounts.add_user("erin", PASSWORD)
    token = await node.accounts.create_token("erin")
    bearer = {"Authorization": f"Bearer {token}"}
    # On /api/v1 reads it authenticates as the header does (favorites need a user).
    assert (await client.get("/api/v1/models?favorites=true")).status == 401
    for auth in ({"headers": bearer}, {"params": {"favorites": "true", "token": token}}):
        query = "" if "params" in auth else "?favorites=true"
        resp = await client.get(f"/api/v1/models{query}", **auth)  # type: ignore[arg-type]
        assert resp.status == 200, await resp.text()
    # A download takes it beside the file choice, which it does not disturb (a file
    # nobody holds here: the 404 names the chosen file's magnet).
    base = f"/api/download/models/{catalog.versions['Fox style']}"
    plain = await client.get(f"{base}?fp=fp16")
    with_token = await client.get(f"{base}?fp=fp16&token={token}")
    assert plain.status == with_token.status == 404
    assert (await with_token.json())["magnet"] == (await plain.json())["magnet"]
    assert "fox-pruned" in (await with_token.json())["magnet"]
    # Anywhere else a token in the URL is not a credential (it would end up in logs
    # and Referer headers of pages that change things).
    assert (await client.get("/api/auth/me", headers=bearer)).status == 200
    assert (await client.get(f"/api/auth/me?token={token}")).status == 401


# --- CORS ----------------------------------------------------------------------------------


async def test_cors_lets_other_origins_read_never_write(
    client: TestClient, node: Node, catalog: Catalog
) -> None:
    origin = {"Origin": "https://tool.example"}
    for path in ("/api/v1/models", "/api/v1/images", "/api/v1/tags", "/api/v1/creators"):
        for method in ("GET", "HEAD"):
            resp = await client.request(method, path, headers=origin)
            assert resp.status == 200, (method, path)
            assert resp.headers["Access-Control-Allow-Origin"] == "*", (method, path)
            assert "Access-Control-Allow-Credentials" not in resp.headers
    read = await client.options(
        "/api/v1/models", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert read.status == 204 and read.headers["Access-Control-Allow-Origin"] == "*"
    # A preflight for a write is refused: under /api/v1 (its one POST included) with a
    # 403 JSON answer, elsewhere by the route itself; never an Allow-Origin.
    for path, method in (
        ("/api/v1/model-versions/by-hash", "POST"),
        ("/api/v1/models", "DELETE"),
        ("/api/models", "POST"),
        (f"/api/models/{catalog.ids['Fox style']}", "PATCH"),
        ("/api/auth/login", "POST"),
    ):
        pre = await client.options(
            path, headers={**origin, "Access-Control-Request-Method": method}
        )
        assert pre.status >= 400, (path, method)
        assert "Access-Control-Allow-Origin" not in pre.headers, (path, method)
        assert "Access-Control-Allow-Methods" not in pre.headers, (path, method)
        assert "error" in await pre.json()
    # Writes themselves, and a cookie-authenticated one in particular, carry no CORS
    # headers: a browser will not hand another origin their answer.
    await node.accounts.add_user("frank", PASSWORD)
    login = await client.post("/api/auth/login", json={"username": "frank", "password": PASSWORD})
    assert login.status == 200
    csrf = (await login.json())["csrf_token"]
    writes = (
        ("POST", "/api/v1/model-versions/by-hash", {"json": []}),
        ("PATCH", f"/api/models/{catalog.ids['Fox style']}", {"json": {"name": "x"}}),
        ("POST", "/api/auth/logout", {}),
    )
    for method, path, extra in writes:
        resp = await client.request(method, path, headers={**origin, "X-CSRF-Token": csrf}, **extra)
        assert "Access-Control-Allow-Origin" not in resp.headers, (method, path)
