"""The A1111 ``parameters`` text an image carries, and the PNG chunk that holds it.

A1111, ComfyUI's A1111 nodes and Civitai all read how an image was made from one text
chunk named ``parameters``: the prompt, ``Negative prompt: …``, then one line of
``Key: value`` pairs. We write the pairs A1111 writes (values with a comma, colon or
newline JSON-quoted, as its ``quote`` does) plus Civitai's ``Civitai resources`` list, so
Civitai links the image to the exact model versions. ``node.catalog.genmeta`` parses it
back. No torch here: the node re-reads and checks these PNGs without compute extras.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

from PIL import Image, PngImagePlugin

from node.catalog.genmeta import a1111_value
from node.compute.specs import GenerateRequest, LoraSpec

VERSION = "civitas"
PARAMETERS_KEY = "parameters"


def _alias(name: str) -> str:
    """A LoRA name as A1111 writes it in ``Lora hashes`` (no separators inside)."""
    return " ".join(name.replace(":", " ").replace(",", " ").split()) or "lora"


def _number(text: str) -> int | float:
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


def _lora_resource(lora: LoraSpec) -> dict[str, Any]:
    return {
        "type": "lora",
        "weight": _number(lora.weight),
        "modelVersionId": lora.model_version_id,
        "modelName": lora.model_name or lora.name,
        "modelVersionName": lora.version_name,
    }


def civitai_resources(req: GenerateRequest) -> list[dict[str, Any]]:
    """Civitai's resource list: every model with a known version id, checkpoint first."""
    found: list[dict[str, Any]] = []
    if req.checkpoint_version_id is not None:
        found.append(
            {
                "type": "checkpoint",
                "modelVersionId": req.checkpoint_version_id,
                "modelName": req.checkpoint_model_name or req.model_name,
                "modelVersionName": req.checkpoint_version_name,
            }
        )
    found.extend(_lora_resource(lora) for lora in req.loras if lora.model_version_id is not None)
    return found


def _details(req: GenerateRequest, seed: int) -> list[tuple[str, str]]:
    fields = [
        ("Steps", str(req.steps)),
        ("Sampler", a1111_value(req.sampler)),
        ("CFG scale", req.cfg_scale),
        ("Seed", str(seed)),
        ("Size", f"{req.width}x{req.height}"),
        ("Model hash", req.model_hash.lower()),
        ("Model", a1111_value(req.model_name)),
    ]
    if req.loras:
        pairs = ", ".join(f"{_alias(lora.name)}: {lora.autov2.lower()}" for lora in req.loras)
        fields.append(("Lora hashes", json.dumps(pairs, ensure_ascii=False)))
    resources = civitai_resources(req)
    if resources:
        text = json.dumps(resources, ensure_ascii=False, separators=(",", ":"))
        fields.append(("Civitai resources", text))
    fields.append(("Version", VERSION))
    return fields


def format_parameters(req: GenerateRequest, *, seed: int) -> str:
    """The ``parameters`` text of the image ``req`` makes from ``seed``."""
    lines = [req.prompt.strip()]
    if req.negative_prompt.strip():
        lines.append(f"Negative prompt: {req.negative_prompt.strip()}")
    lines.append(", ".join(f"{key}: {value}" for key, value in _details(req, seed)))
    return "\n".join(lines)


def png_with_parameters(image: bytes | Image.Image, text: str) -> bytes:
    """``image`` as PNG bytes carrying ``text`` in a ``parameters`` text chunk.

    Pillow writes ``tEXt`` when the text is Latin-1 and ``iTXt`` (UTF-8) otherwise, as
    A1111 does. Other chunks of a PNG passed in as bytes are not carried over.
    """
    picture = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, text)
    out = io.BytesIO()
    picture.save(out, format="PNG", pnginfo=info)
    return out.getvalue()
