"""Training inputs: zips are checked from their central directory, then streamed to disk.

Every zip here is crafted byte by byte (``tests/compute/zips.py``); memory is measured
with tracemalloc (bytes, not time) and the temp folder is checked empty afterwards.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from node.compute.inputs import InputLimits, TrainingInputs
from node.errors import BadRequest, PayloadTooLarge
from tests.compute.zips import STORED, Entry, deflated, raw_zip, zeros

MIB = 1024 * 1024
# A refusal may hold a chunk or two (1 MiB each), never an entry (50 MiB) or the archive.
BOUND = 8 * MIB
LIMITS = InputLimits(max_images=200, max_bytes=1024 * MIB, max_ratio=50)


def _png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 10, 10)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Callable[[list[Entry]], Path]:
    def write(entries: list[Entry]) -> Path:
        path = tmp_path / "upload.zip"
        path.write_bytes(raw_zip(entries))
        return path

    return write


def _peak(call: Callable[[], Any]) -> int:
    """Bytes allocated at the peak while ``call`` runs (it is expected to raise)."""
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as caught:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, BadRequest | PayloadTooLarge), caught.value
    return peak


@pytest.fixture
def bomb_entry() -> Iterator[Entry]:
    yield zeros("0.png", 50 * MIB)  # exactly the per-image cap, so declared sizes pass it


def test_an_honest_zip_is_streamed_to_temp_files(
    temp_dir: Path, archive: Callable[[list[Entry]], Path]
) -> None:
    first, second = _png(1), _png(2)
    path = archive(
        [
            deflated("set/a.png", first),
            deflated("set/a.txt", b"a red fox"),
            Entry("b.png", second, zlib.crc32(second), len(second), STORED),
            deflated("__MACOSX/._a.png", b"junk"),
            deflated(".hidden.png", b"junk"),
            deflated("notes.md", b"ignored"),
        ]
    )
    inputs = TrainingInputs(temp_dir, LIMITS)
    inputs.add_zip(path)
    assert [(u.name, u.path.read_bytes()) for u in inputs.uploads] == [
        ("a.png", first),
        ("b.png", second),
    ]
    assert inputs.captions == {"a": "a red fox"}
    assert all(u.path.parent == temp_dir for u in inputs.uploads)
    inputs.discard()
    assert os.listdir(temp_dir) == []


def test_a_zip_bomb_is_refused_from_its_central_directory(
    temp_dir: Path, archive: Callable[[list[Entry]], Path], bomb_entry: Entry
) -> None:
    """40 entries of 50 MiB of zeros in a ~2 MiB zip: refused before anything is inflated."""
    entries = [
        Entry(f"{i}.png", bomb_entry.payload, bomb_entry.crc, bomb_entry.size) for i in range(40)
    ]
    path = archive(entries)
    assert path.stat().st_size < 3 * MIB
    inputs = TrainingInputs(temp_dir, LIMITS)
    with pytest.raises(PayloadTooLarge, match="compression ratio"):
        inputs.add_zip(path)
    assert _peak(lambda: TrainingInputs(temp_dir, LIMITS).add_zip(path)) < BOUND
    assert os.listdir(temp_dir) == []


def test_the_total_is_capped_before_anything_is_written(
    temp_dir: Path, archive: Callable[[list[Entry]], Path]
) -> None:
    noise = os.urandom(600 * 1024)
    stored = Entry("x.png", noise, zlib.crc32(noise), len(noise), STORED)
    path = archive([stored, replace(stored, name="y.png")])
    small = InputLimits(max_images=10, max_bytes=MIB, max_ratio=50)
    with pytest.raises(PayloadTooLarge, match=r"compute\.max_train_bytes"):
        TrainingInputs(temp_dir, small).add_zip(path)
    assert os.listdir(temp_dir) == []


def test_an_entry_that_lies_about_its_size_is_read_no_further(
    temp_dir: Path, archive: Callable[[list[Entry]], Path], bomb_entry: Entry
) -> None:
    """It declares 1,000 bytes (no ratio alarm) and inflates to 50 MiB: cut at 1,000."""
    liar = Entry("liar.png", bomb_entry.payload, bomb_entry.crc, 1000)
    path = archive([liar])
    assert _peak(lambda: TrainingInputs(temp_dir, LIMITS).add_zip(path)) < BOUND
    with pytest.raises(BadRequest, match="damaged"):
        TrainingInputs(temp_dir, LIMITS).add_zip(path)
    assert os.listdir(temp_dir) == []


def test_too_many_entries_are_refused_from_the_end_record(
    temp_dir: Path, archive: Callable[[list[Entry]], Path]
) -> None:
    path = archive([deflated(f"{i}.txt", b"") for i in range(5000)])
    with pytest.raises(BadRequest, match="entries"):
        TrainingInputs(temp_dir, LIMITS).add_zip(path)
    images = archive([deflated(f"{i}.png", b"x") for i in range(11)])
    with pytest.raises(BadRequest, match="at most 10 images"):
        TrainingInputs(temp_dir, InputLimits(10, MIB, 50)).add_zip(images)
    assert os.listdir(temp_dir) == []


def test_not_a_zip_and_a_damaged_one_are_clear_errors(
    temp_dir: Path, archive: Callable[[list[Entry]], Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip" * 100)
    with pytest.raises(BadRequest, match="not a zip"):
        TrainingInputs(temp_dir, LIMITS).add_zip(junk)
    good = deflated("a.png", _png(3))
    broken = Entry("a.png", good.payload[:-8] + b"\xff" * 8, good.crc, good.size)
    with pytest.raises(BadRequest, match="damaged"):
        TrainingInputs(temp_dir, LIMITS).add_zip(archive([broken]))
    assert os.listdir(temp_dir) == []
