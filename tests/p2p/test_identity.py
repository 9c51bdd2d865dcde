"""The ``profile`` body rule (pure; the projection is tested against a database)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from node.errors import RecordRejected
from node.p2p.identity import check_profile
from node.p2p.keys import SigningKey, public_key_commitment
from node.p2p.records import sign_record, verify_record

NEXT_KEY = public_key_commitment(SigningKey.from_seed(bytes(32)).public_bytes)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Ada"},
        {"name": "A"},
        {"name": "a" * 64},
        {"name": "é" * 64},  # 64 characters, 128 UTF-8 bytes
        {"name": "Ada Lovelace", "bio": "", "next_key": NEXT_KEY},
        {"name": "Ada", "bio": "b" * 4000},
        {"name": "Ada", "bio": "line one\nline two"},
        {"name": "Ada", "next_key": hashlib.sha256(b"").digest()},
        {"name": "李小龍"},
    ],
)
def test_valid_profiles_pass(body: dict[str, Any]) -> None:
    check_profile(body)


def test_unknown_extra_fields_are_accepted() -> None:
    check_profile(
        {
            "name": "Ada",
            "avatar": b"\x89PNG",
            "pronouns": "she/her",
            "links": ["https://example.org"],
            "future": {"nested": {"deeper": 1}},
            "score": -3,
            "flag": None,
        }
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"bio": "no name"},
        {"name": None},
        {"name": ""},
        {"name": "a" * 65},
        {"name": 5},
        {"name": b"Ada"},
        {"name": ["Ada"]},
    ],
    ids=["empty", "bio-only", "none", "blank", "65-chars", "int", "bytes", "list"],
)
def test_name_is_required_text_of_1_to_64_characters(body: dict[str, Any]) -> None:
    with pytest.raises(RecordRejected, match="name"):
        check_profile(body)


@pytest.mark.parametrize(
    "name", [" Ada", "Ada ", " ", "\tAda", "Ada\n", "\u3000Ada", "A\x00da", "Ada\x1b[31m"]
)
def test_name_without_surrounding_spaces_or_control_characters(name: str) -> None:
    with pytest.raises(RecordRejected, match="name"):
        check_profile({"name": name})


@pytest.mark.parametrize(
    "next_key",
    [b"", bytes(31), bytes(33), bytes(64), NEXT_KEY.hex(), list(NEXT_KEY), 0, True],
    ids=["empty", "31-bytes", "33-bytes", "64-bytes", "hex-string", "list", "int", "bool"],
)
def test_next_key_when_present_is_32_bytes(next_key: Any) -> None:
    with pytest.raises(RecordRejected, match="next_key"):
        check_profile({"name": "Ada", "next_key": next_key})


@pytest.mark.parametrize("bio", [5, b"bio", ["bio"], "b" * 4001])
def test_bio_when_present_is_text_of_at_most_4000_characters(bio: Any) -> None:
    with pytest.raises(RecordRejected, match="bio"):
        check_profile({"name": "Ada", "bio": bio})


def test_a_signed_profile_body_passes_after_verification() -> None:
    key = SigningKey.from_seed(bytes(range(32)))
    body = {"name": "Ada", "bio": "hi", "next_key": NEXT_KEY, "later": {"x": 1}}
    created = 1_735_689_600_000  # 2025-01-01T00:00:00Z
    record = verify_record(sign_record(key, "profile", body, created).raw, now=created)
    check_profile(record.body)
