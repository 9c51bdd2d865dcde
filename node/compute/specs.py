"""What a generation or training job asks of a worker, and what generation gives back.

Plain dataclasses without torch, so the queue can build and validate a request on a node
that has no compute extras; the worker hands the same objects to ``pipelines.generate``
and ``training.train_lora``. Decimal settings (CFG scale, LoRA weight, learning rate) are
kept as the decimal strings the user gave, so they are written back verbatim into image
metadata and LoRA headers; ``__post_init__`` refuses what no worker could run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from node.compute.samplers import SAMPLERS
from node.errors import BadRequest

_SHA256 = re.compile(r"[0-9A-Fa-f]{64}\Z")
_AUTOV2 = re.compile(r"[0-9A-Fa-f]{10}\Z")
MAX_STEPS = 150
MAX_IMAGES = 16
MAX_SIDE = 2048
MAX_TRAIN_STEPS = 20_000


def decimal_value(text: str, what: str, low: Decimal, high: Decimal) -> Decimal:
    """``text`` as a finite decimal in ``[low, high]``, or :class:`BadRequest` naming it."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise BadRequest(f"{what} must be a decimal number, not {text!r}") from None
    if not value.is_finite() or not low <= value <= high:
        raise BadRequest(f"{what} must be between {low} and {high}, not {text!r}")
    return value


def _check_sha256(value: str, what: str) -> None:
    if not _SHA256.match(value):
        raise BadRequest(f"{what} must be 64 hex digits (SHA256), not {value!r}")


def _check_range(value: int, what: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise BadRequest(f"{what} must be between {low} and {high}, not {value}")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA applied to a generation, at ``weight`` (a decimal string such as "0.8")."""

    path: Path
    sha256: str
    name: str
    autov2: str
    weight: str = "1"
    model_version_id: int | None = None
    model_name: str = ""
    version_name: str = ""

    def __post_init__(self) -> None:
        _check_sha256(self.sha256, f"LoRA {self.name!r} sha256")
        if not _AUTOV2.match(self.autov2):
            raise BadRequest(f"LoRA {self.name!r} AutoV2 hash must be 10 hex digits")
        decimal_value(self.weight, f"LoRA {self.name!r} weight", Decimal(-4), Decimal(4))


@dataclass(frozen=True)
class GenerateRequest:
    """A text-to-image job: ``count`` images from ``seed``, ``seed + 1`` … (as A1111 does)."""

    checkpoint: Path
    checkpoint_sha256: str
    base_model: str
    config_root: Path
    model_name: str
    model_hash: str
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: str = "7"
    sampler: str = "Euler a"
    width: int = 512
    height: int = 512
    count: int = 1
    loras: Sequence[LoraSpec] = ()
    checkpoint_version_id: int | None = None
    checkpoint_model_name: str = ""
    checkpoint_version_name: str = ""
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_sha256(self.checkpoint_sha256, "checkpoint sha256")
        if not _AUTOV2.match(self.model_hash):
            raise BadRequest("model hash must be the checkpoint's AutoV2 hash (10 hex digits)")
        if self.sampler not in SAMPLERS:
            raise BadRequest(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        decimal_value(self.cfg_scale, "CFG scale", Decimal(0), Decimal(30))
        _check_range(self.seed, "seed", 0, 2**32 - 1 - self.count)
        _check_range(self.steps, "steps", 1, MAX_STEPS)
        _check_range(self.count, "image count", 1, MAX_IMAGES)
        for side, value in (("width", self.width), ("height", self.height)):
            _check_range(value, side, 64, MAX_SIDE)
            if value % 8:
                raise BadRequest(f"{side} must be a multiple of 8, not {value}")


@dataclass(frozen=True)
class GeneratedImage:
    """One PNG with its A1111 ``parameters`` chunk already written in."""

    png: bytes
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class TrainRequest:
    """A LoRA training job on a base checkpoint, over captioned images."""

    checkpoint: Path
    checkpoint_sha256: str
    base_model: str
    config_root: Path
    images: Sequence[tuple[bytes, str]]
    trigger_word: str
    output_name: str
    steps: int = 500
    rank: int = 8
    alpha: int = 8
    learning_rate: str = "1e-4"
    resolution: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        _check_sha256(self.checkpoint_sha256, "base checkpoint sha256")
        if not self.images:
            raise BadRequest("training needs at least one image")
        if not self.output_name.strip():
            raise BadRequest("the LoRA needs an output name")
        _check_range(self.steps, "steps", 1, MAX_TRAIN_STEPS)
        _check_range(self.rank, "rank", 1, 256)
        _check_range(self.alpha, "alpha", 1, 1024)
        _check_range(self.resolution, "resolution", 8, MAX_SIDE)
        if self.resolution % 8:
            raise BadRequest(f"resolution must be a multiple of 8, not {self.resolution}")
        _check_range(self.seed, "seed", 0, 2**32 - 1)
        decimal_value(self.learning_rate, "learning rate", Decimal(0), Decimal(1))
