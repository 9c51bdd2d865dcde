"""Integer ids for Civitai clients, the same on every node.

A model's, version's or image's integer id is the first 53 bits of its root record id
(so it survives JSON numbers); a file's is the first 53 bits of its SHA256. On a
collision the lower record id keeps the number and the other takes the next 53 bits of
its id (DESIGN.md section 1).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

BITS = 53
WINDOWS = 256 // BITS  # 4 candidates per 32-byte id


def candidate(record_id: bytes, k: int = 0) -> int:
    return (int.from_bytes(record_id, "big") >> (256 - BITS * (k + 1))) & ((1 << BITS) - 1)


def file_int_id(sha256_hex: str) -> int:
    return candidate(bytes.fromhex(sha256_hex))


async def assign_int_id(
    conn: AsyncConnection, table: sa.Table, key: sa.Column, record_id: bytes
) -> int:
    """Give ``record_id`` its integer id in ``table``, moving a higher id off a collision.

    The row for ``record_id`` must exist already (with a :func:`placeholder` int_id).
    """
    for k in range(WINDOWS):
        number = candidate(record_id, k)
        holder = await conn.scalar(sa.select(key).where(table.c.int_id == number))
        if holder is None or holder == record_id:
            await conn.execute(table.update().where(key == record_id).values(int_id=number))
            return number
        if holder > record_id:
            # The lower id keeps the number: park the holder, take it, re-seat the holder.
            await conn.execute(
                table.update().where(key == holder).values(int_id=placeholder(holder))
            )
            await conn.execute(table.update().where(key == record_id).values(int_id=number))
            await assign_int_id(conn, table, key, holder)
            return number
    raise RuntimeError(f"no free integer id for {record_id.hex()}")  # 2^-200 territory


def placeholder(record_id: bytes) -> int:
    """A temporary, unique, negative int_id while the real one is being assigned."""
    return -(candidate(record_id, WINDOWS - 1) + 1)
