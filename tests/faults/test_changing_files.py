"""Files that change under the node: a source changing while it is published, and a file
seeded in place that is truncated or rewritten later (issue 14.1)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.catalog.publish import copy_and_hash
from node.catalog.safetensors import read_header
from node.errors import SourceChanged

FIELDS = {"name": "Fox style", "base_model": "SD 1.5"}


def test_a_source_truncated_after_its_header_was_checked_is_refused(
    make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_lora()
    header = read_header(path)
    with open(path, "r+b") as handle:
        handle.truncate(header.file_size // 2)
    temp = tmp_path / "copy.part"
    with pytest.raises(SourceChanged) as refused:
        copy_and_hash(path, temp, header)
    assert "header" in refused.value.message and str(path) in refused.value.message


def test_a_source_that_grew_after_its_header_was_checked_is_refused(
    make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_lora()
    header = read_header(path)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 4096)  # still being written
    with pytest.raises(SourceChanged):
        copy_and_hash(path, None, header)


async def test_a_refused_publish_stores_and_signs_nothing(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    path = make_lora()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # truncated before the publish: header says more
    with pytest.raises(Exception) as refused:
        await node.catalog.publish_path(alice.did, path, FIELDS)
    assert getattr(refused.value, "status", 500) < 500
    assert await node.log.count() == 1  # alice's profile only
    assert not list(node.store.tmp.glob("*"))


async def _get(client: TestClient, url: str) -> tuple[int, bytes]:
    resp = await client.get(url)
    return resp.status, await resp.read()


async def test_an_in_place_file_truncated_later_is_no_longer_served(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    path = make_lora()
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest().upper()
    await node.catalog.publish_path(alice.did, path, {**FIELDS, "in_place": True})
    assert await _get(client, f"/webseed/{sha}") == (200, data)

    os.truncate(path, len(data) // 3)
    status, _ = await _get(client, f"/webseed/{sha}")
    assert status == 404  # never the short file as a 200
    assert sha in node.store.changed and "bytes" in node.store.changed[sha]


async def test_an_in_place_file_rewritten_at_the_same_size_is_reverified(
    node: Node, client: TestClient, alice: User, make_lora: Callable[..., Path]
) -> None:
    path = make_lora()
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest().upper()
    await node.catalog.publish_path(alice.did, path, {**FIELDS, "in_place": True})

    touched = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(touched, touched))  # same bytes, newer mtime: re-verified, still served
    assert await _get(client, f"/webseed/{sha}") == (200, data)

    changed = bytearray(data)
    changed[-1] ^= 0xFF
    path.write_bytes(bytes(changed))
    os.utime(path, ns=(touched + 10**9, touched + 10**9))
    status, _ = await _get(client, f"/webseed/{sha}")
    assert status == 404
    assert "SHA256" in node.store.changed[sha]
