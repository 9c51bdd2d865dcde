"""Which version answers for a file hash when several authors claim the same file.

Anyone can sign a ``model_version`` naming any SHA256, and ``created`` is the signer's
word, so a hash lookup never trusts it. The rule (docs/records.md, "Acceptance rules"):
a version published on this node wins; then one whose file this node fetched and holds
(matched by its torrent's infohash); then the claim this node saw first (lowest log
seq). Only versions shown in the catalog (by their model's author) count. The other
authors' claims on the same file are listed as disputed, beside Civitai's fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.catalog.tables import model_versions, models, version_files
from node.p2p.tables import blobs, downloads, records


@dataclass(frozen=True)
class Claim:
    """A shown version's claim on one file."""

    sha256: str
    version_id: bytes
    version_int: int
    model_int: int
    author: str
    rank: tuple[int, int, int]  # lower wins: (published here?, fetched here?, log seq)
    autov1: str | None
    autov2: str
    autov3: str | None
    crc32: str
    blake3: str

    def public(self) -> dict[str, Any]:
        return {
            "modelVersionId": self.version_int,
            "modelId": self.model_int,
            "author": self.author,
            "recordId": self.version_id.hex(),
        }


async def claims(conn: AsyncConnection, where: Any) -> list[Claim]:
    """Every shown version's claim on files matching ``where``, best claim first."""
    rows = (
        await conn.execute(
            sa.select(
                version_files.c.sha256,
                version_files.c.infohash,
                version_files.c.autov1,
                version_files.c.autov2,
                version_files.c.autov3,
                version_files.c.crc32,
                version_files.c.blake3,
                model_versions.c.id,
                model_versions.c.int_id,
                model_versions.c.author,
                models.c.int_id.label("model_int"),
                records.c.seq,
                records.c.source,
            )
            .join(model_versions, model_versions.c.id == version_files.c.version_id)
            .join(
                models,
                sa.and_(
                    models.c.root_id == model_versions.c.model_root,
                    models.c.author == model_versions.c.author,
                ),
            )
            .join(records, records.c.id == model_versions.c.id)
            .where(where)
        )
    ).all()
    if not rows:
        return []
    shas = list({r.sha256 for r in rows})
    held = set(
        (await conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256.in_(shas)))).scalars()
    )
    fetched = {
        (r.sha256, r.infohash)
        for r in await conn.execute(
            sa.select(downloads.c.sha256, downloads.c.infohash).where(
                downloads.c.sha256.in_(list(held)), downloads.c.state == "complete"
            )
        )
    }
    out = [
        Claim(
            sha256=r.sha256,
            version_id=r.id,
            version_int=r.int_id,
            model_int=r.model_int,
            author=r.author,
            rank=(
                0 if r.source is None else 1,
                0 if (r.sha256, r.infohash) in fetched else 1,
                int(r.seq),
            ),
            autov1=r.autov1,
            autov2=r.autov2,
            autov3=r.autov3,
            crc32=r.crc32,
            blake3=r.blake3,
        )
        for r in rows
    ]
    out.sort(key=lambda c: c.rank)
    return out


def disputes(all_claims: Iterable[Claim], winner: Claim) -> list[dict[str, Any]]:
    """The other authors' claims on the winner's file, best first, one per version."""
    seen: set[bytes] = set()
    out = []
    for claim in all_claims:
        if claim.sha256 == winner.sha256 and claim.author != winner.author:
            if claim.version_id not in seen:
                seen.add(claim.version_id)
                out.append(claim.public())
    return out


def winners_by_sha256(all_claims: Iterable[Claim]) -> dict[str, Claim]:
    """The winning claim for each file."""
    out: dict[str, Claim] = {}
    for claim in all_claims:  # best first
        out.setdefault(claim.sha256, claim)
    return out
