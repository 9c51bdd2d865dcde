"""Worker keys registered on this node, each under the user who donates it.

A worker proves it holds its key by signing its registration (and every later request);
the registering user, logged in or by API token, becomes its owner. A worker registered
with an API token lives by that token: once it is revoked or expires (or its account is
gone) the worker's requests are refused; one registered from a browser session lives as
long as its owner's account. The owner or an admin can remove a worker. Whom it serves:

- a worker registered by a member serves only that member's own jobs ("own"): a member
  cannot take other members' jobs (their prompts, their training images) by registering
  a worker;
- a worker registered by an admin, or one an admin marks (``POST
  /api/compute/workers/{did}/serves``), is a **node worker** ("all"): it serves everyone,
  its owner's own jobs first (the owner is then its donor).

Operators see each worker's contributions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.compute import params
from node.compute.tables import JOB_KINDS, WORKER_SERVES, compute_workers
from node.db import Database
from node.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from node.http import Principal
from node.p2p.keys import public_key_from_did

MAX_WORKER_NAME = 64
# Whether an API token (by id) still works: the accounts service answers (node/app.py).
TokenLive = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True)
class Worker:
    did: str
    name: str
    owner_id: int
    kinds: frozenset[str]
    max_pixels: int
    device: str
    serves: str  # "own" or "all" (WORKER_SERVES)
    token_id: int | None  # the API token that registered it; None: a browser session

    @property
    def serves_all(self) -> bool:
        return self.serves == "all"


def _worker(row: Any) -> Worker:
    return Worker(
        row.did,
        row.name,
        row.owner_id,
        frozenset(k for k in row.kinds.split(",") if k),
        row.max_pixels,
        row.device,
        row.serves,
        row.token_id,
    )


def check_kinds(value: Any, name: str = "kinds") -> frozenset[str]:
    if isinstance(value, str):
        value = [k.strip() for k in value.split(",") if k.strip()]
    if not isinstance(value, list) or not value or any(k not in JOB_KINDS for k in value):
        raise BadRequest(f"{name!r} must list job kinds among {', '.join(JOB_KINDS)}")
    return frozenset(value)


class WorkerRegistry:
    def __init__(
        self, db: Database, clock: Callable[[], int], token_live: TokenLive | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.token_live = token_live

    async def register(
        self, owner: Any, data: dict[str, Any], token_id: int | None = None
    ) -> dict[str, Any]:
        """Register (or update) a worker key under ``owner``, the user donating it, with
        the API token ``token_id`` (None from a browser session or the admin token): the
        worker lives by the credential of its latest registration."""
        did = data.get("did")
        if not isinstance(did, str):
            raise BadRequest("'did' (the worker key's did:key) is required")
        public_key_from_did(did)
        name = data.get("name") or did[-8:]
        if not isinstance(name, str) or len(name) > MAX_WORKER_NAME:
            raise BadRequest(f"'name' must be a string of at most {MAX_WORKER_NAME} characters")
        kinds = check_kinds(data.get("kinds", list(JOB_KINDS)))
        max_pixels = params.int_field(data, "max_pixels", 64 * 64, 2**40, 1024 * 1024)
        device = data.get("device", "cpu")
        if not isinstance(device, str) or not device or len(device) > 16:
            raise BadRequest("'device' must be a short name such as cuda or cpu")
        values = {
            "name": name,
            "kinds": ",".join(sorted(kinds)),
            "max_pixels": max_pixels,
            "device": device,
            "last_seen": self.clock(),
            "token_id": token_id,
        }
        async with self.db.write() as conn:
            owner_id = await conn.scalar(
                sa.select(compute_workers.c.owner_id).where(compute_workers.c.did == did)
            )
            if owner_id is None:
                serves = "all" if getattr(owner, "role", None) == "admin" else "own"
                await conn.execute(
                    compute_workers.insert().values(
                        did=did, owner_id=owner.id, registered=self.clock(), serves=serves, **values
                    )
                )
            elif owner_id != owner.id:
                raise Conflict("this worker key is registered by another user")
            else:
                await conn.execute(
                    compute_workers.update().where(compute_workers.c.did == did).values(**values)
                )
        return (await self.list(Principal(user=owner), did=did))[0]

    async def list(self, who: Principal, did: str | None = None) -> list[dict[str, Any]]:
        """Workers with their contributions: all for admins, a donor's own otherwise."""
        from node.accounts.tables import users

        query = (
            sa.select(compute_workers, users.c.name.label("owner"))
            .join(users, users.c.id == compute_workers.c.owner_id)
            .order_by(compute_workers.c.registered)
        )
        if not who.is_admin:
            query = query.where(compute_workers.c.owner_id == (who.user.id if who.user else -1))
        if did is not None:
            query = query.where(compute_workers.c.did == did)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "did": r.did,
                "name": r.name,
                "owner": r.owner,
                "kinds": r.kinds.split(","),
                "max_pixels": r.max_pixels,
                "device": r.device,
                "serves": r.serves,
                "registered": r.registered,
                "last_seen": r.last_seen,
                "jobs_done": r.jobs_done,
                "jobs_failed": r.jobs_failed,
                "outputs": r.outputs,
                "busy_s": r.busy_ms // 1000,
            }
            for r in rows
        ]

    async def set_serves(self, who: Principal, did: str, serves: Any) -> dict[str, Any]:
        """An admin decides whom a worker serves: "all" (a node worker) or "own"."""
        if not who.is_admin:
            raise Forbidden("only an admin decides whom a worker serves")
        if serves not in WORKER_SERVES:
            raise BadRequest(f"'serves' must be one of {', '.join(WORKER_SERVES)}")
        async with self.db.write() as conn:
            changed = await conn.execute(
                compute_workers.update().where(compute_workers.c.did == did).values(serves=serves)
            )
            if changed.rowcount == 0:
                raise NotFound(f"no worker {did} is registered here")
        return (await self.list(who, did=did))[0]

    async def get(self, conn: AsyncConnection, did: str) -> Worker:
        row = (
            await conn.execute(sa.select(compute_workers).where(compute_workers.c.did == did))
        ).first()
        if row is None:
            raise Unauthorized(
                f"worker {did} is not registered on this node: register it first "
                "(civitas worker --token …)"
            )
        worker = _worker(row)
        if (
            worker.token_id is not None
            and self.token_live is not None
            and not await self.token_live(worker.token_id)
        ):
            raise Unauthorized(
                f"the API token that registered worker {did} was revoked or expired: "
                "register it again with a live token (civitas worker --token …)"
            )
        return worker

    async def owned(self, conn: AsyncConnection, who: Principal, did: str) -> Worker:
        """Worker ``did`` if ``who`` owns it or is an admin; 404 otherwise (the same for a
        worker that is not there as for another member's)."""
        row = (
            await conn.execute(sa.select(compute_workers).where(compute_workers.c.did == did))
        ).first()
        if row is None or not (
            who.is_admin or (who.user is not None and row.owner_id == who.user.id)
        ):
            raise NotFound(f"you have no worker {did} on this node")
        return _worker(row)
