"""Tables owned by accounts: users, API tokens, web sessions, invites, login addresses."""

from __future__ import annotations

import sqlalchemy as sa

from node.db import BigIntPK, metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("did", sa.String(64), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.CheckConstraint("role IN ('admin', 'moderator', 'member')", name="role"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("last_used", sa.BigInteger, nullable=True),
    sa.Column("expires", sa.BigInteger, nullable=True),  # unix ms; NULL: never
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("expires", sa.BigInteger, nullable=False),
)

# Invite codes for sign-up when accounts.registration is "invite": one account each, until
# it expires. Only a digest of the code is kept (it is shown once, to the admin who made it).
invites = sa.Table(
    "invites",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("created_by", sa.String(64), nullable=False),  # a user's name, or "node admin"
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("expires", sa.BigInteger, nullable=False),  # unix ms
    sa.Column("used_by", sa.String(32), nullable=True),  # the account it made
    sa.Column("used_at", sa.BigInteger, nullable=True),
)

# The client addresses (node.ratelimit.address_key: an IPv6 client's /64) each account has
# logged in from, so that its owner stays known to the login throttle across restarts.
# Bounded: node.accounts.login_addresses keeps an account's most recently used ones.
login_addresses = sa.Table(
    "login_addresses",
    metadata,
    sa.Column(
        "user_id",
        sa.BigInteger,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("address", sa.String(64), primary_key=True),
    sa.Column("last_login", sa.BigInteger, nullable=False),  # unix ms
)
