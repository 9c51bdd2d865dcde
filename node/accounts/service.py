"""Accounts: create users with their author keys, log in, issue and check tokens."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.accounts.login_addresses import LoginAddresses
from node.accounts.passwords import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    PasswordHasher,
    hash_password,
    token_digest,
)
from node.accounts.tables import api_tokens, sessions, users
from node.accounts.throttle import LoginThrottle
from node.db import Database
from node.errors import BadRequest, Conflict, KeyFileError, NotFound, Unauthorized
from node.home import Home
from node.http import Principal
from node.p2p.identity import PROFILE
from node.p2p.keys import SigningKey, load_key, public_key_commitment
from node.p2p.log import RecordLog
from node.p2p.records import Record, now_ms, sign_record
from node.p2p.rotation import KEY_ROTATION, countersigned_bytes

Role = Literal["admin", "moderator", "member"]
ROLES: tuple[Role, ...] = ("admin", "moderator", "member")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
API_TOKEN_PREFIX = "cvt_"
MAX_TOKEN_DAYS = 3650
DAY_MS = 24 * 3600 * 1000
_UNPRINTABLE = re.compile("[\ud800-\udfff\x00-\x1f]")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    did: str
    created: int

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "did": self.did, "created": self.created}


def _user(row: Any) -> User:
    return User(row.id, row.name, row.role, row.did, row.created)


def check_username(name: str) -> None:
    if not isinstance(name, str) or not USERNAME.match(name):
        raise BadRequest(
            "a username is 1-32 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


def check_password(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")


class AccountService:
    def __init__(
        self,
        db: Database,
        log: RecordLog,
        home: Home,
        session_hours: int,
        hasher: PasswordHasher | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.db = db
        self.log = log
        self.home = home
        self.session_ms = session_hours * 3600 * 1000
        self.hasher = hasher or PasswordHasher()
        self.throttle = throttle or LoginThrottle()
        self.login_addresses = LoginAddresses(db)

    # --- users ----------------------------------------------------------------------

    async def add_user(
        self,
        name: str,
        password: str,
        role: str = "member",
        claim: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> User:
        """Create a user, their author key (and pre-committed next key), and their profile.
        A name differing from an existing one only in case is taken (no look-alikes).
        ``claim``: run in the same transaction first (a sign-up's invite), may refuse."""
        check_username(name)
        check_password(password)
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}")
        if await self._name_taken(name):
            raise Conflict(f"user {name!r} exists already")
        key = SigningKey.generate()
        password_hash = await self.hasher.hash(password)
        profile = self._profile(key, name, self._save_keys(key))
        self.log.types.check_body(profile)
        async with self.db.write() as conn:
            if claim is not None:
                await claim(conn)
            if await self._name_taken(name, conn):
                raise Conflict(f"user {name!r} exists already")
            await conn.execute(
                users.insert().values(
                    name=name, role=role, password_hash=password_hash, did=key.did, created=now_ms()
                )
            )
            await self.log.append_in(conn, profile)
        return await self.get_user(name)

    async def _name_taken(self, name: str, conn: AsyncConnection | None = None) -> bool:
        query = sa.select(users.c.id).where(sa.func.lower(users.c.name) == name.lower()).limit(1)
        if conn is not None:
            return await conn.scalar(query) is not None
        async with self.db.read() as reading:
            return await reading.scalar(query) is not None

    def _save_keys(self, key: SigningKey) -> SigningKey:
        """Save ``key`` and a fresh next key it commits to; return the next key."""
        following = SigningKey.generate()
        self.home.save_author_key(key)
        self.home.save_author_key(following, following_of=key.did)
        return following

    @staticmethod
    def _profile(key: SigningKey, name: str, following: SigningKey) -> Record:
        return sign_record(
            key, PROFILE, {"name": name, "next_key": public_key_commitment(following.public_bytes)}
        )

    async def set_author_key(self, name: str, key: SigningKey) -> User:
        """Give a user an imported author key; publish a profile for it if it has none."""
        user = await self.get_user(name)
        profile = self._profile(key, name, self._save_keys(key))
        async with self.db.write() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(did=key.did))
            await self.log.append_in(conn, profile)
        return await self.get_user(name)

    async def rotate_key(self, name: str) -> User:
        """Rotate a user's author key to the one their profile committed to: a
        ``key_rotation`` signed by the current key and countersigned by the new one, which
        commits to a fresh key after it; then a profile under the new key."""
        user = await self.get_user(name)
        old = self.home.author_key(user.did)
        following = self.home.author_key_file(user.did, following=True)
        if not following.exists():
            raise KeyFileError(f"this node holds no pre-committed next key for {user.did}")
        new = load_key(following)
        after = SigningKey.generate()
        commitment = public_key_commitment(after.public_bytes)
        rotation = sign_record(
            old,
            KEY_ROTATION,
            {
                "new_key": new.did,
                "next_key": commitment,
                "countersig": new.sign(countersigned_bytes(old.did, new.did, commitment)),
            },
        )
        profile = sign_record(new, PROFILE, {"name": name, "next_key": commitment})
        self.home.save_author_key(new)
        self.home.save_author_key(after, following_of=new.did)
        async with self.db.write() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(did=new.did))
            await self.log.append_many(conn, [rotation, profile])
        return await self.get_user(name)

    async def _find(self, name: str) -> User | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.name == name))).first()
        return _user(row) if row is not None else None

    async def get_user(self, name: str) -> User:
        user = await self._find(name)
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return user

    async def list_users(self) -> list[User]:
        async with self.db.read() as conn:
            return [_user(r) for r in await conn.execute(sa.select(users).order_by(users.c.id))]

    # --- API tokens -----------------------------------------------------------------

    async def create_token(
        self, name: str, label: str = "cli", expires_days: int | None = None
    ) -> str:
        """A new API token for user ``name`` (shown once, stored hashed), valid forever or
        for ``expires_days`` days."""
        if not isinstance(label, str) or not 0 < len(label) <= 64 or _UNPRINTABLE.search(label):
            raise BadRequest("a token label is 1 to 64 characters")
        if expires_days is not None and (
            not isinstance(expires_days, int)
            or isinstance(expires_days, bool)
            or not 1 <= expires_days <= MAX_TOKEN_DAYS
        ):
            raise BadRequest(f"expires_days is a whole number from 1 to {MAX_TOKEN_DAYS}")
        user = await self.get_user(name)
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = now_ms()
        async with self.db.write() as conn:
            await conn.execute(
                api_tokens.insert().values(
                    user_id=user.id,
                    label=label,
                    token_hash=token_digest(token),
                    created=now,
                    expires=now + expires_days * DAY_MS if expires_days else None,
                )
            )
        return token

    async def list_tokens(self, name: str) -> list[dict[str, Any]]:
        """User ``name``'s tokens (never their values), newest first."""
        user = await self.get_user(name)
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(api_tokens)
                .where(api_tokens.c.user_id == user.id)
                .order_by(api_tokens.c.id.desc())
            )
            now = now_ms()
            return [
                {
                    "id": row.id,
                    "label": row.label,
                    "created": row.created,
                    "expires": row.expires,
                    "expired": row.expires is not None and row.expires <= now,
                }
                for row in rows
            ]

    async def revoke_token(self, name: str, token_id: int) -> None:
        """Delete one of user ``name``'s tokens: from now on it is refused (401)."""
        user = await self.get_user(name)
        async with self.db.write() as conn:
            result = await conn.execute(
                api_tokens.delete().where(
                    api_tokens.c.id == token_id, api_tokens.c.user_id == user.id
                )
            )
        if result.rowcount == 0:
            raise NotFound(f"{name!r} has no token {token_id}")

    async def user_for_token(self, token: str) -> User | None:
        """The user of a live token; None for unknown, revoked or expired ones."""
        found = await self.token_user(token)
        return found[0] if found is not None else None

    async def token_user(self, token: str) -> tuple[User, int] | None:
        """The user of a live token and the token's id; None for unknown, revoked or
        expired ones."""
        if not token.startswith(API_TOKEN_PREFIX):
            return None
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(users, api_tokens.c.id.label("token_id"))
                    .join(api_tokens, api_tokens.c.user_id == users.c.id)
                    .where(
                        api_tokens.c.token_hash == token_digest(token),
                        sa.or_(api_tokens.c.expires.is_(None), api_tokens.c.expires > now_ms()),
                    )
                )
            ).first()
        return (_user(row), int(row.token_id)) if row is not None else None

    async def token_live(self, token_id: int) -> bool:
        """Whether API token ``token_id`` still works: not revoked, not expired, and its
        user's account still there (what a worker it registered lives by)."""
        async with self.db.read() as conn:
            found = await conn.scalar(
                sa.select(api_tokens.c.id)
                .join(users, users.c.id == api_tokens.c.user_id)
                .where(
                    api_tokens.c.id == token_id,
                    sa.or_(api_tokens.c.expires.is_(None), api_tokens.c.expires > now_ms()),
                )
            )
        return found is not None

    # --- sessions -------------------------------------------------------------------

    async def login(self, name: str, password: str, address: str | None = None) -> tuple[str, User]:
        """Check a password; return a new session id. Same error for any failure; 429
        (TooManyRequests) while the account (from ``address``, or from addresses new to it)
        or ``address`` must wait after wrong ones (see :mod:`node.accounts.throttle`)."""
        if not isinstance(name, str) or not USERNAME.match(name):
            raise Unauthorized("wrong username or password")  # no such name can exist
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise Unauthorized("wrong username or password")
        known = self.throttle.known(name, address)
        if not known and await self.login_addresses.known(name, address):
            self.throttle.remember(name, address)  # from before a restart
            known = True
        async with self.throttle.attempt(name, address):
            async with self.db.read() as conn:
                row = (await conn.execute(sa.select(users).where(users.c.name == name))).first()
            stored = row.password_hash if row is not None else _DUMMY_HASH
            if not await self.hasher.verify(password, stored, known=known) or row is None:
                self.throttle.failed(name, address)
                raise Unauthorized("wrong username or password")
            self.throttle.succeeded(name, address)
        await self.login_addresses.remember(row.id, address)
        return await self.start_session(row.id), _user(row)

    async def start_session(self, user_id: int) -> str:
        """A new web session for the user (after a login or a sign-up): its id."""
        session_id = secrets.token_urlsafe(32)
        now = now_ms()
        async with self.db.write() as conn:
            await conn.execute(sessions.delete().where(sessions.c.expires < now))
            await conn.execute(
                sessions.insert().values(
                    token_hash=token_digest(session_id),
                    user_id=user_id,
                    csrf_token=secrets.token_urlsafe(24),
                    expires=now + self.session_ms,
                )
            )
        return session_id

    async def session(self, session_id: str) -> Principal | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(users, sessions.c.csrf_token, sessions.c.expires)
                    .join(sessions, sessions.c.user_id == users.c.id)
                    .where(sessions.c.token_hash == token_digest(session_id))
                )
            ).first()
        if row is None or row.expires < now_ms():
            return None
        return Principal(user=_user(row), csrf_token=row.csrf_token)

    async def logout(self, session_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                sessions.delete().where(sessions.c.token_hash == token_digest(session_id))
            )


# Verified against when the username is unknown, so timing does not reveal which names exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
