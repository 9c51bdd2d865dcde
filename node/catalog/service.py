"""The catalog's façade for routes and the CLI: publish, edit, search, read, download."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from node.accounts.service import AccountService
from node.catalog.fetch import FetchService
from node.catalog.previews import PreviewCache
from node.catalog.progress import UploadProgress
from node.catalog.publish import ModelFields, Published, Publisher, VersionFields
from node.catalog.schemas import COMMERCIAL_USES, MODEL_TYPES, RATINGS
from node.catalog.search import ModelSearch, SearchQuery
from node.catalog.views import CatalogViews
from node.errors import BadRequest, NotFound
from node.p2p.filestore import FileStore
from node.p2p.keys import SigningKey

MAX_PREVIEWS = 8


def _strings(value: Any, name: str, *, max_items: int = 64) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name!r} must be a list of strings")
    if len(value) > max_items:
        raise BadRequest(f"{name!r} takes at most {max_items} items")
    return value


def _typed(data: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = data.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"{name!r} must be a {kind.__name__}")
    return value


def model_fields(data: dict[str, Any], *, name_required: bool = True) -> ModelFields:
    """Validate the user-facing model fields of a publish or edit request."""
    name = _typed(data, "name", str, None)
    if name_required and not name:
        raise BadRequest("'name' is required")
    model_type = _typed(data, "type", str, None)
    if model_type is not None and model_type not in MODEL_TYPES:
        raise BadRequest(f"unknown type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
    rating = _typed(data, "rating", str, "PG")
    if rating not in RATINGS:
        raise BadRequest(f"rating must be one of {', '.join(RATINGS)}")
    uses = _strings(data.get("allow_commercial_use", list(COMMERCIAL_USES)), "allow_commercial_use")
    if any(u not in COMMERCIAL_USES for u in uses):
        raise BadRequest(f"allow_commercial_use items must be of {', '.join(COMMERCIAL_USES)}")
    return ModelFields(
        name=name or "",
        type=model_type,
        description=_typed(data, "description", str, ""),
        tags=_strings(data.get("tags"), "tags", max_items=32),
        license=_typed(data, "license", str, None),
        rating=rating,
        poi=_typed(data, "poi", bool, False),
        allow_no_credit=_typed(data, "allow_no_credit", bool, True),
        allow_commercial_use=uses,
        allow_derivatives=_typed(data, "allow_derivatives", bool, True),
        allow_different_license=_typed(data, "allow_different_license", bool, True),
    )


def version_fields(data: dict[str, Any]) -> VersionFields:
    return VersionFields(
        name=_typed(data, "version", str, "v1") or "v1",
        base_model=_typed(data, "base_model", str, None),
        description=_typed(data, "version_description", str, ""),
        trained_words=_strings(data.get("trained_words"), "trained_words"),
    )


@dataclass
class CatalogService:
    publisher: Publisher
    search_index: ModelSearch
    views: CatalogViews
    store: FileStore
    previews: PreviewCache
    accounts: AccountService
    author_key: Callable[[str], SigningKey]
    fetcher: FetchService
    uploads: UploadProgress = field(default_factory=UploadProgress)

    async def publish_path(
        self, did: str, path: Path, data: dict[str, Any], previews: Sequence[Path] = ()
    ) -> dict[str, Any]:
        if len(previews) > MAX_PREVIEWS:
            raise BadRequest(f"at most {MAX_PREVIEWS} preview images")
        images = []
        for preview in previews:
            if not preview.is_file():
                raise NotFound(f"{preview} is not a file on the node's disk")
            images.append(preview.read_bytes())
        root = await self._root(data)
        published = await self.publisher.publish_file(
            self.author_key(did),
            path,
            model_fields(data, name_required=root is None),
            version_fields(data),
            model_root=root,
            images=images,
            in_place=bool(data.get("in_place", False)),
        )
        return await self.describe(published)

    async def publish_upload(
        self,
        did: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        data: dict[str, Any],
        images: Sequence[bytes],
        expected_size: int | None = None,
    ) -> dict[str, Any]:
        """Publish a streamed upload; ``expected_size`` (the request's length, when known)
        lets the torrent pieces be hashed in the same pass as the file."""
        if len(images) > MAX_PREVIEWS:
            raise BadRequest(f"at most {MAX_PREVIEWS} preview images")
        root = await self._root(data)
        published = await self.publisher.publish_stream(
            self.author_key(did),
            filename,
            chunks,
            model_fields(data, name_required=root is None),
            version_fields(data),
            model_root=root,
            images=images,
            expected_size=expected_size,
        )
        return await self.describe(published)

    async def _root(self, data: dict[str, Any]) -> bytes | None:
        model_id = data.get("model_id")
        if model_id is None:
            return None
        if not isinstance(model_id, int) or isinstance(model_id, bool):
            raise BadRequest("'model_id' must be an integer model id")
        root = await self.views.root_for_int(model_id)
        if root is None:
            raise NotFound(f"no model {model_id}")
        return root

    async def describe(self, published: Published) -> dict[str, Any]:
        model = (await self.views.models_by_root([published.model_root]))[0]
        return {
            "created": published.new,
            "warnings": list(published.warnings),
            "sha256": published.sha256,
            "model": model,
        }

    async def edit_model(self, did: str, model_id: int, data: dict[str, Any]) -> dict[str, Any]:
        root = await self.views.root_for_int(model_id)
        if root is None:
            raise NotFound(f"no model {model_id}")
        current = (await self.views.models_by_root([root]))[0]
        merged = {
            "name": current["name"],
            "type": current["type"],
            "description": current["description"],
            "tags": current["tags"],
            "license": current["civitas"]["license"],
            "rating": current["civitas"]["rating"],
            "poi": current["poi"],
            "allow_no_credit": current["allowNoCredit"],
            "allow_commercial_use": current["allowCommercialUse"],
            "allow_derivatives": current["allowDerivatives"],
            "allow_different_license": current["allowDifferentLicense"],
        }
        known = {f.name for f in fields(ModelFields)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadRequest(f"cannot edit {unknown[0]!r}; editable: {', '.join(sorted(known))}")
        merged.update(data)
        await self.publisher.revise_model(self.author_key(did), root, model_fields(merged))
        return (await self.views.models_by_root([root]))[0]

    async def withdraw_model(self, did: str, model_id: int, reason: str | None) -> None:
        root = await self.views.root_for_int(model_id)
        if root is None:
            raise NotFound(f"no model {model_id}")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
            raise BadRequest("'reason' is a string of at most 2000 characters")
        files = await self.views.model_file_hashes(root)
        await self.publisher.withdraw(self.author_key(did), root, reason)
        shown = await self.store.public.shown_among(files) if self.store.public else set()
        for sha256 in set(files) - shown:  # another shown model may share a file
            await self.fetcher.stop_seeding(sha256)

    async def search(self, query: SearchQuery) -> tuple[list[dict[str, Any]], str | None]:
        roots, cursor = await self.search_index.search(query)
        return await self.views.models_by_root(roots), cursor
