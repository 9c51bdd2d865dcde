"""Sign-up: who may create an account on this node (``accounts.registration``), and the
invite codes admins make when it is ``invite``.

- ``open``: anyone, at most ``accounts.signups_per_address`` accounts per client address
  (an IPv6 /64) before each further one waits an hour, doubled each time.
- ``invite``: as open, with a valid invite code; the code is spent in the same
  transaction that creates the account (two sign-ups cannot share one).
- ``closed``: nobody; the operator adds accounts (``civitas user add``, the admin API).

A new account is a member; it is logged in at once (a web session).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.accounts.passwords import token_digest
from node.accounts.service import DAY_MS, AccountService, User
from node.accounts.tables import invites
from node.errors import BadRequest, Forbidden, NotFound
from node.p2p.records import now_ms
from node.ratelimit import BackoffLimiter

MODES = ("open", "invite", "closed")
INVITE_PREFIX = "cvi_"
HOUR_S = 3600.0
INVITE_REFUSED = "that invite code is unknown, used or expired"


@dataclass(frozen=True)
class Invite:
    id: int
    created_by: str
    created: int
    expires: int
    used_by: str | None
    used_at: int | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_by": self.created_by,
            "created": self.created,
            "expires": self.expires,
            "used_by": self.used_by,
            "used_at": self.used_at,
        }


class SignUps:
    def __init__(
        self,
        accounts: AccountService,
        registration: str,
        *,
        invite_days: int = 7,
        per_address: int = 3,
    ) -> None:
        if registration not in MODES:
            raise ValueError(f"registration is one of {', '.join(MODES)}")
        self.accounts = accounts
        self.registration = registration
        self.invite_ms = invite_days * DAY_MS
        # the per_address-th sign-up starts the wait, so the one after it is refused
        self.limiter = BackoffLimiter(
            free=per_address - 1, base_s=HOUR_S, max_s=7 * 24 * HOUR_S, forget_s=24 * HOUR_S
        )

    @property
    def open(self) -> bool:
        return self.registration != "closed"

    async def sign_up(
        self, name: str, password: str, invite: str | None, address: str
    ) -> tuple[str, User]:
        """Create a member account and log it in: (session id, user)."""
        if self.registration == "closed":
            raise Forbidden("sign-up is closed on this node; ask its operator for an account")
        if self.registration == "invite" and not invite:
            raise Forbidden("sign-up on this node needs an invite code from one of its admins")
        self.limiter.check(address, "sign-ups from your address")
        claim = None
        if self.registration == "invite":
            assert invite is not None
            claim = await self._claim(invite, name)
        user = await self.accounts.add_user(name, password, "member", claim=claim)
        self.limiter.hit(address)
        return await self.accounts.start_session(user.id), user

    async def _claim(self, code: str, name: str) -> Any:
        """The step that spends the invite in the account's transaction; an unknown, used
        or expired code is refused here already, before any password is hashed."""
        if not isinstance(code, str) or len(code) > 100:
            raise BadRequest("'invite' is an invite code")
        digest = token_digest(code.strip())
        async with self.accounts.db.read() as conn:
            usable = await conn.scalar(sa.select(invites.c.id).where(_usable(digest, now_ms())))
        if usable is None:
            raise Forbidden(INVITE_REFUSED)

        async def claim(conn: AsyncConnection) -> None:
            now = now_ms()
            spent = await conn.execute(
                invites.update().where(_usable(digest, now)).values(used_by=name, used_at=now)
            )
            if spent.rowcount != 1:
                raise Forbidden(INVITE_REFUSED)

        return claim

    # --- invites (admins) -----------------------------------------------------------------

    async def create_invite(self, created_by: str) -> tuple[str, Invite]:
        """A new invite code (shown once) and its row."""
        code = INVITE_PREFIX + secrets.token_urlsafe(24)
        digest, now = token_digest(code), now_ms()
        async with self.accounts.db.write() as conn:
            await conn.execute(
                invites.insert().values(
                    code_hash=digest,
                    created_by=created_by[:64],
                    created=now,
                    expires=now + self.invite_ms,
                )
            )
            row = (
                await conn.execute(sa.select(invites).where(invites.c.code_hash == digest))
            ).one()
        return code, _invite(row)

    async def list_invites(self) -> list[Invite]:
        async with self.accounts.db.read() as conn:
            rows = await conn.execute(sa.select(invites).order_by(invites.c.id.desc()))
            return [_invite(row) for row in rows]

    async def revoke_invite(self, invite_id: int) -> None:
        """Delete an unused invite (a used one stays, as the record of who came in by it)."""
        async with self.accounts.db.write() as conn:
            row = (await conn.execute(sa.select(invites).where(invites.c.id == invite_id))).first()
            if row is None:
                raise NotFound(f"no invite {invite_id}")
            if row.used_by is not None:
                raise BadRequest(f"invite {invite_id} was used already (by {row.used_by})")
            await conn.execute(invites.delete().where(invites.c.id == invite_id))


def _usable(digest: bytes, now: int) -> Any:
    """The invite with this code's digest, while unused and unexpired."""
    return sa.and_(
        invites.c.code_hash == digest, invites.c.used_by.is_(None), invites.c.expires > now
    )


def _invite(row: Any) -> Invite:
    return Invite(row.id, row.created_by, row.created, row.expires, row.used_by, row.used_at)
