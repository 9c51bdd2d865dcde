"""Small checks for record bodies: each raises RecordRejected naming the field.

Bodies are open: fields a schema does not name are kept and relayed, never rejected,
so a newer node can add fields without splitting the federation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.errors import RecordRejected


def text(
    body: Mapping[str, Any], key: str, *, max_len: int, required: bool = True, min_len: int = 1
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise RecordRejected(f"body.{key} is required")
        return None
    if not isinstance(value, str):
        raise RecordRejected(f"body.{key} must be a string")
    if not min_len <= len(value) <= max_len:
        raise RecordRejected(f"body.{key} must be {min_len} to {max_len} characters")
    return value


def digest(
    body: Mapping[str, Any], key: str, *, size: int = 32, required: bool = True
) -> bytes | None:
    value = body.get(key)
    if value is None:
        if required:
            raise RecordRejected(f"body.{key} is required")
        return None
    if not isinstance(value, bytes) or len(value) != size:
        raise RecordRejected(f"body.{key} must be {size} bytes of binary")
    return value


def text_list(body: Mapping[str, Any], key: str, *, max_items: int, max_len: int) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or len(value) > max_items:
        raise RecordRejected(f"body.{key} must be a list of at most {max_items} strings")
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= max_len:
            raise RecordRejected(f"body.{key} items must be strings of 1 to {max_len} characters")
    return value
