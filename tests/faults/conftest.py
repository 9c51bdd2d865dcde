"""Fault-injection fixtures: the catalog's real files and users, reused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.accounts.service import User
from node.app import Node
from tests.catalog.conftest import PASSWORD, lora_file


@pytest.fixture
async def alice(node: Node) -> User:
    return await node.accounts.add_user("alice", PASSWORD)


@pytest.fixture
def make_lora(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "fox.safetensors", seed: int = 0, **kw: object) -> Path:
        return lora_file(tmp_path / name, seed, **kw)  # type: ignore[arg-type]

    return make
