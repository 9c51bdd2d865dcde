"""A catalog for the Civitai API parity tests (test_civitai_api.py, test_api_parity.py).

The catalog is built from signed records (tests/catalog/forge.py) as a peer would send
them, so a test can hold old and new models, multi-file versions, several ratings and
permissions, and images by other authors, without publishing files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.p2p.records import Record, now_ms, sign_record
from tests.catalog import forge

PEER = "did:key:z6MkcivitaiParityPeerForTestsOnly"
DAY = 86_400_000
A = forge.key("civitai A")
B = forge.key("civitai B")


def civitai_file(label: str, *, primary: bool | None = None, **extra: Any) -> dict[str, Any]:
    sha = forge.sha(f"file {label}")
    item = {
        "name": f"{label}.safetensors",
        "size": 1000 + len(label),
        "sha256": sha,
        "blake3": forge.sha(f"blake3 {label}"),
        "crc32": sha[:4],
        "format": "SafeTensor",
        "infohash": forge.sha(f"infohash {label}")[:20],
        **extra,
    }
    if primary is not None:
        item["primary"] = primary
    return item


def signed_version(signer: Any, root: bytes, files: list[dict[str, Any]], created: int) -> Record:
    body = {
        "model": root,
        "name": "v1",
        "base_model": "SD 1.5",
        "trained_words": [],
        "files": files,
    }
    return sign_record(signer, "model_version", body, created=created)


def signed_image(
    signer: Any, version: bytes | None, label: str, rating: str, created: int
) -> Record:
    body: dict[str, Any] = {
        "sha256": forge.sha(f"image {label}"),
        "width": 8,
        "height": 8,
        "size": 100,
        "mime": "image/png",
        "rating": rating,
    }
    if version is not None:
        body["model_version"] = version
    return sign_record(signer, "image", body, created=created)


@dataclass
class Catalog:
    ids: dict[str, int]  # model name -> Civitai id
    versions: dict[str, int]  # model name -> its version's Civitai id
    images: dict[str, int]  # image label -> Civitai id


@pytest.fixture
async def catalog(node: Node, client: TestClient) -> Catalog:
    """Three models and five images:

    - "Fox style" (LORA, PG, by Alpha, new, every permission, two files: pruned fp16
      first and full fp32 primary) with images fox-pg (PG), fox-r (R), and fox-by-b
      (PG, by Beta on Alpha's version);
    - "Night owl" (Checkpoint, R, by Beta, new, no permission at all) with owl-x (X);
    - "Old bear" (TextualInversion, PG13, by Alpha, 400 days old, Image use only) with
      bear-soft (PG13, 400 days old).
    """
    now = now_ms() - 60_000
    old = now - 400 * DAY
    every_use = ["Image", "RentCivit", "Rent", "Sell"]
    fox = forge.model(
        A, "Fox style", created=now, rating="PG", permissions={"allow_commercial_use": every_use}
    )
    owl = forge.model(
        B,
        "Night owl",
        created=now + 1,
        type="Checkpoint",
        rating="R",
        permissions={
            "allow_no_credit": False,
            "allow_derivatives": False,
            "allow_different_license": False,
            "allow_commercial_use": [],
        },
    )
    bear = forge.model(
        A,
        "Old bear",
        created=old,
        type="TextualInversion",
        rating="PG13",
        permissions={"allow_commercial_use": ["Image"]},
    )
    fox_v = signed_version(
        A,
        fox.id,
        [
            civitai_file("fox-pruned", primary=False, fp="fp16", size_type="pruned"),
            civitai_file("fox-full", primary=True, fp="fp32", size_type="full"),
        ],
        now + 2,
    )
    owl_v = signed_version(B, owl.id, [civitai_file("owl")], now + 3)
    bear_v = signed_version(A, bear.id, [civitai_file("bear")], old + 1)
    images = {
        "fox-pg": signed_image(A, fox_v.id, "fox-pg", "PG", now + 4),
        "fox-r": signed_image(A, fox_v.id, "fox-r", "R", now + 5),
        "fox-by-b": signed_image(B, fox_v.id, "fox-by-b", "PG", now + 6),
        "owl-x": signed_image(B, owl_v.id, "owl-x", "X", now + 7),
        "bear-soft": signed_image(A, bear_v.id, "bear-soft", "PG13", old + 2),
    }
    records = [
        forge.profile(A, "Alpha"),
        forge.profile(B, "Beta"),
        fox,
        owl,
        bear,
        fox_v,
        owl_v,
        bear_v,
        *images.values(),
    ]
    refused: list[Any] = []
    await node.log.accept_verified(records, PEER, refused=refused)
    assert refused == []
    listing = await (await client.get("/api/v1/models?limit=100")).json()
    ids = {m["name"]: m["id"] for m in listing["items"]}
    versions = {m["name"]: m["modelVersions"][0]["id"] for m in listing["items"]}
    shown = await (await client.get("/api/v1/images?limit=200")).json()
    by_url = {i["civitas"]["sha256"]: i["id"] for i in shown["items"]}
    image_ids = {
        label: by_url[hashlib.sha256(f"image {label}".encode()).hexdigest().upper()]
        for label in images
    }
    return Catalog(ids, versions, image_ids)


async def names(client: TestClient, query: str) -> list[str]:
    resp = await client.get(f"/api/v1/models?{query}")
    assert resp.status == 200, (query, await resp.text())
    return [m["name"] for m in (await resp.json())["items"]]


async def image_labels(client: TestClient, catalog: Catalog, query: str) -> list[str]:
    resp = await client.get(f"/api/v1/images?{query}")
    assert resp.status == 200, (query, await resp.text())
    label_of = {v: k for k, v in catalog.images.items()}
    return [label_of[i["id"]] for i in (await resp.json())["items"]]
