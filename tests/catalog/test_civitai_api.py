"""Civitai API parity over HTTP: every parameter a Civitai client sends changes the answer.

The catalog (fixture ``catalog``) is tests/catalog/civitai_catalog.py's.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from node.app import Node
from node.catalog.images import blurhash_of
from node.p2p.records import now_ms, sign_record
from tests.catalog.civitai_catalog import (
    PEER,
    A,
    Catalog,
    civitai_file,
    image_labels,
    names,
    signed_image,
    signed_version,
)
from tests.catalog.conftest import lora_file, png_bytes

# --- GET /api/v1/models ----------------------------------------------------------------


async def test_ids_filter_comma_separated_or_repeated(client: TestClient, catalog: Catalog) -> None:
    fox, bear = catalog.ids["Fox style"], catalog.ids["Old bear"]
    assert sorted(await names(client, f"ids={fox},{bear}")) == ["Fox style", "Old bear"]
    assert sorted(await names(client, f"ids={fox}&ids={bear}")) == ["Fox style", "Old bear"]
    assert await names(client, "ids=12345") == []
    for bad in ("ids=abc", "ids=-1", "ids=" + ",".join(["1"] * 101)):
        resp = await client.get(f"/api/v1/models?{bad}")
        assert resp.status == 400, bad
        assert "error" in await resp.json()


async def test_rating_is_stars_and_content_rating_keeps_working(
    client: TestClient, catalog: Catalog
) -> None:
    # No model has reviews: none is rated at least N stars.
    assert await names(client, "rating=5") == []
    assert await names(client, "rating=1") == []
    assert (await client.get("/api/v1/models?rating=6")).status == 400
    # The content rating under its own name, and as ``rating`` was read before.
    assert await names(client, "contentRating=R") == ["Night owl"]
    assert sorted(await names(client, "contentRating=PG,PG13")) == ["Fox style", "Old bear"]
    assert await names(client, "rating=PG13") == ["Old bear"]
    assert (await client.get("/api/v1/models?contentRating=Z")).status == 400


async def test_highest_rated_falls_back_to_downloads(
    client: TestClient, catalog: Catalog, node: Node
) -> None:
    # Without reviews every model rates the same: the most downloaded comes first.
    for _ in range(2):
        row = await node.catalog.views.primary_file(catalog.versions["Old bear"])
        assert row is not None
        await node.catalog.views.count_download(row.vid)
    assert (await names(client, "sort=Highest Rated"))[0] == "Old bear"
    assert (await names(client, "sort=Newest"))[0] == "Night owl"


async def test_period_keeps_models_published_within_it(
    client: TestClient, catalog: Catalog
) -> None:
    assert sorted(await names(client, "period=Month")) == ["Fox style", "Night owl"]
    assert sorted(await names(client, "period=Day")) == ["Fox style", "Night owl"]
    assert len(await names(client, "period=AllTime")) == 3
    assert (await client.get("/api/v1/models?period=Decade")).status == 400


async def test_favorites_and_hidden_need_a_user_and_are_empty_for_now(
    client: TestClient, catalog: Catalog, node: Node
) -> None:
    for param in ("favorites", "hidden"):
        resp = await client.get(f"/api/v1/models?{param}=true")
        assert resp.status == 401, param
        assert (await resp.json())["error"] == "unauthorized"
        assert len(await names(client, f"{param}=false")) == 3
    await node.accounts.add_user("carol", "correct horse battery")
    token = await node.accounts.create_token("carol")
    for param in ("favorites", "hidden"):
        resp = await client.get(
            f"/api/v1/models?{param}=true", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200
        assert (await resp.json())["items"] == []
        # ?token= authenticates as the Bearer header does (Civitai tools send it so).
        resp = await client.get(f"/api/v1/models?{param}=true&token={token}")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["items"] == []


async def test_primary_file_only(client: TestClient, catalog: Catalog) -> None:
    fox = catalog.ids["Fox style"]
    full = await (await client.get(f"/api/v1/models?ids={fox}")).json()
    assert [f["name"] for f in full["items"][0]["modelVersions"][0]["files"]] == [
        "fox-pruned.safetensors",
        "fox-full.safetensors",
    ]
    only = await (await client.get(f"/api/v1/models?ids={fox}&primaryFileOnly=true")).json()
    assert [f["name"] for f in only["items"][0]["modelVersions"][0]["files"]] == [
        "fox-full.safetensors"
    ]


async def test_permission_and_generation_filters(client: TestClient, catalog: Catalog) -> None:
    both = ["Fox style", "Old bear"]
    assert await names(client, "allowNoCredit=false") == ["Night owl"]
    assert sorted(await names(client, "allowNoCredit=true")) == both
    assert await names(client, "allowDerivatives=false") == ["Night owl"]
    assert await names(client, "allowDifferentLicenses=false") == ["Night owl"]
    assert sorted(await names(client, "allowDifferentLicenses=true")) == both
    assert await names(client, "allowCommercialUse=None") == ["Night owl"]
    assert sorted(await names(client, "allowCommercialUse=Image")) == both
    assert await names(client, "allowCommercialUse=Sell") == ["Fox style"]
    assert await names(client, "allowCommercialUse=Rent") == ["Fox style"]
    assert (await client.get("/api/v1/models?allowCommercialUse=Free")).status == 400
    # A LoRA that grants RentCivit runs on Civitas generation; an embedding does not,
    # nor a checkpoint whose creator grants nothing.
    assert await names(client, "supportsGeneration=true") == ["Fox style"]
    assert sorted(await names(client, "supportsGeneration=false")) == ["Night owl", "Old bear"]
    models = (await (await client.get("/api/v1/models")).json())["items"]
    assert {m["name"]: m["supportsGeneration"] for m in models} == {
        "Fox style": True,
        "Night owl": False,
        "Old bear": False,
    }


async def test_username_matches_without_regard_to_case(
    client: TestClient, catalog: Catalog
) -> None:
    listing = await (await client.get("/api/v1/models?ids=" + str(catalog.ids["Night owl"]))).json()
    username = listing["items"][0]["creator"]["username"]
    assert username.startswith("Beta@")  # another node's author keeps name@node
    assert await names(client, f"username={username.upper()}") == ["Night owl"]
    assert await names(client, f"username={username.lower()}") == ["Night owl"]
    assert await names(client, "username=beta") == []  # a local name is not theirs


async def test_page_based_paging_gives_totals(client: TestClient, catalog: Catalog) -> None:
    first = await (await client.get("/api/v1/models?limit=2&page=1")).json()
    meta = first["metadata"]
    assert (meta["totalItems"], meta["currentPage"], meta["totalPages"], meta["pageSize"]) == (
        3,
        1,
        2,
        2,
    )
    second = await (await client.get("/" + meta["nextPage"].split("/", 3)[3])).json()
    assert second["metadata"]["currentPage"] == 2 and "nextPage" not in second["metadata"]
    assert "prevPage" in second["metadata"]
    assert len(first["items"]) + len(second["items"]) == 3
    # Cursor paging (no page) stays as it was: nextCursor, no totals.
    cursor = (await (await client.get("/api/v1/models?limit=2")).json())["metadata"]
    assert "nextCursor" in cursor and "totalItems" not in cursor


async def test_missing_fields_and_html_description(client: TestClient, node: Node) -> None:
    body = {
        "name": "Described",
        "type": "LORA",
        "tags": ["x"],
        "description": "**bold** <script>x</script>",
        "permissions": {"allow_commercial_use": ["RentCivit"]},
    }
    model = sign_record(A, "model", body, created=now_ms() - 1000)
    version = signed_version(A, model.id, [civitai_file("described")], now_ms() - 900)
    image = signed_image(A, version.id, "described", "PG", now_ms() - 800)
    await node.log.accept_verified([model, version, image], PEER, refused=[])
    (found,) = (await (await client.get("/api/v1/models")).json())["items"]
    assert found["description"].strip() == "<p><strong>bold</strong> </p>"
    assert found["civitas"]["descriptionMarkdown"] == body["description"]
    assert found["mode"] is None and found["availability"] == "Public"
    assert found["supportsGeneration"] is True
    ver = found["modelVersions"][0]
    assert ver["availability"] == "Public"
    assert set(ver["stats"]) >= {"downloadCount", "ratingCount", "rating", "thumbsUpCount"}
    assert ver["files"][0]["scannedAt"] == ver["createdAt"]
    assert ver["images"][0]["postId"] == ver["id"]
    single = await (await client.get(f"/api/v1/model-versions/{ver['id']}")).json()
    assert single["description"] is None and single["stats"]["downloadCount"] == 0
    detail = await (await client.get(f"/api/v1/models/{found['id']}")).json()
    assert detail["description"] == found["description"]


# --- GET /api/v1/images ----------------------------------------------------------------


async def test_images_nsfw_levels(client: TestClient, catalog: Catalog) -> None:
    every = {"fox-pg", "fox-r", "fox-by-b", "owl-x", "bear-soft"}
    assert set(await image_labels(client, catalog, "nsfw=None")) == {"fox-pg", "fox-by-b"}
    assert set(await image_labels(client, catalog, "nsfw=Soft")) == {
        "fox-pg",
        "fox-by-b",
        "bear-soft",
    }
    assert set(await image_labels(client, catalog, "nsfw=Mature")) == every - {"owl-x"}
    assert set(await image_labels(client, catalog, "nsfw=X")) == every
    # The booleans as Civitai reads them: true, the images with a mature rating only;
    # false, the public ones (PG) only.
    assert set(await image_labels(client, catalog, "nsfw=true")) == {"fox-r", "owl-x"}
    assert set(await image_labels(client, catalog, "nsfw=false")) == {"fox-pg", "fox-by-b"}
    assert set(await image_labels(client, catalog, "nsfw=False")) == {"fox-pg", "fox-by-b"}
    assert set(await image_labels(client, catalog, "")) == every  # no nsfw: every image
    assert (await client.get("/api/v1/images?nsfw=Maybe")).status == 400


async def test_images_sort_period_post_and_cursor(client: TestClient, catalog: Catalog) -> None:
    newest = await image_labels(client, catalog, "sort=Newest")
    assert newest == ["owl-x", "fox-by-b", "fox-r", "fox-pg", "bear-soft"]
    assert await image_labels(client, catalog, "sort=Oldest") == newest[::-1]
    assert await image_labels(client, catalog, "sort=Most Reactions") == newest
    assert await image_labels(client, catalog, "sort=Most Comments") == newest
    assert (await client.get("/api/v1/images?sort=Best")).status == 400
    assert await image_labels(client, catalog, "period=Week") == newest[:4]
    assert (await client.get("/api/v1/images?period=Century")).status == 400

    # The images Alpha published with their version are its post; Beta's is its own.
    fox_post = catalog.versions["Fox style"]
    assert await image_labels(client, catalog, f"postId={fox_post}") == ["fox-r", "fox-pg"]
    own = catalog.images["fox-by-b"]
    assert await image_labels(client, catalog, f"postId={own}") == ["fox-by-b"]
    listed = (await (await client.get("/api/v1/images")).json())["items"]
    assert {i["id"]: i["postId"] for i in listed}[own] == own

    seen: list[str] = []
    url = "/api/v1/images?limit=2"
    while url:
        page = await (await client.get(url)).json()
        label_of = {v: k for k, v in catalog.images.items()}
        seen += [label_of[i["id"]] for i in page["items"]]
        next_page = page["metadata"].get("nextPage")
        if next_page:
            assert "cursor=" in next_page and page["metadata"]["nextCursor"]
        url = "/" + next_page.split("/", 3)[3] if next_page else ""
    assert seen == newest
    assert (await client.get("/api/v1/images?cursor=bm9wZQ")).status == 400


async def test_image_hash_is_the_blurhash_of_the_file(
    client: TestClient, node: Node, catalog: Catalog, tmp_path: Path
) -> None:
    # Federated images whose file this node does not hold yet: no blurhash.
    listed = (await (await client.get("/api/v1/images")).json())["items"]
    assert [i["hash"] for i in listed] == [None] * 5
    user = await node.accounts.add_user("dora", "correct horse battery")
    preview = tmp_path / "preview.png"
    preview.write_bytes(png_bytes(3, (120, 80)))
    published = await node.catalog.publish_path(
        user.did, lora_file(tmp_path / "dora.safetensors", 9), {"name": "Dora"}, [preview]
    )
    version = published["model"]["modelVersions"][0]["id"]
    (image,) = (await (await client.get(f"/api/v1/images?modelVersionId={version}")).json())[
        "items"
    ]
    expected = blurhash_of(preview)
    assert image["hash"] == expected and len(expected) == 36
    model = await (await client.get(f"/api/v1/models/{published['model']['id']}")).json()
    assert model["modelVersions"][0]["images"][0]["hash"] == expected
    one = await (await client.get(f"/api/v1/model-versions/{version}")).json()
    assert one["images"][0]["hash"] == expected


# --- tags and creators ---------------------------------------------------------------


async def test_tags_and_creators_page_on(client: TestClient, catalog: Catalog) -> None:
    for path, total in (("/api/v1/creators", 2), ("/api/v1/tags", 1)):
        first = await (await client.get(f"{path}?limit=1")).json()
        meta = first["metadata"]
        assert (meta["totalItems"], meta["currentPage"], meta["pageSize"]) == (total, 1, 1)
        assert meta["totalPages"] == total
        if total > 1:
            second = await (await client.get("/" + meta["nextPage"].split("/", 3)[3])).json()
            assert second["metadata"]["currentPage"] == 2
            assert second["items"] != first["items"]
            assert "nextPage" not in second["metadata"]
        else:
            assert "nextPage" not in meta


# --- downloads ---------------------------------------------------------------------------


async def test_download_chooses_the_file_by_type_format_size_fp(
    client: TestClient, catalog: Catalog
) -> None:
    version = catalog.versions["Fox style"]
    base = f"/api/download/models/{version}"
    # Neither file is held here: the 404 names the magnet of the file chosen.
    chosen = {}
    for query in (
        "",
        "?fp=fp16",
        "?size=pruned",
        "?size=full&fp=fp32&format=SafeTensor&type=Model",
    ):
        resp = await client.get(base + query)
        assert resp.status == 404
        chosen[query] = (await resp.json())["magnet"]
    assert chosen[""] == chosen["?size=full&fp=fp32&format=SafeTensor&type=Model"]
    assert chosen["?fp=fp16"] == chosen["?size=pruned"] != chosen[""]
    assert "fox-pruned" in chosen["?fp=fp16"] and "fox-full" in chosen[""]
    resp = await client.get(base + "?fp=bf16")
    assert resp.status == 404 and "no file of this version" in (await resp.json())["message"]
    resp = await client.get(base + "?type=Training Data")
    assert "no file of this version" in (await resp.json())["message"]


# --- CORS --------------------------------------------------------------------------------


async def test_cors_for_public_reads_only(client: TestClient, catalog: Catalog) -> None:
    origin = {"Origin": "https://tool.example"}
    resp = await client.get("/api/v1/models", headers=origin)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    bad = await client.get("/api/v1/models?limit=0", headers=origin)
    assert bad.status == 400 and bad.headers["Access-Control-Allow-Origin"] == "*"
    pre = await client.options(
        "/api/v1/images",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in pre.headers
    # Writes and the rest of the API get no CORS headers.
    for method, path in (
        ("POST", "/api/models"),
        ("GET", "/api/auth/me"),
        ("POST", "/api/auth/login"),
    ):
        resp = await client.request(method, path, headers=origin)
        assert "Access-Control-Allow-Origin" not in resp.headers, (method, path)
