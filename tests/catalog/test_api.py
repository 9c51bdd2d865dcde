"""The Civitai-compatible API and publishing over HTTP, against a live server."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from node.accounts.service import User
from node.app import Node
from tests.catalog.conftest import PASSWORD, png_bytes

MODEL_KEYS = {
    "id",
    "name",
    "description",
    "type",
    "poi",
    "nsfw",
    "nsfwLevel",
    "allowNoCredit",
    "allowCommercialUse",
    "allowDerivatives",
    "allowDifferentLicense",
    "stats",
    "creator",
    "tags",
    "modelVersions",
}
VERSION_KEYS = {
    "id",
    "name",
    "createdAt",
    "updatedAt",
    "publishedAt",
    "trainedWords",
    "baseModel",
    "baseModelType",
    "description",
    "stats",
    "files",
    "images",
    "downloadUrl",
}
FILE_KEYS = {
    "id",
    "sizeKB",
    "name",
    "type",
    "pickleScanResult",
    "pickleScanMessage",
    "virusScanResult",
    "metadata",
    "hashes",
    "downloadUrl",
    "primary",
}
IMAGE_KEYS = {"id", "url", "nsfwLevel", "width", "height", "hash", "type", "meta"}


def check_model_shape(model: dict[str, Any]) -> None:
    assert MODEL_KEYS <= set(model)
    assert set(model["stats"]) >= {"downloadCount", "favoriteCount", "rating", "ratingCount"}
    assert set(model["creator"]) >= {"username", "image"}
    for version in model["modelVersions"]:
        assert VERSION_KEYS <= set(version)
        for file in version["files"]:
            assert FILE_KEYS <= set(file)
            assert set(file["metadata"]) == {"format", "size", "fp"}
        for image in version["images"]:
            assert IMAGE_KEYS <= set(image)


@pytest.fixture
async def published(
    node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> dict[str, Any]:
    preview = tmp_path / "preview.png"
    preview.write_bytes(png_bytes(1, (128, 96)))
    path = make_lora("fox.safetensors", 1)
    result = await node.catalog.publish_path(
        alice.did,
        path,
        {
            "name": "Fox style",
            "description": "Watercolor foxes",
            "tags": ["watercolor", "animals"],
            "trained_words": ["foxstyle"],
            "license": "CreativeML OpenRAIL-M",
        },
        previews=[preview],
    )
    return {"model": result["model"], "path": path}


async def test_models_list_and_detail_have_civitai_shapes(
    client: TestClient, published: dict[str, Any]
) -> None:
    listing = await (await client.get("/api/v1/models")).json()
    assert set(listing) == {"items", "metadata"}
    (model,) = listing["items"]
    check_model_shape(model)
    detail = await (await client.get(f"/api/v1/models/{model['id']}")).json()
    check_model_shape(detail)
    assert detail == model
    assert detail["allowCommercialUse"] == ["Image", "RentCivit", "Rent", "Sell"]
    version = detail["modelVersions"][0]
    assert version["downloadUrl"] == str(client.make_url(f"/api/download/models/{version['id']}"))
    assert version["images"][0]["meta"]["negativePrompt"] == "blurry, lowres"
    assert (await client.get("/api/v1/models/123")).status == 404
    assert (await client.get("/api/v1/models/not-a-number")).status == 404


async def test_model_version_and_by_hash_for_every_hash_type(
    client: TestClient, published: dict[str, Any]
) -> None:
    version = published["model"]["modelVersions"][0]
    detail = await (await client.get(f"/api/v1/model-versions/{version['id']}")).json()
    assert VERSION_KEYS <= set(detail)
    assert detail["model"] == {"name": "Fox style", "type": "LORA", "nsfw": False, "poi": False}
    assert detail["modelId"] == published["model"]["id"]

    hashes = version["files"][0]["hashes"]
    assert set(hashes) == {"AutoV2", "AutoV3", "SHA256", "CRC32", "BLAKE3"}
    for kind, value in hashes.items():
        for variant in (value, value.lower()):
            resp = await client.get(f"/api/v1/model-versions/by-hash/{variant}")
            assert resp.status == 200, kind
            assert (await resp.json())["id"] == version["id"]
    assert (await client.get("/api/v1/model-versions/by-hash/" + "0" * 64)).status == 404
    assert (await client.get("/api/v1/model-versions/by-hash/nothex")).status == 404

    resp = await client.post(
        "/api/v1/model-versions/by-hash", json=[hashes["SHA256"].lower(), "0" * 64]
    )
    assert [v["id"] for v in await resp.json()] == [version["id"]]
    resp = await client.post("/api/v1/model-versions/by-hash", json=["a"] * 101)
    assert resp.status == 400


async def test_download_serves_ranges_with_a_file_name_and_counts(
    client: TestClient, published: dict[str, Any]
) -> None:
    data = published["path"].read_bytes()
    version_id = published["model"]["modelVersions"][0]["id"]
    resp = await client.get(f"/api/download/models/{version_id}")
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Content-Disposition"] == "attachment; filename*=UTF-8''fox.safetensors"
    resp = await client.get(f"/api/download/models/{version_id}", headers={"Range": "bytes=8-99"})
    assert resp.status == 206
    assert await resp.read() == data[8:100]
    model = await (await client.get(f"/api/v1/models/{published['model']['id']}")).json()
    assert model["stats"]["downloadCount"] == 1  # range requests resume; they are not new
    assert (await client.get("/api/download/models/42")).status == 404


async def test_images_api_and_resized_previews(
    client: TestClient, published: dict[str, Any]
) -> None:
    version = published["model"]["modelVersions"][0]
    listing = await (await client.get(f"/api/v1/images?modelVersionId={version['id']}")).json()
    (image,) = listing["items"]
    assert IMAGE_KEYS <= set(image)
    assert image["username"] == "alice"
    assert image["meta"]["seed"] == 1234 and image["meta"]["steps"] == 20
    without = await (await client.get("/api/v1/images?withMeta=false")).json()
    assert without["items"][0]["meta"] is None

    path = "/" + image["url"].split("/", 3)[3]  # the URL is absolute; the client wants a path
    original = await client.get(path.replace("width=128", "original=true"))
    assert original.status == 200 and original.headers["Content-Type"] == "image/png"
    # 64 rounds up to the smallest preview width, 160: wider than the image, so the original
    small = await client.get(path.replace("width=128", "width=64"))
    assert small.status == 200
    assert Image.open(io.BytesIO(await small.read())).size == (128, 96)
    assert (await client.get(path.replace("width=128", "width=0"))).status == 404
    assert (await client.get("/images/" + "A" * 64 + "/width=64/1.png")).status == 404


async def test_creators_and_tags(client: TestClient, published: dict[str, Any]) -> None:
    creators = await (await client.get("/api/v1/creators")).json()
    assert [(c["username"], c["modelCount"]) for c in creators["items"]] == [("alice", 1)]
    tags = await (await client.get("/api/v1/tags")).json()
    assert sorted(t["name"] for t in tags["items"]) == ["animals", "watercolor"]
    assert all(t["modelCount"] == 1 for t in tags["items"])


async def test_bad_query_parameters_are_400s(client: TestClient) -> None:
    for query in ("limit=0", "limit=abc", "sort=Best", "types=Banana", "nsfw=maybe", "cursor=@@"):
        resp = await client.get(f"/api/v1/models?{query}")
        assert resp.status == 400, query
        assert "error" in await resp.json()


async def test_unknown_bearer_token_reads_as_anonymous(
    client: TestClient, published: dict[str, Any]
) -> None:
    headers = {"Authorization": "Bearer a-civitai-api-key"}
    resp = await client.get("/api/v1/models", headers=headers)
    assert resp.status == 200
    assert len((await resp.json())["items"]) == 1


def upload_form(
    data: bytes, metadata: dict[str, Any], images: list[bytes] = ()
) -> aiohttp.FormData:  # type: ignore[assignment]
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(metadata), content_type="application/json")
    for image in images:
        form.add_field("image", image, filename="preview.png", content_type="image/png")
    form.add_field(
        "file", data, filename="fox.safetensors", content_type="application/octet-stream"
    )
    return form


async def test_streamed_upload_publishes_and_a_new_version_follows(
    client: TestClient, node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    token = await node.accounts.create_token("alice")
    auth = {"Authorization": f"Bearer {token}"}
    data = make_lora("up.safetensors", 7).read_bytes()
    meta = {"name": "Uploaded fox", "base_model": "SD 1.5", "tags": ["fox"]}
    assert (await client.post("/api/models", data=upload_form(data, meta))).status == 401

    resp = await client.post(
        "/api/models", data=upload_form(data, meta, [png_bytes(2)]), headers=auth
    )
    assert resp.status == 201, await resp.text()
    result = await resp.json()
    assert result["sha256"] == hashlib.sha256(data).hexdigest().upper()
    model = result["model"]
    assert model["name"] == "Uploaded fox"
    assert len(model["modelVersions"][0]["images"]) == 1

    again = await client.post("/api/models", data=upload_form(data, meta), headers=auth)
    assert again.status == 200 and not (await again.json())["created"]

    v2 = make_lora("up2.safetensors", 8).read_bytes()
    resp = await client.post(
        f"/api/models/{model['id']}/versions", data=upload_form(v2, {"version": "v2"}), headers=auth
    )
    assert resp.status == 201, await resp.text()
    assert [v["name"] for v in (await resp.json())["model"]["modelVersions"]] == ["v2", "v1"]

    resp = await client.patch(
        f"/api/models/{model['id']}", json={"name": "Renamed fox"}, headers=auth
    )
    assert resp.status == 200 and (await resp.json())["name"] == "Renamed fox"
    await node.accounts.add_user("bob", PASSWORD)
    bob_token = await node.accounts.create_token("bob")
    resp = await client.patch(
        f"/api/models/{model['id']}",
        json={"name": "Bob's now"},
        headers={"Authorization": f"Bearer {bob_token}"},
    )
    assert resp.status == 403


async def test_a_bad_upload_is_refused_and_leaves_nothing(
    client: TestClient, node: Node, alice: User, tmp_path: Path
) -> None:
    token = await node.accounts.create_token("alice")
    auth = {"Authorization": f"Bearer {token}"}
    meta = {"name": "Broken", "type": "LORA", "base_model": "SD 1.5"}
    resp = await client.post(
        "/api/models", data=upload_form(b"\x05\x00" + b"x" * 100, meta), headers=auth
    )
    assert resp.status == 400
    assert (await resp.json())["error"].startswith("safetensors_")
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(meta))
    form.add_field("file", b"\x80\x04\x95junk", filename="model.ckpt")
    resp = await client.post("/api/models", data=form, headers=auth)
    assert resp.status == 415
    assert "safetensors" in (await resp.json())["message"]
    assert (await (await client.get("/api/v1/models")).json())["items"] == []
    assert list(node.store.tmp.iterdir()) == []


async def test_image_resources_link_to_catalog_versions_by_hash(
    client: TestClient, node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    lora = await node.catalog.publish_path(
        alice.did, make_lora("style.safetensors", 21), {"name": "Style LoRA"}
    )
    version = lora["model"]["modelVersions"][0]
    autov3 = version["files"][0]["hashes"]["AutoV3"]
    parameters = (
        "a fox, <lora:style:0.7>\nNegative prompt: blurry\n"
        f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 96x64, "
        f'Lora hashes: "style: {autov3.lower()}"'
    )
    preview = tmp_path / "made-with.png"
    preview.write_bytes(png_bytes(5, parameters=parameters))
    other = await node.catalog.publish_path(
        alice.did, make_lora("other.safetensors", 22), {"name": "Other"}, previews=[preview]
    )
    other_version = other["model"]["modelVersions"][0]["id"]
    listing = await (await client.get(f"/api/v1/images?modelVersionId={other_version}")).json()
    (image,) = listing["items"]
    linked = [r for r in image["civitas"]["resources"] if r["modelVersionId"]]
    assert linked == [
        {
            "name": "style",
            "type": "lora",
            "hash": autov3,
            "weight": "0.7",
            "modelVersionId": version["id"],
            "modelId": lora["model"]["id"],
        }
    ]


HUGE_IDS = [str(2**63), str(2**64 + 5), "9" * 40, "-1", str(-(2**63) - 1), "9" * 5000, "0x10"]


async def test_huge_or_negative_integer_ids_are_4xx_json_never_500(
    client: TestClient, node: Node, alice: User
) -> None:
    auth = {"Authorization": f"Bearer {await node.accounts.create_token('alice')}"}
    for raw in HUGE_IDS:
        for method, path, kwargs in [
            ("GET", f"/api/v1/models/{raw}", {}),
            ("GET", f"/api/v1/model-versions/{raw}", {}),
            ("GET", f"/api/download/models/{raw}", {}),
            ("PATCH", f"/api/models/{raw}", {"json": {"name": "x"}, "headers": auth}),
            ("DELETE", f"/api/models/{raw}", {"headers": auth}),
            (
                "POST",
                f"/api/models/{raw}/versions",
                {"data": upload_form(b"{}", {"version": "v2"}), "headers": auth},
            ),
            ("GET", f"/api/v1/images?modelId={raw}", {}),
            ("GET", f"/api/v1/images?modelVersionId={raw}", {}),
        ]:
            resp = await client.request(method, path, **kwargs)
            assert resp.status in (400, 404), (method, path[:80], resp.status)
            assert "error" in await resp.json(), (method, path[:80])
        page = await client.get(f"/models/{raw}")
        assert page.status == 404, raw[:80]


def _noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG that does not compress: ``side`` x ``side`` random RGB, about 3 bytes a pixel."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG", compress_level=0)
    return out.getvalue()


async def test_preview_parts_over_1_mib_are_accepted_up_to_the_image_cap(
    client: TestClient, node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    auth = {"Authorization": f"Bearer {await node.accounts.create_token('alice')}"}
    big = _noise_png(1000)
    assert 2 * 2**20 < len(big) < node.config.server.max_body_bytes * 4
    meta = {"name": "Big preview", "base_model": "SD 1.5"}
    data = make_lora("big.safetensors", 3).read_bytes()
    resp = await client.post("/api/models", data=upload_form(data, meta, [big]), headers=auth)
    assert resp.status == 201, await resp.text()
    images = (await resp.json())["model"]["modelVersions"][0]["images"]
    assert [(i["width"], i["height"]) for i in images] == [(1000, 1000)]

    nine = [png_bytes(i) for i in range(9)]
    data = make_lora("nine.safetensors", 4).read_bytes()
    resp = await client.post("/api/models", data=upload_form(data, meta, nine), headers=auth)
    assert resp.status == 400 and "at most 8" in (await resp.json())["message"]
    assert list(node.store.tmp.iterdir()) == []
