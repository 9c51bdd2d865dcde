"""Our safetensors header parser gives the safetensors library's verdict on generated
headers: sizes near the overflow edges, offsets right or off by one, trailing bytes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog import safetensors as sf
from tests.catalog.test_safetensors import _library_accepts, _we_accept, build, entry

pytest.importorskip("safetensors")

EDGE_DIMS = [0, 1, 2, 3, 7, 2**31, 2**32, 2**61, 2**62, 2**63, 2**64 - 1, 2**64]
dims = st.sampled_from(EDGE_DIMS) | st.integers(min_value=0, max_value=5)
tensors = st.tuples(
    st.sampled_from(sorted(sf.DTYPE_BITS)),
    st.lists(dims, max_size=4),
    st.sampled_from([0, 1, 8, 2**64 - 1, 2**64]),  # the size when the shape's is too big
    st.sampled_from([0, 0, 0, 1, -1]),  # off by this much
)


@st.composite
def files(draw: st.DrawFn) -> bytes:
    header: dict[str, Any] = {}
    position = 0
    for i, (dtype, shape, big, off) in enumerate(draw(st.lists(tensors, min_size=1, max_size=3))):
        bits = math.prod(shape) * sf.DTYPE_BITS[dtype]
        size = max(0, (bits // 8 if bits <= 8 * 256 else big) + off)
        header[f"t{i}"] = entry(dtype, shape, position, position + size)
        position += size
    data = bytes(position) if position <= 4096 else bytes(draw(st.integers(0, 64)))
    return build(header, data + bytes(draw(st.sampled_from([0, 0, 0, 1]))))


@settings(max_examples=300)
@given(blob=files())
def test_generated_headers_get_the_same_verdict_as_the_library(blob: bytes) -> None:
    assert _we_accept(blob) == _library_accepts(blob), blob[8:].decode()
