"""Usernames: what the catalog calls an author, so that no name can be squatted.

An author whose profile was published on this node (a local account) is called by its
profile name. An author from another node is called ``name@node``: ``node`` is the name
(else the host) of the peer this node learnt the profile from, or the first 6
characters of the key when that peer is unknown. ``@node`` says where this node heard
of the profile, not where its author lives: any peer may relay any profile, and a peer
chooses its own name. Local account names never hold "@", so a remote profile can never
take a local name.

Where several authors would show the same (in any case), the first one this node saw
with that name keeps it: a local author, else the one whose first profile carrying
the name has the lowest log seq (whatever its ``created``). The others are suffixed
with the first 6 characters of their key (``name-abc123@node``). An author with no
profile is ``anon-abc123``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.p2p.records import decode_stored
from node.p2p.tables import authors, identities, peers, records

MAX_SCANNED = 64  # an author's earliest profiles read to find when it took its name


def key_part(did: str) -> str:
    return did.removeprefix("did:key:z6Mk")[:6]


async def _origins(conn: AsyncConnection, dids: Sequence[str]) -> dict[str, str | None]:
    """For each author with a profile: None if published here, else the node label."""
    rows = (
        await conn.execute(
            sa.select(authors.c.did, records.c.source, peers.c.name, peers.c.url)
            .join(records, records.c.id == authors.c.profile_id)
            .outerjoin(peers, peers.c.did == records.c.source)
            .where(authors.c.did.in_(list(dids)))
        )
    ).all()
    out: dict[str, str | None] = {}
    for row in rows:
        if row.source is None:
            out[row.did] = None
        elif row.name:
            out[row.did] = row.name
        elif row.url:
            out[row.did] = urlsplit(row.url).netloc or key_part(row.source)
        else:
            out[row.did] = key_part(row.source)
    return out


async def usernames(conn: AsyncConnection, dids: Sequence[str]) -> dict[str, str]:
    """The username of each author (see the module's rule)."""
    if not dids:
        return {}
    wanted = list(dict.fromkeys(dids))
    names = dict(
        (
            await conn.execute(
                sa.select(authors.c.did, authors.c.name).where(authors.c.did.in_(wanted))
            )
        ).all()
    )
    origins = await _origins(conn, wanted)

    def plain(did: str) -> str:
        origin = origins.get(did)
        return names[did] if origin is None else f"{names[did]}@{origin}"

    # Clashes are counted among every author of those names (not only those asked about),
    # leaving out an identity's rotated keys, which share its name.
    later_keys = sa.select(identities.c.did).where(identities.c.did != identities.c.identity)
    same_named = [
        did
        for did in (
            await conn.execute(
                sa.select(authors.c.did).where(
                    sa.func.lower(authors.c.name).in_({n.lower() for n in names.values()}),
                    authors.c.did.not_in(later_keys),
                )
            )
        ).scalars()
    ]
    others = [d for d in same_named if d not in names]
    if others:
        names.update(
            (
                await conn.execute(
                    sa.select(authors.c.did, authors.c.name).where(authors.c.did.in_(others))
                )
            ).all()
        )
        origins.update(await _origins(conn, others))
    alike: dict[str, list[str]] = defaultdict(list)
    for did in same_named:
        alike[plain(did).lower()].append(did)
    clashes = {shown: dids for shown, dids in alike.items() if len(dids) > 1}
    seen = await _name_seen_at(conn, [d for dids in clashes.values() for d in dids])
    keeps = {
        shown: min(dids, key=lambda d: (origins.get(d) is not None, seen.get(d, MAX_SEQ), d))
        for shown, dids in clashes.items()
    }
    out = {}
    for did in wanted:
        if did not in names:
            out[did] = f"anon-{key_part(did)}"
            continue
        name = plain(did)
        if keeps.get(name.lower(), did) != did:
            origin = origins.get(did)
            suffixed = f"{names[did]}-{key_part(did)}"
            name = suffixed if origin is None else f"{suffixed}@{origin}"
        out[did] = name
    return out


MAX_SEQ = 2**63


async def _name_seen_at(conn: AsyncConnection, dids: Sequence[str]) -> dict[str, int]:
    """When this node first saw each author with its current name: the log seq of its
    first profile (among its earliest ``MAX_SCANNED``) carrying that name in any case,
    else of its current profile. Profiles later renamed to a name someone held first
    (or sent in bulk before it) only come later."""
    if not dids:
        return {}
    current = (
        await conn.execute(
            sa.select(authors.c.did, authors.c.name, records.c.seq)
            .join(records, records.c.id == authors.c.profile_id)
            .where(authors.c.did.in_(list(dids)))
        )
    ).all()
    out: dict[str, int] = {}
    for did, name, seq in current:
        out[did] = seq
        earlier = await conn.execute(
            sa.select(records.c.seq, records.c.id, records.c.raw)
            .where(
                records.c.type == "profile",
                records.c.author == did,
                records.c.seq < seq,
                records.c.raw.is_not(None),
            )
            .order_by(records.c.seq)
            .limit(MAX_SCANNED)
        )
        for row in earlier:
            body = decode_stored(row.raw, row.id).body
            if isinstance(body, dict) and str(body.get("name", "")).lower() == name.lower():
                out[did] = row.seq
                break
    return out


async def dids_named(conn: AsyncConnection, username: str) -> list[str]:
    """The author(s) shown as ``username`` (any case): a local name matches only local
    authors, and ``name@node`` only that node's."""
    # The profile name is the part before one of the "@" (a remote name may hold "@"),
    # less a "-abc123" clash suffix.
    bases = {username} | {username[:i] for i, c in enumerate(username) if c == "@"}
    bases |= {b.rsplit("-", 1)[0] for b in bases if "-" in b}
    # Matched without regard to case, as Civitai does; an exact match wins over others.
    lowered = list({b.lower() for b in bases})
    candidates = list(
        (
            await conn.execute(
                sa.select(authors.c.did).where(sa.func.lower(authors.c.name).in_(lowered))
            )
        ).scalars()
    )
    if not candidates:
        return []
    shown = await usernames(conn, candidates)
    exact = [did for did in candidates if shown[did] == username]
    return exact or [did for did in candidates if shown[did].lower() == username.lower()]
