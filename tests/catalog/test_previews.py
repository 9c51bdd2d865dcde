"""Issue 13.6: previews are made only at a few widths, in bounded memory, into a bounded
cache, however many different widths anonymous clients ask for."""

from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from node.accounts.service import User
from node.app import Node
from node.catalog.images import (
    MAX_PREVIEW_DECODE_BYTES,
    PREVIEW_WIDTHS,
    preview_width,
    resized,
)
from node.catalog.previews import PreviewCache
from tests.catalog.conftest import lora_file

MiB = 2**20


def _photo(width: int, height: int, fmt: str = "PNG", **options: object) -> bytes:
    """A smooth image (gradients): compresses well, decodes to width x height x 3 bytes."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (across, down, Image.new("L", (width, height), 90)))
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_requested_widths_round_up_to_the_allowed_ones() -> None:
    assert preview_width(1, 4000, 3000, "image/png") == 160
    assert preview_width(450, 4000, 3000, "image/jpeg") == 450
    assert preview_width(451, 4000, 3000, "image/jpeg") == 640
    assert preview_width(1281, 4000, 3000, "image/jpeg") is None  # past the last: original
    assert preview_width(700, 900, 600, "image/png") is None  # 960 is wider than the image
    # decoding would cost too much (Pillow's WebP decoder: ~16 bytes a pixel)
    assert preview_width(450, 6000, 6000, "image/webp") is None
    assert 6000 * 6000 * 16 > MAX_PREVIEW_DECODE_BYTES


async def test_a_hundred_widths_make_at_most_one_preview_per_allowed_width(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    alice: User = await node.accounts.add_user("alice", "correct horse battery")
    preview = tmp_path / "wide.png"
    preview.write_bytes(_photo(2000, 1000))
    result = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "w.safetensors"), {"name": "Wide"}, previews=[preview]
    )
    image = result["model"]["modelVersions"][0]["images"][0]
    path = "/" + image["url"].split("/", 3)[3]
    sizes = set()
    for requested in range(16, 2016, 20):  # 100 widths
        resp = await client.get(path.replace("width=2000", f"width={requested}"))
        assert resp.status == 200
        sizes.add(Image.open(io.BytesIO(await resp.read())).size)
    cached = list((node.home.path / "previews").iterdir())
    assert 0 < len(cached) <= len(PREVIEW_WIDTHS)
    assert sizes == {(w, w // 2) for w in PREVIEW_WIDTHS} | {(2000, 1000)}


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used(tmp_path: Path) -> None:
    original = tmp_path / "a.png"
    original.write_bytes(_photo(1400, 700))
    cache = PreviewCache(tmp_path / "previews", max_bytes=1)  # room for one preview only
    for width in (160, 320, 160, 450):
        await cache.get("A" * 64, original, width, resized)
    assert [p.name for p in (tmp_path / "previews").iterdir()] == ["A" * 64 + "_450"]
    assert cache.total_bytes == (tmp_path / "previews" / ("A" * 64 + "_450")).stat().st_size

    roomy = PreviewCache(tmp_path / "roomy", max_bytes=10 * MiB)
    for width in (160, 320, 450):
        await roomy.get("B" * 64, original, width, resized)
    await roomy.get("B" * 64, original, 160, resized)  # used again: now the newest
    roomy.max_bytes = roomy.total_bytes - 1
    await roomy.get("B" * 64, original, 640, resized)
    left = sorted(p.name[65:] for p in (tmp_path / "roomy").iterdir())
    assert "320" not in left and "640" in left  # the oldest went first
    assert roomy.total_bytes <= roomy.max_bytes


def _counting_resize(calls: Path, data: bytes, width: int) -> bytes:
    """resized, noting each call in ``calls`` (it runs in a decode process)."""
    with calls.open("a") as out:
        out.write(f"{width}\n")
    return resized(data, width)


async def test_concurrent_requests_for_one_preview_make_it_once(tmp_path: Path) -> None:
    original = tmp_path / "a.png"
    original.write_bytes(_photo(1400, 700))
    calls = tmp_path / "calls"
    counting = functools.partial(_counting_resize, calls)
    cache = PreviewCache(tmp_path / "previews")
    results = await asyncio.gather(
        *(cache.get("C" * 64, original, 320, counting) for _ in range(8))
    )
    assert calls.read_text().split() == ["320"]
    assert len(set(results)) == 1


_MEASURE = """
import resource, sys
from pathlib import Path
from node.catalog.images import resized
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = resized(data, 450)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, len(out))
"""


@pytest.mark.parametrize(
    ("fmt", "bound"),
    [("JPEG", 24 * MiB), ("PNG", 160 * MiB)],  # decoded RGB of 36 MP is 103 MiB
)
def test_a_36_mp_image_is_resized_in_bounded_memory(tmp_path: Path, fmt: str, bound: int) -> None:
    path = tmp_path / f"big.{fmt.lower()}"
    path.write_bytes(_photo(6000, 6000, fmt, **({"compress_level": 1} if fmt == "PNG" else {})))
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    grown, size = map(int, done.stdout.split())
    assert size > 0
    # peak RSS growth over the process's own start: JPEG decodes at 1/8 scale, PNG once
    assert grown < bound, f"{grown / MiB:.0f} MiB"
