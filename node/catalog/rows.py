"""What a catalog record's rows hold: pure functions from records to row values.

The record-by-record projection (:mod:`node.catalog.projection`, which ``reindex``
replays) and the set-based one (:mod:`node.catalog.page_projection`, which accepting a
page runs) both build their rows here, so they can differ only in *which* records they
look at, never in what a row says about them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.catalog.ids import file_int_id, placeholder
from node.p2p.records import Record


def hexu(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


@dataclass(frozen=True)
class Override:
    """A moderator's local override of a model or image (``model_overrides``)."""

    rating: str | None = None
    poi: bool | None = None
    minor: bool = False
    terms: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: Any) -> Override:
        return cls(row.rating, row.poi, row.minor, tuple(json.loads(row.hidden_terms)))


def redact(text: str, terms: Sequence[str]) -> str:
    """``text`` with every term (any case) replaced by "[removed]"."""
    for term in terms:
        text = re.sub(re.escape(term), "[removed]", text, flags=re.IGNORECASE)
    return text


def redact_list(items: Sequence[str], terms: Sequence[str]) -> list[str]:
    """Items that mention none of the terms (tags, trigger words)."""
    lowered = [t.lower() for t in terms]
    return [i for i in items if i.strip() and not any(t in i.lower() for t in lowered)]


# --- models -------------------------------------------------------------------------------


def model_values(root: Record, current: Record, local: Override, downloads: int) -> dict[str, Any]:
    """A model's ``models`` row (without its key, int_id and search text): ``root`` is its
    root record (author: the identity), ``current`` the newest revision its author signed."""
    body = current.body
    permissions = body.get("permissions", {})
    return {
        "author": root.author,
        "revision_id": current.id,
        "name": redact(body["name"], local.terms) or "[removed]",
        "type": body["type"],
        "description": redact(body.get("description", ""), local.terms),
        "rating": local.rating or body.get("rating", "PG"),
        "license": body.get("license"),
        "poi": local.poi if local.poi is not None else body.get("poi", False),
        "allow_no_credit": permissions.get("allow_no_credit", True),
        "allow_commercial_use": ",".join(permissions.get("allow_commercial_use", [])),
        "allow_derivatives": permissions.get("allow_derivatives", True),
        "allow_different_license": permissions.get("allow_different_license", True),
        "created": root.created,
        "updated": current.created,
        "downloads": downloads,
    }


def tags_of(current: Record, local: Override) -> list[str]:
    """The tags a model's newest revision gives it, normalised and sorted."""
    return sorted(
        {t.strip().lower() for t in redact_list(current.body.get("tags", []), local.terms)}
    )


def search_text(description: str, tags: Sequence[str], versions: Iterable[Any]) -> str:
    """The one text column full-text search indexes: description, tags (sorted), then each
    of the author's versions' name and trained words (``versions``: rows with ``name`` and
    ``trained_words``, oldest first)."""
    parts = [description, " ".join(tags)]
    for version in versions:
        parts += [version.name, " ".join(json.loads(version.trained_words))]
    return "\n".join(p for p in parts if p)


# --- versions and images ------------------------------------------------------------------


def version_rows(
    record: Record, terms: Sequence[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A version's ``model_versions`` row (placeholder int_id) and its ``version_files``."""
    body = record.body
    version = {
        "id": record.id,
        "int_id": placeholder(record.id),
        "model_root": body["model"],
        "author": record.author,
        "name": redact(body["name"], terms) or "[removed]",
        "base_model": body["base_model"],
        "description": redact(body.get("description", ""), terms),
        "trained_words": json.dumps(redact_list(body.get("trained_words", []), terms)),
        "created": record.created,
    }
    rows: list[dict[str, Any]] = []
    for position, item in enumerate(body["files"]):
        sha256 = hexu(item["sha256"])
        assert sha256 is not None
        rows.append(
            {
                "version_id": record.id,
                "sha256": sha256,
                "int_id": file_int_id(sha256),
                "position": position,
                "name": item["name"],
                "size": item["size"],
                "autov1": hexu(item.get("autov1")),
                "autov2": sha256[:10],
                "autov3": hexu(item.get("autov3")),
                "blake3": hexu(item["blake3"]),
                "crc32": hexu(item["crc32"]),
                "format": item["format"],
                "fp": item.get("fp"),
                "size_type": item.get("size_type"),
                "is_primary": item.get("primary", position == 0),
                "infohash": item["infohash"].hex() if item.get("infohash") else None,
                "piece_length": item.get("piece_length"),
            }
        )
    return version, rows


def image_rows(record: Record, rating: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An image's ``images`` row (placeholder int_id) and its ``image_resources``."""
    body = record.body
    image = {
        "id": record.id,
        "int_id": placeholder(record.id),
        "author": record.author,
        "sha256": hexu(body["sha256"]),
        "width": body["width"],
        "height": body["height"],
        "mime": body["mime"],
        "size": body["size"],
        "rating": rating or body.get("rating", "PG"),
        "version_id": body.get("model_version"),
        "meta": json.dumps(body.get("meta", {})),
        "pdq": body.get("pdq"),
        "pdq_quality": body.get("pdq_quality"),
        "created": record.created,
    }
    resources = [
        {
            "image_id": record.id,
            "position": i,
            "name": res.get("name"),
            "type": res.get("type"),
            "hash": res["hash"].upper() if res.get("hash") else None,
            "weight": res.get("weight"),
        }
        for i, res in enumerate(body.get("resources", []))
    ]
    return image, resources
