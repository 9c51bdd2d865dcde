"""Atom feeds, read over HTTP from a live node and parsed as a feed reader would: the
newest models, a tag's and a creator's, with what the catalog hides left out."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.p2p.keys import SigningKey
from node.p2p.records import sign_record
from tests.catalog.conftest import PASSWORD

ATOM = "{http://www.w3.org/2005/Atom}"
NASTY = 'Fox <script>alert("x")</script> & "friends"'
DESCRIPTION = (
    "Soft **watercolor** foxes &amp; <b>hills</b><script>alert(1)</script>.\n\n"
    "Two <i>styles</i>.<img src=x onerror=alert(2)>"
)


def rfc3339(value: str | None) -> datetime:
    assert value, "a date is required"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def parse(body: bytes) -> dict[str, Any]:
    """Parse an Atom document and check what RFC 4287 requires of it; its entries."""
    root = ET.fromstring(body)  # noqa: S314 - the node under test wrote it
    assert root.tag == f"{ATOM}feed"
    for name in ("title", "id", "updated"):
        assert len(root.findall(f"{ATOM}{name}")) == 1, name
    feed_updated = rfc3339(root.findtext(f"{ATOM}updated"))
    links = {link.get("rel"): link for link in root.findall(f"{ATOM}link")}
    assert links["self"].get("type") == "application/atom+xml"
    entries = []
    for entry in root.findall(f"{ATOM}entry"):
        for name in ("title", "id", "updated", "published"):
            assert len(entry.findall(f"{ATOM}{name}")) == 1, name
        assert ":" in (entry.findtext(f"{ATOM}id") or "")  # an IRI
        updated = rfc3339(entry.findtext(f"{ATOM}updated"))
        assert updated <= feed_updated
        alternate = [
            link for link in entry.findall(f"{ATOM}link") if link.get("rel") == "alternate"
        ]
        assert len(alternate) == 1 and alternate[0].get("type") == "text/html"
        summary = entry.find(f"{ATOM}summary")
        assert summary is None or (summary.get("type") == "text" and len(summary) == 0)
        entries.append(
            {
                "title": entry.findtext(f"{ATOM}title"),
                "id": entry.findtext(f"{ATOM}id"),
                "link": alternate[0].get("href"),
                "author": entry.findtext(f"{ATOM}author/{ATOM}name"),
                "author_uri": entry.findtext(f"{ATOM}author/{ATOM}uri"),
                "summary": None if summary is None else summary.text,
                "categories": {
                    (c.get("scheme"), c.get("term")) for c in entry.findall(f"{ATOM}category")
                },
            }
        )
    return {
        "title": root.findtext(f"{ATOM}title"),
        "id": root.findtext(f"{ATOM}id"),
        "self": links["self"].get("href"),
        "alternate": links["alternate"].get("href"),
        "entries": entries,
    }


async def feed(client: TestClient, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    return parse(await resp.read())


async def publish(node: Node, user: User, path: Path, **data: Any) -> dict[str, Any]:
    result = await node.catalog.publish_path(user.did, path, data)
    return dict(result["model"])


def base(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_the_new_feed_lists_the_newest_models_with_links_and_escaped_text(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    first = await publish(node, alice, make_lora("a.safetensors", 1), name="Anime", tags=["anime"])
    second = await publish(
        node, alice, make_lora("b.safetensors", 2), name="Watercolor", tags=["watercolor"]
    )
    nasty = await publish(
        node,
        alice,
        make_lora("c.safetensors", 3),
        name=NASTY,
        description=DESCRIPTION,
        tags=["Anime", "fox"],
    )
    resp = await client.get("/feeds/new.atom")
    raw = await resp.read()
    assert resp.status == 200
    assert b"<script" not in raw  # the name is escaped, the description's script gone
    got = parse(raw)
    here = base(client)
    assert got["self"] == f"{here}/feeds/new.atom" and got["alternate"] == f"{here}/"
    assert got["id"].startswith("urn:civitas:feed:")
    assert "test-node" in got["title"]
    assert [e["title"] for e in got["entries"]] == [NASTY, "Watercolor", "Anime"]
    top = got["entries"][0]
    assert top["link"] == f"{here}/models/{nasty['id']}"
    assert top["id"] == f"urn:civitas:model:{nasty['civitas']['rootId']}"
    assert top["author"] == "alice" and top["author_uri"] == f"{here}/creators/alice"
    assert top["summary"] == "Soft watercolor foxes & hills. Two styles."
    assert {("urn:civitas:model-type", "LORA"), ("urn:civitas:tag", "anime")} <= top["categories"]
    assert ("urn:civitas:tag", "fox") in top["categories"]
    assert got["entries"][2]["link"] == f"{here}/models/{first['id']}"
    assert got["entries"][1]["id"] == f"urn:civitas:model:{second['civitas']['rootId']}"
    # A model without a description has no summary element.
    assert got["entries"][1]["summary"] is None
    # A reader that has it already is told so.
    etag = resp.headers["ETag"]
    assert resp.headers["Last-Modified"].endswith("GMT")
    again = await client.get("/feeds/new.atom", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag


async def test_a_withdrawn_model_leaves_every_feed(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    kept = await publish(node, alice, make_lora("a.safetensors", 1), name="Kept", tags=["fox"])
    gone = await publish(node, alice, make_lora("b.safetensors", 2), name="Gone", tags=["fox"])
    before = await client.get("/feeds/new.atom")
    assert [e["title"] for e in parse(await before.read())["entries"]] == ["Gone", "Kept"]
    await node.catalog.withdraw_model(alice.did, gone["id"], "a mistake")
    for path in ("/feeds/new.atom", "/feeds/tags/fox.atom", "/feeds/creators/alice.atom"):
        got = await feed(client, path)
        assert [e["title"] for e in got["entries"]] == ["Kept"], path
        assert got["entries"][0]["link"].endswith(f"/models/{kept['id']}")
    # The document changed, so the old ETag no longer answers 304.
    after = await client.get("/feeds/new.atom", headers={"If-None-Match": before.headers["ETag"]})
    assert after.status == 200


async def test_the_tag_feed_holds_only_models_with_that_tag(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    await publish(node, alice, make_lora("a.safetensors", 1), name="Anime one", tags=["anime"])
    await publish(node, alice, make_lora("b.safetensors", 2), name="Landscape", tags=["hills"])
    await publish(node, alice, make_lora("c.safetensors", 3), name="Anime two", tags=["Anime"])
    got = await feed(client, "/feeds/tags/Anime.atom")
    assert [e["title"] for e in got["entries"]] == ["Anime two", "Anime one"]
    assert got["self"] == f"{base(client)}/feeds/tags/Anime.atom"
    assert got["alternate"] == f"{base(client)}/?tag=anime"
    # A tag nobody used: an empty feed that still says when it was made.
    empty = await client.get("/feeds/tags/no%20such%20tag.atom")
    assert empty.status == 200
    assert parse(await empty.read())["entries"] == []


async def test_the_creator_feed_and_an_unknown_creator(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    bob = await node.accounts.add_user("bob", PASSWORD)
    await publish(node, alice, make_lora("a.safetensors", 1), name="Alice's")
    await publish(node, bob, make_lora("b.safetensors", 2), name="Bob's")
    got = await feed(client, "/feeds/creators/ALICE.atom")  # any case, as the API
    assert [(e["title"], e["author"]) for e in got["entries"]] == [("Alice's", "alice")]
    assert got["alternate"] == f"{base(client)}/creators/ALICE"
    resp = await client.get("/feeds/creators/nobody.atom")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    # A member who has published nothing yet: an empty feed.
    await node.accounts.add_user("carol", PASSWORD)
    assert (await feed(client, "/feeds/creators/carol.atom"))["entries"] == []


async def test_mature_models_only_when_asked_and_bad_input(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    await publish(node, alice, make_lora("a.safetensors", 1), name="Safe")
    await publish(node, alice, make_lora("b.safetensors", 2), name="Mature", rating="R")
    shown = await feed(client, "/feeds/new.atom")
    assert [e["title"] for e in shown["entries"]] == ["Safe"]
    everything = await feed(client, "/feeds/new.atom?nsfw=true")
    assert [e["title"] for e in everything["entries"]] == ["Mature", "Safe"]
    assert everything["self"] == f"{base(client)}/feeds/new.atom?nsfw=true"
    resp = await client.get("/feeds/new.atom?nsfw=maybe")
    assert resp.status == 400 and (await resp.json())["error"]
    resp = await client.get("/feeds/creators/" + "x" * 300 + ".atom")
    assert resp.status == 400 and (await resp.json())["error"]


def _file(seed: str) -> dict[str, Any]:
    digest = hashlib.sha256(seed.encode()).digest()
    return {
        "name": f"{seed}.safetensors",
        "size": 1000,
        "sha256": digest,
        "blake3": digest,
        "crc32": digest[:4],
        "format": "SafeTensor",
    }


async def test_a_feed_holds_the_newest_fifty(node: Node, client: TestClient) -> None:
    key = SigningKey.from_seed(b"f" * 32)
    batch = [sign_record(key, "profile", {"name": "prolific"}, created=1)]
    for i in range(55):
        model = sign_record(
            key, "model", {"name": f"Model {i:02d}", "type": "LORA"}, created=i + 10
        )
        batch += [
            model,
            sign_record(
                key,
                "model_version",
                {
                    "model": model.id,
                    "name": "v1",
                    "base_model": "SD 1.5",
                    "files": [_file(f"m{i}")],
                },
                created=i + 11,
            ),
        ]
    await node.log.accept_verified(batch)
    got = await feed(client, "/feeds/creators/prolific.atom")
    assert [e["title"] for e in got["entries"]] == [f"Model {i:02d}" for i in range(54, 4, -1)]


async def test_the_pages_name_their_feeds(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    link = '<link rel="alternate" type="application/atom+xml"'
    for page, url in (
        ("/", "/feeds/new.atom"),
        ("/?tag=Anime", "/feeds/tags/anime.atom"),
        ("/creators/alice", "/feeds/creators/alice.atom"),
    ):
        html = await (await client.get(page)).text()
        head = html.split("</head>")[0]
        assert link in head and f'href="{url}"' in head, page
