"""Civitai's shapes for what the catalog reads: the parts of its API's answers that are
not simply a column (post ids, generation support, HTML descriptions, primary files).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from node.catalog.search import GENERATION_PERMISSION, GENERATION_TYPES
from node.catalog.tables import images, model_versions
from node.errors import BadRequest
from node.render import render_markdown

NSFW_LEVELS = {"PG": 1, "PG13": 2, "R": 4, "X": 8}  # Civitai's nsfwLevel of each rating
# What Civitai's download route takes for each file choice (its constants); any other
# value is a 400 there and here, a known one that no file has a 404.
DOWNLOAD_CHOICES = {
    "type": (
        "Model",
        "Text Encoder",
        "Pruned Model",
        "Negative",
        "Training Data",
        "VAE",
        "Config",
        "Archive",
    ),
    "format": ("SafeTensor", "PickleTensor", "GGUF", "Diffusers", "Core ML", "ONNX", "Other"),
    "size": ("full", "pruned"),
    "fp": ("fp16", "fp8", "nf4", "fp32", "bf16"),
}


def supports_generation(model_type: str, commercial_uses: Sequence[str]) -> bool:
    """Whether Civitas nodes' generation services may run the model: a type they run,
    and the creator grants "RentCivit" (run on Civitas nodes' generation services)."""
    return model_type in GENERATION_TYPES and GENERATION_PERMISSION in commercial_uses


def post_id(row: Any) -> int:
    """Civitai's ``postId``: the images an author published with their own version form
    that version's post (its integer id); any other image is a post of its own."""
    if row.version_int is not None and row.version_author == row.author:
        return int(row.version_int)
    return int(row.int_id)


def image_columns() -> list[Any]:
    """An image row with what :func:`post_id` needs (outer-joined onto its version)."""
    return [
        images,
        model_versions.c.int_id.label("version_int"),
        model_versions.c.author.label("version_author"),
    ]


def with_version(stmt: Any) -> Any:
    return stmt.select_from(
        images.outerjoin(model_versions, model_versions.c.id == images.c.version_id)
    )


def civitai_version(version: dict[str, Any]) -> dict[str, Any]:
    """A version as Civitai's API sends it: ``description`` as sanitized HTML (rendered
    from the record's Markdown, as the web UI shows it); the Markdown under ``civitas``."""
    markdown = version["description"] or ""
    return {
        **version,
        "description": str(render_markdown(markdown)) if markdown else None,
        "civitas": {**version["civitas"], "descriptionMarkdown": markdown},
    }


def civitai_model(model: dict[str, Any]) -> dict[str, Any]:
    """A model as Civitai's API sends it (see :func:`civitai_version`)."""
    markdown = model["description"] or ""
    return {
        **model,
        "description": str(render_markdown(markdown)) if markdown else None,
        "modelVersions": [civitai_version(v) for v in model["modelVersions"]],
        "civitas": {**model["civitas"], "descriptionMarkdown": markdown},
    }


def primary_files_only(model: dict[str, Any]) -> dict[str, Any]:
    """Civitai's ``primaryFileOnly``: each version keeps its primary file alone."""
    versions = [
        {**v, "files": [f for f in v["files"] if f["primary"]][:1]} for v in model["modelVersions"]
    ]
    return {**model, "modelVersions": versions}


def safe_images_only(model: dict[str, Any], ratings: Sequence[str]) -> dict[str, Any]:
    """Civitai's ``nsfw=false`` on models: each version's gallery keeps only the images
    rated one of ``ratings``."""
    levels = {NSFW_LEVELS[r] for r in ratings}
    versions = [
        {**v, "images": [i for i in v["images"] if i["nsfwLevel"] in levels]}
        for v in model["modelVersions"]
    ]
    return {**model, "modelVersions": versions}


def download_choice(name: str, raw: str | None) -> str | None:
    """One of the download route's file choices, checked against Civitai's values (in
    any case, as files are matched); None when not given."""
    if not raw:
        return None
    known = DOWNLOAD_CHOICES[name]
    if raw.lower() not in {k.lower() for k in known}:
        raise BadRequest(f"{name} must be one of {', '.join(known)}")
    return raw
