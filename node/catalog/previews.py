"""Resized image previews for ``/images/<sha>/width=N/…`` URLs, made once and kept."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path


class PreviewCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def get(
        self, sha256: str, original: Path, width: int, resize: Callable[[bytes, int], bytes]
    ) -> bytes:
        cached = self.root / f"{sha256}_{width}"
        if cached.is_file():
            return await asyncio.to_thread(cached.read_bytes)

        def make() -> bytes:
            data = resize(original.read_bytes(), width)
            self.root.mkdir(parents=True, exist_ok=True)
            temp = self.root / f".{uuid.uuid4().hex}.tmp"
            temp.write_bytes(data)
            os.replace(temp, cached)
            return data

        return await asyncio.to_thread(make)
