"""The catalog versions a job uses, and whether their licenses let it run.

A job names model versions by their Civitai integer ids; each resolves to its primary
file (what the worker fetches, by SHA256) and its model's permissions. Generation on a
node is what Civitai's ``RentCivit`` permission covers ("run on Civitas nodes'
generation services", as the model page puts it); training a LoRA on a base makes a
derivative, which ``allow_derivatives`` governs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.tables import model_versions, models, version_files
from node.errors import BadRequest, Forbidden, NotFound

GENERATION_PERMISSION = "RentCivit"
CHECKPOINT_TYPES = ("Checkpoint",)
LORA_TYPES = ("LORA", "LoCon", "DoRA")


@dataclass(frozen=True)
class Resource:
    """One model version a job needs, with its primary file."""

    version_int: int
    version_id: bytes
    version_name: str
    model_name: str
    model_type: str
    base_model: str
    commercial_uses: tuple[str, ...]
    allow_derivatives: bool
    sha256: str
    size: int
    file_name: str
    autov2: str
    infohash: str | None

    def file_entry(self, role: str, weight: str | None = None) -> dict[str, Any]:
        """What the worker is told about the file (JSON)."""
        entry: dict[str, Any] = {
            "role": role,
            "model_version_id": self.version_int,
            "model_name": self.model_name,
            "version_name": self.version_name,
            "base_model": self.base_model,
            "sha256": self.sha256,
            "size": self.size,
            "name": self.file_name,
            "autov2": self.autov2,
            "infohash": self.infohash,
        }
        if weight is not None:
            entry["weight"] = weight
        return entry


async def resolve(conn: AsyncConnection, version_int: int, what: str) -> Resource:
    """The version (shown in this catalog) with its primary file, or NotFound."""
    row = (
        await conn.execute(
            sa.select(
                model_versions.c.int_id,
                model_versions.c.id,
                model_versions.c.name,
                model_versions.c.base_model,
                models.c.name.label("model_name"),
                models.c.type,
                models.c.allow_commercial_use,
                models.c.allow_derivatives,
                version_files.c.sha256,
                version_files.c.size,
                version_files.c.name.label("file_name"),
                version_files.c.autov2,
                version_files.c.infohash,
            )
            .join(
                models,
                sa.and_(
                    models.c.root_id == model_versions.c.model_root,
                    models.c.author == model_versions.c.author,
                ),
            )
            .join(version_files, version_files.c.version_id == model_versions.c.id)
            .where(model_versions.c.int_id == version_int)
            .order_by(version_files.c.is_primary.desc(), version_files.c.position)
            .limit(1)
        )
    ).first()
    if row is None:
        raise NotFound(f"{what}: no model version {version_int} in this node's catalog")
    return Resource(
        version_int=row.int_id,
        version_id=row.id,
        version_name=row.name,
        model_name=row.model_name,
        model_type=row.type,
        base_model=row.base_model,
        commercial_uses=tuple(u for u in row.allow_commercial_use.split(",") if u),
        allow_derivatives=bool(row.allow_derivatives),
        sha256=row.sha256,
        size=row.size,
        file_name=row.file_name,
        autov2=row.autov2,
        infohash=row.infohash,
    )


def check_generation(resource: Resource, role: str) -> None:
    if role == "checkpoint" and resource.model_type not in CHECKPOINT_TYPES:
        raise BadRequest(
            f"model version {resource.version_int} is a {resource.model_type}, not a checkpoint: "
            "name a checkpoint in model_version_id and LoRAs in loras"
        )
    if role == "lora" and resource.model_type not in LORA_TYPES:
        raise BadRequest(
            f"loras: model version {resource.version_int} is a {resource.model_type}, not a LoRA"
        )
    if GENERATION_PERMISSION not in resource.commercial_uses:
        raise Forbidden(
            f"the license of {resource.model_name!r} does not allow running it on generation "
            f"services (its author did not allow {GENERATION_PERMISSION!r}), so this node "
            "will not run it"
        )


def check_training(resource: Resource) -> None:
    if resource.model_type not in CHECKPOINT_TYPES:
        raise BadRequest(
            f"model version {resource.version_int} is a {resource.model_type}; "
            "train on a checkpoint"
        )
    if not resource.allow_derivatives:
        raise Forbidden(
            f"the license of {resource.model_name!r} does not allow derivatives, and a LoRA "
            "trained on it would be one: training refused"
        )
