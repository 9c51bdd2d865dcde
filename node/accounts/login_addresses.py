"""The client addresses each account has logged in from, in the database.

:class:`node.accounts.throttle.LoginThrottle` lets an address that logged into an account
before past the account's limit for strangers; it remembers such addresses in memory, and
this store keeps them across restarts, so an owner under a guessing attack is not taken
for a stranger after the node restarts. Addresses are kept as
:func:`node.ratelimit.address_key` (an IPv6 client by its /64); an account keeps its
``MAX_PER_ACCOUNT`` most recently used ones.
"""

from __future__ import annotations

import sqlalchemy as sa

from node.accounts.tables import login_addresses, users
from node.db import Database
from node.p2p.records import now_ms
from node.ratelimit import address_key

MAX_PER_ACCOUNT = 20
MAX_KEY = 64  # the column's width; a longer key (not an IP address) is not kept


def _key(address: str | None) -> str | None:
    key = address_key(address or "")
    return key if key and len(key) <= MAX_KEY else None


class LoginAddresses:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self, name: str, address: str | None) -> bool:
        """Whether account ``name`` has logged in from ``address`` (its key) before."""
        key = _key(address)
        if key is None:
            return False
        query = (
            sa.select(login_addresses.c.user_id)
            .join(users, users.c.id == login_addresses.c.user_id)
            .where(users.c.name == name, login_addresses.c.address == key)
            .limit(1)
        )
        async with self.db.read() as conn:
            return await conn.scalar(query) is not None

    async def remember(self, user_id: int, address: str | None, now: int | None = None) -> None:
        """Record a login from ``address``; forget the account's oldest beyond the bound."""
        key = _key(address)
        if key is None:
            return
        when = now_ms() if now is None else now
        mine = login_addresses.c.user_id == user_id
        recent = (
            sa.select(login_addresses.c.address)
            .where(mine)
            .order_by(login_addresses.c.last_login.desc(), login_addresses.c.address)
            .limit(MAX_PER_ACCOUNT)
        )
        try:
            async with self.db.write() as conn:
                updated = await conn.execute(
                    login_addresses.update()
                    .where(mine, login_addresses.c.address == key)
                    .values(last_login=when)
                )
                if updated.rowcount == 0:
                    await conn.execute(
                        login_addresses.insert().values(
                            user_id=user_id, address=key, last_login=when
                        )
                    )
                await conn.execute(
                    login_addresses.delete().where(mine, login_addresses.c.address.not_in(recent))
                )
        except sa.exc.IntegrityError:
            pass  # another process recorded the same login, or the account went meanwhile

    async def count(self, user_id: int) -> int:
        query = sa.select(sa.func.count()).where(login_addresses.c.user_id == user_id)
        async with self.db.read() as conn:
            return int(await conn.scalar(query) or 0)
