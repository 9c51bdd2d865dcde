"""Signed records, for any body of the allowed types: sign, verify, and reject tampering."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import RecordError
from node.p2p.keys import SigningKey
from node.p2p.records import (
    EARLIEST_CREATED_MS,
    MAX_BODY_DEPTH,
    canonical_encode,
    exceeds_depth,
    sign_record,
    verify_record,
)

NOW = EARLIEST_CREATED_MS + 10**12
KEY = SigningKey.from_seed(bytes(range(32)))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=12), values, max_size=6).filter(
    lambda body: not exceeds_depth(body, MAX_BODY_DEPTH)
)
created = st.integers(min_value=EARLIEST_CREATED_MS, max_value=NOW)
record_types = st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True)
PROPERTY = settings(max_examples=150)


@PROPERTY
@given(body=bodies, when=created, record_type=record_types)
def test_any_allowed_body_signs_verifies_and_round_trips(
    body: dict[str, Any], when: int, record_type: str
) -> None:
    record = sign_record(KEY, record_type, body, created=when)
    verified = verify_record(record.raw, now=NOW)
    assert verified.id == record.id
    assert verified.body == body
    assert verified.type == record_type and verified.created == when
    assert canonical_encode(verified.envelope()) == record.raw


@PROPERTY
@given(body=bodies, data=st.data())
def test_any_single_byte_change_fails_or_changes_the_id(body: dict[str, Any], data: Any) -> None:
    record = sign_record(KEY, "post", body, created=NOW - 1)
    raw = bytearray(record.raw)
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="index")
    byte = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[index]))
    raw[index] = byte
    try:
        tampered = verify_record(bytes(raw), now=NOW)
    except RecordError:
        return
    assert tampered.id != record.id
