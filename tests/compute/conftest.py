"""Compute fixtures: users, checkpoints and LoRAs in the catalog, worker keys, signing."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from safetensors.numpy import save_file

from node.accounts.service import User
from node.app import Node
from node.catalog.publish import ModelFields, VersionFields
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey
from tests.catalog.conftest import lora_file

PASSWORD = "correct horse battery"


def require_extra(module: str) -> Any:
    """Import a module of the compute extra: skipped without it, except under CI, where it fails.

    CI installs the extra, so a missing torch, diffusers or peft there is a broken
    environment, never a reason to run fewer tests.
    """
    if not os.environ.get("CI"):
        return pytest.importorskip(module)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"{module} is missing under CI (install the compute extra): {error}")


@pytest.fixture
async def alice(node: Node) -> User:
    return await node.accounts.add_user("alice", PASSWORD)


@pytest.fixture
async def bob(node: Node) -> User:
    return await node.accounts.add_user("bob", PASSWORD)


@pytest.fixture
async def carol(node: Node) -> User:
    return await node.accounts.add_user("carol", PASSWORD)


def fake_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small safetensors file published as a checkpoint (queue tests never run it)."""
    rng = np.random.default_rng(seed)
    save_file({"model.diffusion_model.w": rng.standard_normal((8, 8), dtype=np.float32)}, path)
    return path


@dataclass(frozen=True)
class Version:
    id: int  # Civitai integer id
    sha256: str


async def publish(
    node: Node,
    user: User,
    path: Path,
    *,
    type: str,
    name: str,
    uses: list[str] | None = None,
    derivatives: bool = True,
) -> Version:
    fields = ModelFields(name=name, type=type, allow_derivatives=derivatives)
    if uses is not None:
        fields.allow_commercial_use = uses
    published = await node.catalog.publisher.publish_file(
        node.home.author_key(user.did), path, fields, VersionFields(base_model="SD 1.5")
    )
    model = (await node.catalog.views.models_by_root([published.model_root]))[0]
    return Version(model["modelVersions"][0]["id"], published.sha256)


@pytest.fixture
async def checkpoint(node: Node, alice: User, tmp_path: Path) -> Version:
    return await publish(
        node, alice, fake_checkpoint(tmp_path / "base.safetensors"), type="Checkpoint", name="Base"
    )


@pytest.fixture
def make_lora(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "fox.safetensors", seed: int = 0) -> Path:
        return lora_file(tmp_path / name, seed)

    return make


def generate(version: int, **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "kind": "generate",
        "model_version_id": version,
        "prompt": "a fox",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 7,
    }
    job.update(extra)
    return job


class Signer:
    """Signs worker requests to one node, the way the worker does."""

    def __init__(self, client: TestClient, key: SigningKey, node_did: str) -> None:
        self.client = client
        self.key = key
        self.node_did = node_did

    async def request(self, method: str, path: str, data: Any = None) -> Any:
        body = json.dumps(data).encode() if data is not None else b""
        headers = sign_request(self.key, method, path, body, self.node_did)
        if data is not None:
            headers["Content-Type"] = "application/json"
        return await self.client.request(method, path, data=body, headers=headers)


@pytest.fixture
def worker_key() -> SigningKey:
    return SigningKey.from_seed(b"w" * 32)
