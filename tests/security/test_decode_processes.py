"""Issue 13.6 (preview flood, training decodes): image decodes run in processes of their
own, so Pillow holding a GIL cannot stall the event loop (before: niced threads of the
node's own process, and /healthz waited behind them up to 400 ms when other work took
the CPU); a decode process that dies fails only the calls it had, and the previews the
node makes or queues are bounded (503 with Retry-After past it), leaving no temp file."""

from __future__ import annotations

import asyncio
import functools
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from node.background import DecoderFailed
from node.catalog.images import resized
from node.catalog.ingest_limits import ImageDecodes
from node.catalog.previews import PreviewCache, PreviewsBusy


async def test_decodes_run_in_another_process() -> None:
    decodes = ImageDecodes()
    assert await decodes.run(os.getpid) != os.getpid()


async def test_a_decode_process_that_dies_fails_its_call_and_the_next_works() -> None:
    decodes = ImageDecodes()
    with pytest.raises(DecoderFailed) as failed:
        await decodes.run(os._exit, 3)
    assert failed.value.status == 503 and failed.value.retry_after_s > 0
    assert await decodes.run(os.getpid) != os.getpid()


def _held_resize(release: Path, data: bytes, width: int) -> bytes:
    """resized, once ``release`` exists (a render held open by the test)."""
    while not release.exists():
        time.sleep(0.01)
    return resized(data, width)


async def test_previews_made_or_queued_are_bounded_and_leave_no_temp_file(
    tmp_path: Path,
) -> None:
    original = tmp_path / "a.png"
    out = io.BytesIO()
    Image.linear_gradient("L").resize((1400, 700)).save(out, "PNG")
    original.write_bytes(out.getvalue())
    release = tmp_path / "release"
    held = functools.partial(_held_resize, release)
    cache = PreviewCache(tmp_path / "previews", concurrency=1, max_pending=2)
    first = asyncio.ensure_future(cache.get("A" * 64, original, 160, held))
    second = asyncio.ensure_future(cache.get("A" * 64, original, 320, held))
    same = asyncio.ensure_future(cache.get("A" * 64, original, 160, held))  # joins the first
    await asyncio.sleep(0)
    with pytest.raises(PreviewsBusy) as busy:
        await cache.get("A" * 64, original, 450, held)
    assert busy.value.status == 503 and busy.value.retry_after_s > 0
    release.touch()
    made = await asyncio.gather(first, second, same)
    assert made[0] == made[2] and Image.open(io.BytesIO(made[1])).width == 320
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [
        "A" * 64 + "_160",
        "A" * 64 + "_320",
    ]
    assert await cache.get("A" * 64, original, 450, resized)  # room again
