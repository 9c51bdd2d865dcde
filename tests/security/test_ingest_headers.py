"""Issue 13.5: a safetensors header cannot make ingest take memory or time out of
proportion, and too many ingests at once are refused before their bodies are read."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node, build_node
from node.catalog import safetensors as st
from node.catalog.ingest_limits import IngestBusy, IngestSlots
from node.catalog.publish import ModelFields, VersionFields
from node.catalog.safetensors import (
    HEADER_LIMIT,
    MAX_HEADER_COMMAS,
    MAX_TENSORS,
    HeaderTooComplex,
    HeaderTooLarge,
    TooManyTensors,
    parse_header,
    read_header,
)
from tests.catalog.conftest import PASSWORD, lora_file
from tests.conftest import make_home

MiB = 2**20


@pytest.fixture
async def alice(node: Node) -> User:
    return await node.accounts.add_user("alice", PASSWORD)


def _sparse_file(path: Path, header: bytes, declared: int | None = None, size: int = 0) -> Path:
    """A file of ``size`` bytes (a hole after the header: nothing is written there)."""
    with path.open("wb") as out:
        out.write((declared if declared is not None else len(header)).to_bytes(8, "little"))
        out.write(header)
        out.truncate(max(size, 8 + len(header)))
    return path


def _peak(action: Callable[[], Any]) -> int:
    """Peak bytes Python allocated while ``action`` ran (it is expected to raise or not)."""
    tracemalloc.start()
    try:
        try:
            action()
        except st.SafetensorsError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _tensor_entries(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield b'"t%d":{"dtype":"U8","shape":[],"data_offsets":[0,0]}' % i


def test_a_70_mb_header_of_a_million_tensors_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    header = b"{" + b",".join(_tensor_entries(1_000_000)) + b"}"
    assert len(header) > 50 * MiB  # the reported attack: ~70 MB declaring 1M tensors
    path = _sparse_file(tmp_path / "million.safetensors", header)
    del header
    with pytest.raises(HeaderTooLarge) as caught:
        read_header(path)
    assert caught.value.status == 400
    assert _peak(lambda: read_header(path)) < MiB  # only the 8-byte length was read


def test_a_header_under_the_byte_cap_declaring_too_many_tensors_is_refused_before_parsing(
    tmp_path: Path,
) -> None:
    entries = list(_tensor_entries(250_000))
    header = b"{" + b",".join(entries) + b"}"
    assert len(header) < HEADER_LIMIT
    path = _sparse_file(tmp_path / "many.safetensors", header)
    with pytest.raises(TooManyTensors, match=f"over this node's limit of {MAX_TENSORS}"):
        read_header(path)
    # the header bytes themselves, and nothing per tensor
    assert _peak(lambda: read_header(path)) < len(header) + MiB


def test_a_header_of_many_tiny_values_is_refused_before_parsing(tmp_path: Path) -> None:
    header = b'{"__metadata__":{' + b",".join(b'"%d":""' % i for i in range(1_000_000)) + b"}}"
    assert len(header) < HEADER_LIMIT
    path = _sparse_file(tmp_path / "values.safetensors", header)
    with pytest.raises(HeaderTooComplex) as caught:
        read_header(path)
    assert caught.value.code == "safetensors_header_too_complex"
    assert _peak(lambda: read_header(path)) < len(header) + MiB


@pytest.mark.parametrize(
    "item",
    [b'"k%d":{}', b"[%d]", b'{"%d":1}'],
    ids=["keys", "lists", "objects"],
)
def test_the_worst_header_within_the_caps_parses_in_bounded_memory(item: bytes) -> None:
    body = b",".join(item % i for i in range(MAX_HEADER_COMMAS + 1))
    header = b"{" + body + b"}" if item.startswith(b'"') else b'{"a":[' + body + b"]}"
    assert header.count(b",") == MAX_HEADER_COMMAS
    peak = _peak(lambda: parse_header(header, 8 + len(header)))
    assert peak < 80 * MiB, peak / MiB  # ~50 MiB measured for keys, the worst shape


def _real_shaped_header(tensors: int) -> tuple[bytes, int]:
    """A header shaped like SDXL's (UNet names, conv and linear shapes, fp16) with kohya
    metadata; returns it and the file size its offsets need."""
    shapes = [[320, 320, 3, 3], [1280, 320], [640], [2048, 5120], [320, 4, 3, 3], [77, 768]]
    entries: dict[str, Any] = {
        "__metadata__": {
            "ss_tag_frequency": json.dumps({"10_fox": {f"tag{i}": i for i in range(2000)}}),
            "modelspec.architecture": "stable-diffusion-xl-v1-base",
        }
    }
    offset = 0
    for i in range(tensors):
        shape = shapes[i % len(shapes)]
        size = 2
        for dim in shape:
            size *= dim
        block, layer = divmod(i, 40)
        name = (
            f"model.diffusion_model.output_blocks.{block}.1"
            f".transformer_blocks.{layer}.attn2.to_k.weight"
        )
        entries[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries).encode()
    return header, 8 + len(header) + offset


def test_a_real_shaped_header_of_a_few_thousand_tensors_is_accepted() -> None:
    header, size = _real_shaped_header(3000)
    parsed = parse_header(header, size)
    assert len(parsed.tensors) == 3000
    assert len(header) < HEADER_LIMIT // 8 and header.count(b",") < MAX_HEADER_COMMAS // 4


def test_the_tensor_cap_itself_is_reachable_within_the_byte_and_value_caps() -> None:
    header, size = _real_shaped_header(MAX_TENSORS)
    assert len(parse_header(header, size).tensors) == MAX_TENSORS


# --- ingest: early refusal and concurrency ------------------------------------------------


async def _never_past_the_length(declared: int) -> AsyncIterator[bytes]:
    yield declared.to_bytes(8, "little") + b'{"a":1}!!'
    raise AssertionError("the upload was read past its header length")


async def test_an_upload_declaring_a_huge_header_is_refused_at_its_first_bytes(
    node: Node, alice: User
) -> None:
    with pytest.raises(HeaderTooLarge):
        await node.catalog.publisher.publish_stream(
            node.home.author_key(alice.did),
            "big.safetensors",
            _never_past_the_length(HEADER_LIMIT + 1),
            ModelFields(name="x", type="LORA"),
            VersionFields(base_model="SD 1.5"),
        )
    assert list(node.store.tmp.iterdir()) == []


async def test_slots_refuse_an_upload_at_once_and_let_a_local_publish_wait() -> None:
    slots = IngestSlots(1)
    taken, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.hold(wait=False):
            taken.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await taken.wait()
    with pytest.raises(IngestBusy) as caught:
        async with slots.hold(wait=False):
            pass
    assert (caught.value.status, caught.value.retry_after_s) == (503, 30)
    waiting = asyncio.create_task(_enter(slots))
    await asyncio.sleep(0)
    assert not waiting.done()
    release.set()
    await task
    assert await waiting == "entered"


async def _enter(slots: IngestSlots) -> str:
    async with slots.hold(wait=True):
        async with slots.hold(wait=False):  # a holder re-enters without a second slot
            return "entered"


async def test_an_upload_beyond_the_concurrent_ingests_is_a_503_with_retry_after(
    client: TestClient, node: Node, alice: User, tmp_path: Path
) -> None:
    token = await node.accounts.create_token("alice")
    slots = node.catalog.publisher.slots
    held = [asyncio.Event() for _ in range(slots.limit)]
    release = asyncio.Event()

    async def hold(event: asyncio.Event) -> None:
        async with slots.hold(wait=False):
            event.set()
            await release.wait()

    holders = [asyncio.create_task(hold(e)) for e in held]
    await asyncio.gather(*(e.wait() for e in held))
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps({"name": "Busy", "base_model": "SD 1.5"}))
    form.add_field(
        "file", lora_file(tmp_path / "busy.safetensors").read_bytes(), filename="b.safetensors"
    )
    resp = await client.post("/api/models", data=form, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "30"
    assert (await resp.json())["error"] == "ingest_busy"
    release.set()
    await asyncio.gather(*holders)
    assert list(node.store.tmp.iterdir()) == []


def test_the_setting_sizes_the_slots(tmp_path: Path) -> None:
    home, config = make_home(tmp_path / "home")
    assert config.server.max_concurrent_ingests == 4
    config.server.max_concurrent_ingests = 2
    assert build_node(config, home).catalog.publisher.slots.limit == 2
