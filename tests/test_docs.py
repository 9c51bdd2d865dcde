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
