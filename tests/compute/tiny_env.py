"""Torch-side compute fixtures: the tiny SD 1.x model and a LoRA trained on it.

The fixtures are session-scoped and each is built once per session (a module-level cache
keyed by the session's temp dir), however many test modules import them. Test modules
that run torch import ``compute_env`` too, so every test runs offline (no Hub) and on one
CPU thread, which makes outputs bit-for-bit repeatable.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from node.compute.specs import TrainRequest
from node.compute.tiny import TinyModel, write_tiny_model
from tests.compute.conftest import require_extra

_BUILT: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class TrainedLora:
    path: Path
    sha256: str
    losses: list[tuple[int, float]]
    request: TrainRequest

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


def _once(factory: pytest.TempPathFactory, name: str, build: Any) -> Any:
    key = (str(factory.getbasetemp()), name)
    if key not in _BUILT:
        _BUILT[key] = build(factory.mktemp(name))
    return _BUILT[key]


@contextmanager
def offline_one_thread() -> Iterator[None]:
    torch = require_extra("torch")
    threads = torch.get_num_threads()
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@pytest.fixture(autouse=True, name="compute_env")
def compute_env_fixture() -> Iterator[None]:
    """No Hub access and one torch thread, for every test of a module that imports this."""
    with offline_one_thread():
        yield


def square_png(color: str, size: tuple[int, int] = (48, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="session", name="tiny")
def tiny_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny SD 1.x model: single-file checkpoint, config root, diffusers folder."""
    with offline_one_thread():
        return _once(tmp_path_factory, "tiny", write_tiny_model)


@pytest.fixture(scope="session", name="small")
def small_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The "small" size: another base, with other shapes."""
    with offline_one_thread():
        return _once(tmp_path_factory, "small", lambda d: write_tiny_model(d, size="small"))


def lora_request(tiny: TinyModel, **changes: Any) -> TrainRequest:
    fields: dict[str, Any] = dict(
        checkpoint=tiny.checkpoint,
        checkpoint_sha256=tiny.sha256,
        base_model=tiny.base_model,
        config_root=tiny.config_root,
        images=[(square_png("red"), "a red square"), (square_png("blue"), "blue, square")],
        trigger_word="zkz",
        output_name="tiny-lora",
        steps=4,
        rank=4,
        alpha=2,
        learning_rate="1e-2",
        resolution=32,
        seed=11,
    )
    return TrainRequest(**(fields | changes))


def _train(tiny: TinyModel, folder: Path) -> TrainedLora:
    from node.compute.training import train_lora

    losses: list[tuple[int, float]] = []
    request = lora_request(tiny)
    data = train_lora(request, progress=lambda step, loss: losses.append((step, loss)))
    path = folder / "tiny-lora.safetensors"
    path.write_bytes(data)
    return TrainedLora(path, hashlib.sha256(data).hexdigest().upper(), losses, request)


@pytest.fixture(scope="session", name="tiny_lora")
def tiny_lora_fixture(tmp_path_factory: pytest.TempPathFactory, tiny: TinyModel) -> TrainedLora:
    """A LoRA trained for a few steps on the tiny model (kohya format)."""
    with offline_one_thread():
        return _once(tmp_path_factory, "lora", lambda d: _train(tiny, d))
