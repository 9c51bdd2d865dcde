"""Search: full text, filters, sorts and cursors — the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from node.app import Node
from node.catalog.search import SearchQuery
from node.errors import BadRequest
from node.p2p.keys import SigningKey
from node.p2p.records import sign_record

ALICE = SigningKey.from_seed(b"a" * 32)
BOB = SigningKey.from_seed(b"b" * 32)

# name, type, base model, tags, trained words, description, author, created
CATALOG = [
    ("Anime Girl", "LORA", "SDXL 1.0", ["anime", "girl"], ["animegirl"], "Big eyes.", ALICE, 1),
    ("Anime Landscape", "LORA", "SD 1.5", ["anime", "landscape"], [], "Hills.", ALICE, 2),
    ("Realistic Vision", "Checkpoint", "SD 1.5", ["photorealistic"], [], "Photos.", BOB, 3),
    ("Watercolor Fox", "LORA", "SD 1.5", ["watercolor", "animals"], ["foxstyle"], "", BOB, 4),
    ("Pixel Sprites", "LoCon", "SDXL 1.0", ["pixelart"], ["pixelsprite"], "Anime-ish.", BOB, 5),
    ("Dreamy VAE", "VAE", "SD 1.5", [], [], "Soft colours for landscapes.", ALICE, 6),
]


def file_entry(seed: str) -> dict[str, Any]:
    digest = hashlib.sha256(seed.encode()).digest()
    return {
        "name": f"{seed}.safetensors",
        "size": 1000,
        "sha256": digest,
        "blake3": digest,
        "crc32": digest[:4],
        "format": "SafeTensor",
    }


async def fill(node: Node) -> dict[str, int]:
    batch = [
        sign_record(ALICE, "profile", {"name": "alice"}, created=1),
        sign_record(BOB, "profile", {"name": "bob"}, created=1),
    ]
    roots = {}
    for name, mtype, base, tags, words, desc, key, created in CATALOG:
        model = sign_record(
            key,
            "model",
            {"name": name, "type": mtype, "tags": tags, "description": desc},
            created=created * 1000,
        )
        version = sign_record(
            key,
            "model_version",
            {
                "model": model.id,
                "name": "v1",
                "base_model": base,
                "trained_words": words,
                "files": [file_entry(name)],
            },
            created=created * 1000 + 1,
        )
        batch += [model, version]
        roots[name] = model.id
    await node.log.accept_verified(batch)
    return {name: i for i, name in enumerate(roots)}


async def names(node: Node, **kw: Any) -> list[str]:
    roots, _ = await node.catalog.search_index.search(SearchQuery(**kw))
    return [m["name"] for m in await node.catalog.views.models_by_root(roots)]


async def test_full_text_over_names_descriptions_tags_words_and_creators(node: Node) -> None:
    await fill(node)
    assert await names(node, text="anime") == ["Pixel Sprites", "Anime Landscape", "Anime Girl"]
    assert await names(node, text="anime girl") == ["Anime Girl"]
    # Words match as prefixes, whatever the case: "anim" also finds the "animals" tag.
    assert await names(node, text="ANIM") == [
        "Pixel Sprites",
        "Watercolor Fox",
        "Anime Landscape",
        "Anime Girl",
    ]
    assert await names(node, text="foxstyle") == ["Watercolor Fox"]  # a trigger word
    assert await names(node, text="landscapes") == ["Dreamy VAE"]  # the description
    assert await names(node, text="photorealistic") == ["Realistic Vision"]  # a tag
    assert await names(node, text="bob") == ["Pixel Sprites", "Watercolor Fox", "Realistic Vision"]
    assert await names(node, text="nothing like this") == []
    assert await names(node, text="!!! ???") == await names(node)  # no words: no text filter


async def test_filters(node: Node) -> None:
    await fill(node)
    assert await names(node, types=["Checkpoint", "VAE"]) == ["Dreamy VAE", "Realistic Vision"]
    assert await names(node, base_models=["SDXL 1.0"]) == ["Pixel Sprites", "Anime Girl"]
    assert await names(node, text="anime", types=["LORA"], base_models=["SD 1.5"]) == [
        "Anime Landscape"
    ]
    assert await names(node, tag="ANIME") == ["Anime Landscape", "Anime Girl"]
    assert await names(node, username="alice") == ["Dreamy VAE", "Anime Landscape", "Anime Girl"]


async def test_sorts_and_cursor_pages(node: Node) -> None:
    await fill(node)
    by_name = await names(node, sort="name")
    assert by_name == sorted(by_name)
    newest = await names(node)
    pages: list[str] = []
    cursor = None
    while True:
        roots, cursor = await node.catalog.search_index.search(SearchQuery(limit=4, cursor=cursor))
        pages += [m["name"] for m in await node.catalog.views.models_by_root(roots)]
        if cursor is None:
            break
    assert pages == newest and len(pages) == len(CATALOG)

    version = await node.catalog.views.version_by_hash(
        hashlib.sha256(b"Watercolor Fox").hexdigest()
    )
    assert version is not None
    for _ in range(3):
        await node.catalog.views.count_download(bytes.fromhex(version["civitas"]["recordId"]))
    assert (await names(node, sort="most_downloaded"))[0] == "Watercolor Fox"
    top, cursor = await node.catalog.search_index.search(
        SearchQuery(sort="most_downloaded", limit=1)
    )
    rest, _ = await node.catalog.search_index.search(
        SearchQuery(sort="most_downloaded", limit=10, cursor=cursor)
    )
    assert len(top + rest) == len(CATALOG) and len(set(top + rest)) == len(CATALOG)


async def test_bad_queries_are_refused(node: Node) -> None:
    for bad in (
        {"limit": 0},
        {"limit": 101},
        {"types": ["Banana"]},
        {"ratings": ["Z"]},
        {"cursor": "not-a-cursor"},
    ):
        with pytest.raises(BadRequest):
            await node.catalog.search_index.search(SearchQuery(**bad))  # type: ignore[arg-type]
