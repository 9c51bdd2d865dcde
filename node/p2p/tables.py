"""Tables owned by the p2p layer: node metadata, the record log and author identities."""

from __future__ import annotations

import sqlalchemy as sa

from node.db import BigIntPK, metadata

node_meta = sa.Table(
    "node_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The append-only log of every record this node accepted. ``seq`` is local to this node;
# ``id`` is the record's global identity. A purged record keeps its row (so it is never
# accepted again) but loses its bytes.
records = sa.Table(
    "records",
    metadata,
    sa.Column("seq", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("received", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="visible"),
    sa.Column("raw", sa.LargeBinary, nullable=True),
    # The peer node that first delivered it; NULL: published on this node.
    sa.Column("source", sa.String(64), nullable=True),
    sa.CheckConstraint("state IN ('visible', 'suppressed', 'purged')", name="state"),
    sa.Index("ix_records_type_author", "type", "author"),
)

# Projection of ``profile`` records: one row per author key, the newest profile wins.
authors = sa.Table(
    "authors",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("bio", sa.Text, nullable=False, server_default=""),
    sa.Column("next_key", sa.LargeBinary(32), nullable=True),
    sa.Column("profile_id", sa.LargeBinary(32), nullable=False),
    sa.Column("profile_created", sa.BigInteger, nullable=False),
)

# Files this node holds, by SHA256 (uppercase hex). ``in_place`` files live where the
# operator keeps them; the others under HOME/files/.
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("in_place", sa.Boolean, nullable=False, server_default=sa.false()),
)

# The v1 info dict of every torrent this node can serve (its own files and fetched ones),
# so peers can get the .torrent from GET /federation/v1/torrents/{infohash}.
torrents = sa.Table(
    "torrents",
    metadata,
    sa.Column("infohash", sa.String(40), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("piece_length", sa.Integer, nullable=False),
    sa.Column("info", sa.LargeBinary, nullable=False),
)

# Files this node is fetching or has fetched; resume data makes a restart cheap.
downloads = sa.Table(
    "downloads",
    metadata,
    sa.Column("infohash", sa.String(40), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # downloading, complete, failed
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("sources", sa.Text, nullable=False, server_default="{}"),  # JSON
    sa.Column("resume", sa.LargeBinary, nullable=True),
    sa.Column("added", sa.BigInteger, nullable=False),
    sa.Column("finished", sa.BigInteger, nullable=True),
)

# Nodes this operator peers with: pulled from, pushed to, trusted to push to our inbox.
peers = sa.Table(
    "peers",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("epoch", sa.String(64), nullable=True),  # their log epoch our cursor is for
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pushed", sa.BigInteger, nullable=False, server_default="0"),  # our seq sent
    sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("added", sa.BigInteger, nullable=False),
    sa.Column("last_sync", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("their_high", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failing_since", sa.BigInteger, nullable=True),
    sa.Column("next_try", sa.BigInteger, nullable=True),  # backing off until then
    # Added by the operator (may be on a private address), or auto-connected from an
    # announcement (public addresses only, checked at every connection).
    sa.Column("explicit", sa.Boolean, nullable=False, server_default=sa.true()),
    # The last round's pull: new records, and those refused as JSON {reason: count}.
    sa.Column("last_accepted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_refused", sa.Text, nullable=False, server_default="{}"),
)

# Projection of ``node`` records: the nodes this one has heard of, newest announcement wins.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("software", sa.String(64), nullable=False),
    sa.Column("record_id", sa.LargeBinary(32), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
)

# Author keys this operator blocked: their records are refused, and those already here
# are suppressed (kept, not shown, not relayed) until the block is lifted.
blocked_authors = sa.Table(
    "blocked_authors",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("added", sa.BigInteger, nullable=False),
)

# --- key rotation (projections of ``profile`` and ``key_rotation``; see rotation.py) -------

# Every next-key commitment made: by a profile, or by the rotation that introduced a key.
key_commitments = sa.Table(
    "key_commitments",
    metadata,
    sa.Column("record_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("did", sa.String(64), nullable=False, index=True),
    sa.Column("commitment", sa.LargeBinary(32), nullable=False),
)

key_rotations = sa.Table(
    "key_rotations",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("old_did", sa.String(64), nullable=False, index=True),
    sa.Column("new_did", sa.String(64), nullable=False, index=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("countersigned", sa.Boolean, nullable=False),
    sa.Column("valid", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Keys that rotated or were rotated into, with the identity (first key) they belong to.
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("did", sa.String(64), primary_key=True),
    sa.Column("identity", sa.String(64), nullable=False, index=True),
    sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Local: an operator's choice between conflicting rotations (keep one, reject the others).
rotation_verdicts = sa.Table(
    "rotation_verdicts",
    metadata,
    sa.Column("rotation_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("keep", sa.Boolean, nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)

# Files projected records need that this node does not hold yet (image previews): fetched
# in the background from the peer that sent the record, else from any peer, with backoff.
# Rebuilt from the catalog at start, so a crash or an outage never loses one for good.
wanted_files = sa.Table(
    "wanted_files",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=True),  # as the record states it
    sa.Column("source", sa.String(64), nullable=True),  # the peer that sent the record
    sa.Column("added", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try", sa.BigInteger, nullable=False, index=True),
    sa.Column("last_error", sa.Text, nullable=True),
)
