"""What a user may ask for: job parameters checked before anything is queued (pure).

Every refusal is a :class:`BadRequest` naming the field. Decimals (CFG scale, LoRA
weights, learning rate) are kept as decimal strings, like records carry them, so a job's
parameters survive JSON and msgpack unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from node.errors import BadRequest

MAX_PROMPT = 4000
MAX_SIDE = 2048
MIN_SIDE = 64
MAX_STEPS = 150
MAX_COUNT = 8
MAX_LORAS = 8
MAX_TRAIN_STEPS = 20_000
MAX_RANK = 128
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class LoraRef:
    version: int  # the LoRA's model version (Civitai integer id)
    weight: str  # decimal string


@dataclass(frozen=True)
class JobSpec:
    """A checked request: the base version, the LoRAs, the normalized parameters."""

    kind: str
    version: int
    params: dict[str, Any]
    pixels: int  # per image: what a worker's max pixels must cover
    total_pixels: int  # all images of the job
    loras: tuple[LoraRef, ...] = field(default_factory=tuple)


def int_field(data: Mapping[str, Any], name: str, lo: int, hi: int, default: Any = ...) -> int:
    """``data[name]`` as an integer in ``[lo, hi]`` (``default`` when absent, if given)."""
    value = data.get(name, default)
    if value is ...:
        raise BadRequest(f"{name!r} is required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name!r} must be an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{name!r} must be from {lo} to {hi}; got {value}")
    return value


def _text(data: Mapping[str, Any], name: str, max_len: int, default: str | None = None) -> str:
    value = data.get(name, default)
    if value is None:
        raise BadRequest(f"{name!r} is required")
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    if len(value) > max_len:
        raise BadRequest(f"{name!r} may be at most {max_len} characters")
    return value


def decimal_text(value: Any, name: str, lo: Decimal, hi: Decimal) -> str:
    """A decimal given as a string or a JSON number, as a canonical decimal string."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f'{name!r} must be a decimal such as "7.5"')
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise BadRequest(f'{name!r} must be a decimal such as "7.5"; got {value!r}') from None
    if not number.is_finite() or not lo <= number <= hi:
        raise BadRequest(f"{name!r} must be from {lo} to {hi}; got {value}")
    text = format(number.normalize(), "f")
    return text if len(text) <= 32 else format(number, ".6g")


def _side(data: Mapping[str, Any], name: str, default: int) -> int:
    value = int_field(data, name, MIN_SIDE, MAX_SIDE, default)
    if value % 8:
        raise BadRequest(f"{name!r} must be a multiple of 8; got {value}")
    return value


def _seed(data: Mapping[str, Any], fresh_seed: int, count: int = 1) -> int:
    """The seed asked for, or a fresh one (``null`` or -1); images use seed, seed+1, …"""
    seed = data.get("seed")
    if seed is None or seed == -1:
        return fresh_seed % (SEED_LIMIT - MAX_COUNT)
    return int_field(data, "seed", 0, SEED_LIMIT - 1 - count)


def _version(data: Mapping[str, Any], name: str = "model_version_id") -> int:
    return int_field(data, name, 1, 2**53)


def _loras(data: Mapping[str, Any]) -> tuple[LoraRef, ...]:
    raw = data.get("loras", [])
    if not isinstance(raw, list) or len(raw) > MAX_LORAS:
        raise BadRequest(f"'loras' must be a list of at most {MAX_LORAS} items")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest(f"'loras[{i}]' must be an object with model_version_id and weight")
        weight = decimal_text(
            item.get("weight", "1"), f"loras[{i}].weight", Decimal(-4), Decimal(4)
        )
        out.append(LoraRef(_version(item), weight))
    if len({lora.version for lora in out}) != len(out):
        raise BadRequest("'loras' names the same version twice")
    return tuple(out)


def check_generate(
    data: Mapping[str, Any], *, samplers: Collection[str], max_pixels: int, fresh_seed: int
) -> JobSpec:
    """A generation request, or the BadRequest naming its first bad field."""
    unknown = set(data) - {
        "kind",
        "model_version_id",
        "loras",
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "cfg_scale",
        "sampler",
        "width",
        "height",
        "count",
    }
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r} in a generation job")
    width, height = _side(data, "width", 512), _side(data, "height", 512)
    count = int_field(data, "count", 1, MAX_COUNT, 1)
    sampler = _text(data, "sampler", 64, "Euler a")
    if sampler not in samplers:
        raise BadRequest(f"unknown sampler {sampler!r}; known: {', '.join(samplers)}")
    pixels = width * height
    if pixels * count > max_pixels:
        raise BadRequest(
            f"width x height x count is {pixels * count:,} pixels; this node allows at most "
            f"{max_pixels:,} per job (compute.max_pixels)"
        )
    params = {
        "prompt": _text(data, "prompt", MAX_PROMPT),
        "negative_prompt": _text(data, "negative_prompt", MAX_PROMPT, ""),
        "seed": _seed(data, fresh_seed, count),
        "steps": int_field(data, "steps", 1, MAX_STEPS, 20),
        "cfg_scale": decimal_text(data.get("cfg_scale", "7"), "cfg_scale", Decimal(0), Decimal(30)),
        "sampler": sampler,
        "width": width,
        "height": height,
        "count": count,
    }
    loras = _loras(data)
    return JobSpec("generate", _version(data), params, pixels, pixels * count, loras)


def check_train(
    data: Mapping[str, Any], *, images: int, max_images: int, fresh_seed: int
) -> JobSpec:
    """A training request (its images counted by the caller), or the BadRequest."""
    unknown = set(data) - {
        "kind",
        "model_version_id",
        "name",
        "trigger_word",
        "steps",
        "rank",
        "learning_rate",
        "resolution",
        "seed",
        "captions",
    }
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r} in a training job")
    if not 1 <= images <= max_images:
        raise BadRequest(f"a training job needs 1 to {max_images} images; got {images}")
    resolution = _side(data, "resolution", 512)
    name = _text(data, "name", 200, "").strip()
    trigger = _text(data, "trigger_word", 200, "").strip()
    rate = decimal_text(
        data.get("learning_rate", "0.0001"), "learning_rate", Decimal(0), Decimal(1)
    )
    if Decimal(rate) == 0:
        raise BadRequest("'learning_rate' must be greater than 0")
    params = {
        "name": name or trigger or "my LoRA",
        "trigger_word": trigger,
        "steps": int_field(data, "steps", 1, MAX_TRAIN_STEPS, 500),
        "rank": int_field(data, "rank", 1, MAX_RANK, 8),
        "learning_rate": rate,
        "resolution": resolution,
        "seed": _seed(data, fresh_seed),
    }
    pixels = resolution * resolution
    return JobSpec("train", _version(data), params, pixels, pixels)
