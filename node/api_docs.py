"""``GET /api/docs``: the OpenAPI document as a page, rendered here (no CDN, no script)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from node.openapi import document
from node.render import RENDERER, page

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    auth: bool
    params: list[dict[str, Any]]
    body: list[str]
    responses: list[tuple[str, str, list[str]]]  # status, description, content types

    @property
    def anchor(self) -> str:
        slug = "".join(c if c.isalnum() else "-" for c in self.path).strip("-")
        return f"{self.method}-{slug}"


@dataclass
class Section:
    name: str
    operations: list[Operation] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name).strip("-").lower()


def _section(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts[:2] == ["api", "v1"]:
        return "Civitai-compatible API (/api/v1)"
    if parts and parts[0] == "api" and len(parts) > 1:
        return f"/api/{parts[1]}"
    return f"/{parts[0]}" if parts else "/"


def sections(doc: dict[str, Any]) -> list[Section]:
    """The document's operations, grouped by the first segment(s) of their paths."""
    found: dict[str, Section] = {}
    for path in sorted(doc["paths"]):
        for method in METHODS:
            op = doc["paths"][path].get(method)
            if op is None:
                continue
            body = sorted(op.get("requestBody", {}).get("content", {}))
            responses = [
                (status, str(r.get("description", "")), sorted(r.get("content", {})))
                for status, r in sorted(op.get("responses", {}).items())
            ]
            name = _section(path)
            found.setdefault(name, Section(name)).operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    summary=str(op.get("summary", "")),
                    auth=bool(op.get("security")),
                    params=list(op.get("parameters", [])),
                    body=body,
                    responses=responses,
                )
            )
    return sorted(found.values(), key=lambda s: s.name)


@page
async def api_docs(request: web.Request) -> web.StreamResponse:
    doc = document()
    found = sections(doc)
    return request.app[RENDERER].render(
        request,
        "api_docs.html",
        title="API",
        info=doc["info"],
        sections=found,
        count=sum(len(s.operations) for s in found),
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/docs", api_docs)
