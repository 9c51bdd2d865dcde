"""Tables owned by moderation.

Projected from records (rebuilt by ``civitas reindex``): notices with their targets,
decisions, counter-notices. Local to this node (never federated): claimants' contact
details, subscriptions to other nodes' takedown lists, what this node enforces (active
targets, the records it suppressed, quarantined files), the review queue, user reports,
and the audit log (moderators' re-ratings live in the catalog's ``model_overrides``).
"""

from __future__ import annotations

import sqlalchemy as sa

from node.db import BigIntPK, metadata

# --- projected -----------------------------------------------------------------------------

takedown_notices = sa.Table(
    "takedown_notices",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("author", sa.String(64), nullable=False, index=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("claimant", sa.String(200), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # JSON, for moderators' pages
    # Why the notice cannot be acted on (e.g. signed by another key than its claimant's).
    sa.Column("invalid", sa.Text, nullable=True),
)

notice_targets = sa.Table(
    "notice_targets",
    metadata,
    sa.Column("notice_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("target", sa.String(80), primary_key=True),  # kind:hex
    sa.Index("ix_notice_targets_target", "target"),
)

takedown_decisions = sa.Table(
    "takedown_decisions",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("node", sa.String(64), nullable=False, index=True),  # the deciding node's did
    sa.Column("notice_id", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("moderator", sa.String(100), nullable=False),
    sa.Column("targets", sa.Text, nullable=False),  # JSON list of kind:hex
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)

counter_notices = sa.Table(
    "counter_notices",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("notice_id", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("statement", sa.Text, nullable=False),
)

# --- local -----------------------------------------------------------------------------------

# What the receiving node keeps about a notice submitted to it (never in the record).
notice_contacts = sa.Table(
    "notice_contacts",
    metadata,
    sa.Column("notice_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("contact", sa.Text, nullable=False),
    sa.Column("account", sa.String(64), nullable=True, index=True),
    sa.Column("address", sa.String(64), nullable=True, index=True),
    sa.Column("submitted", sa.BigInteger, nullable=False, index=True),
    sa.Column("proof", sa.Text, nullable=True),  # JSON: the proof URL check's outcome
)

subscriptions = sa.Table(
    "takedown_subscriptions",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=True),  # where its list is read; NULL: via federation
    sa.Column("policy", sa.String(8), nullable=False),
    sa.Column("added", sa.BigInteger, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.CheckConstraint("policy IN ('auto', 'review')", name="policy"),
)

# What became of each decision this node received: applied, queued for review, no effect
# (with why), superseded by a later decision, reversed.
decision_outcomes = sa.Table(
    "decision_outcomes",
    metadata,
    sa.Column("decision_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("at", sa.BigInteger, nullable=False),
)

# The targets this node currently honors, each because of one applied decision.
active_targets = sa.Table(
    "active_targets",
    metadata,
    sa.Column("decision_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("target", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Index("ix_active_targets_target", "target"),
)

# Records this node suppressed (or purged) because of a decision, so a reversal restores them.
enforced_records = sa.Table(
    "enforced_records",
    metadata,
    sa.Column("decision_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("record_id", sa.LargeBinary(32), primary_key=True),
    sa.Index("ix_enforced_records_record", "record_id"),
)

# Files taken out of seeding and serving: kept aside until deleted (grace period or a
# moderator's confirmation), restored if the decision is reversed first.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("decision_id", sa.LargeBinary(32), nullable=False),
    sa.Column("infohash", sa.String(40), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("in_place", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("path", sa.Text, nullable=True),  # where it waits; NULL once deleted
    sa.Column("since", sa.BigInteger, nullable=False),
    sa.Column("delete_after", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.BigInteger, nullable=True),
)

review_queue = sa.Table(
    "review_queue",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    # notice | decision (another node's, under review) | held (an image near a listed one)
    # | report | counter
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ref", sa.LargeBinary(32), nullable=True, index=True),  # the record it is about
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("created", sa.BigInteger, nullable=False, index=True),
    sa.Column("closed_by", sa.String(64), nullable=True),
    sa.Column("closed", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("kind", "ref", name="uq_review_kind_ref"),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(80), nullable=False, index=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, server_default=""),
    sa.Column("reporter", sa.String(64), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False, index=True),
    sa.Column("actor", sa.String(100), nullable=False),  # a user, a node did, "system"
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("target", sa.String(80), nullable=True, index=True),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
)
