"""Tables owned by compute. All local: jobs are this node's queue, never records.

``compute_jobs`` holds one row per generation or training job with its state machine
(queued → leased → running → done | failed | cancelled | expired), its lease and its
results; ``compute_job_inputs`` the training images (kept in the file store by SHA256);
``compute_workers`` the worker keys registered here, with the user who donates each and
whom each serves (its owner's jobs only, unless an admin made it a node worker).
"""

from __future__ import annotations

import sqlalchemy as sa

from node.db import BigIntPK, metadata

JOB_STATES = ("queued", "leased", "running", "done", "failed", "cancelled", "expired")
JOB_KINDS = ("generate", "train")
WORKER_SERVES = ("own", "all")

compute_workers = sa.Table(
    "compute_workers",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column(
        "owner_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kinds", sa.String(32), nullable=False),  # comma-separated JOB_KINDS
    sa.Column("max_pixels", sa.BigInteger, nullable=False),
    sa.Column("device", sa.String(16), nullable=False, server_default="cpu"),
    # "own": only its owner's jobs; "all": a node worker (an admin registered or marked it)
    sa.Column("serves", sa.String(8), nullable=False, server_default="own"),
    sa.Column("registered", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=True),
    sa.Column("jobs_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("jobs_failed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("outputs", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("busy_ms", sa.BigInteger, nullable=False, server_default="0"),
    # the API token its last registration came with (an accounts id, no foreign key: a
    # revoked token must not read as a session's NULL); NULL: a browser session's
    sa.Column("token_id", sa.BigInteger, nullable=True),
)

compute_jobs = sa.Table(
    "compute_jobs",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column(
        "requester_id",
        sa.BigInteger,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("requester_did", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON, validated at submission
    sa.Column("version_id", sa.LargeBinary(32), nullable=False),  # the base model version
    sa.Column("files", sa.Text, nullable=False, server_default="[]"),  # JSON: what to fetch
    sa.Column("pixels", sa.BigInteger, nullable=False),  # per image: what a worker must fit
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("updated", sa.BigInteger, nullable=False),
    sa.Column("leased_at", sa.BigInteger, nullable=True),
    sa.Column("finished", sa.BigInteger, nullable=True),
    sa.Column("lease_worker", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("progress", sa.Text, nullable=False, server_default="{}"),  # JSON
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("results", sa.Text, nullable=False, server_default="[]"),  # JSON
    sa.Column("worker", sa.String(64), nullable=True),  # who delivered the result
    sa.Index("ix_compute_jobs_state_created", "state", "created"),
    sa.CheckConstraint(
        "state IN ('queued', 'leased', 'running', 'done', 'failed', 'cancelled', 'expired')",
        name="state",
    ),
    sa.CheckConstraint("kind IN ('generate', 'train')", name="kind"),
)

compute_job_inputs = sa.Table(
    "compute_job_inputs",
    metadata,
    sa.Column(
        "job_id",
        sa.BigInteger,
        sa.ForeignKey("compute_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("caption", sa.Text, nullable=False, server_default=""),
)
