"""The README documents every setting, command and endpoint that exists."""

from __future__ import annotations

from pathlib import Path

import click
from aiohttp import web
from aiohttp.test_utils import TestClient

from node.app import Node, create_app
from node.cli import main
from node.config import all_settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [name for name in all_settings() if f"`{name}`" not in README]
    assert missing == []


def _commands(group: click.Group, prefix: str = "civitas") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append(path)
    return found


def test_every_command_is_documented() -> None:
    missing = [c for c in _commands(main) if c.split(" ", 1)[1] not in README]
    assert missing == []


async def test_every_endpoint_is_documented(node: Node) -> None:
    app: web.Application = create_app(node, "x" * 40)
    missing = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if f"`{route.method} {path}`" not in README:
            missing.append(f"{route.method} {path}")
    assert missing == []


async def test_openapi_describes_every_route(client: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = await (await client.get("/api/openapi.json")).json()
    validate(doc)
    missing = []
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if route.method.lower() not in doc["paths"].get(path, {}):
            missing.append(f"{route.method} {path}")
    assert missing == []


def test_the_federation_limits_are_stated_as_enforced() -> None:
    from node.catalog.schemas import MAX_DESCRIPTION, MAX_IMAGE_BYTES
    from node.config import FederationSection
    from node.moderation.list_pages import MAX_LIST_PAGES
    from node.moderation.service import LIST_PAGE
    from node.p2p.federation import wire
    from node.p2p.federation.routes import MAX_INBOX_BYTES
    from node.p2p.federation.service import MAX_PAGE_BYTES, PAGE
    from node.p2p.records import (
        MAX_BODY_DEPTH,
        MAX_LIST_ITEMS,
        MAX_RECORD_BYTES,
        MAX_STRING_BYTES,
    )

    section = README.split("#### Limits", 1)[1].split("\n#", 1)[0]
    lines = " ".join(section.split()).split("- **")
    stated = {line.split("**", 1)[0]: line for line in lines[1:]}
    expected = {
        "a record": [MAX_RECORD_BYTES, MAX_STRING_BYTES, MAX_LIST_ITEMS],
        "a model's description": [MAX_DESCRIPTION, MAX_STRING_BYTES],
        "an image": [MAX_IMAGE_BYTES],
        "a records page": [wire.MAX_PAGE, PAGE, MAX_PAGE_BYTES],
        "an inbox push": [wire.MAX_PUSH, MAX_INBOX_BYTES],
        "a subscribed takedown list": [MAX_LIST_PAGES, LIST_PAGE],
    }
    assert sorted(stated) == sorted(expected)
    for name, values in expected.items():
        for value in values:
            assert f" {value:,} " in stated[name], f"README Limits: {name} must state {value:,}"
    assert f"at most {MAX_BODY_DEPTH} levels" in stated["a record"]
    # One image limit: what is published here is what peers fetch from each other.
    assert FederationSection().wanted_max_bytes == MAX_IMAGE_BYTES
