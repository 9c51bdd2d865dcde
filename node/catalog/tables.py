"""Tables owned by the catalog.

Projected tables (rebuilt by ``civitas reindex``): ``models``, ``model_revisions``, ``model_tags``,
``model_versions``, ``version_files``, ``images``. Local tables (this node's own facts,
never derived from records): ``model_stats`` (download counts), ``file_details``
(what ingest read from a file's header).

A version or image may arrive before the model it belongs to: nothing here has a
foreign key onto a projected row, and queries join on what is present.
"""

from __future__ import annotations

import sqlalchemy as sa

from node.db import BigIntPK, metadata

models = sa.Table(
    "models",
    metadata,
    sa.Column("seq", BigIntPK, primary_key=True, autoincrement=True),  # FTS rowid on SQLite
    sa.Column("root_id", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("int_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("author", sa.String(64), nullable=False, index=True),
    sa.Column("revision_id", sa.LargeBinary(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(32), nullable=False, index=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("rating", sa.String(8), nullable=False, server_default="PG"),
    sa.Column("license", sa.String(200), nullable=True),
    sa.Column("poi", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("allow_no_credit", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("allow_commercial_use", sa.String(64), nullable=False, server_default=""),
    sa.Column("allow_derivatives", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("allow_different_license", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created", sa.BigInteger, nullable=False, index=True),
    sa.Column("updated", sa.BigInteger, nullable=False),
    # Everything full-text search looks at, in one column (names, description, tags,
    # trained words, creator), kept by the projection; indexed by FTS5 or a tsvector.
    sa.Column("search_text", sa.Text, nullable=False, server_default=""),
    # Downloads of the author's versions, summed from the local model_stats, so that
    # "most downloaded" is an index walk rather than a sum over the whole catalog.
    sa.Column("downloads", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_models_downloads", "downloads", "seq"),
)

# Every model record (the root and its revisions), so a model's row can be recomputed
# from the set whatever order they arrived in.
model_revisions = sa.Table(
    "model_revisions",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("root_id", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
)

model_tags = sa.Table(
    "model_tags",
    metadata,
    sa.Column("root_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("tag", sa.String(48), primary_key=True, index=True),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("int_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("model_root", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("base_model", sa.String(64), nullable=False, index=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("trained_words", sa.Text, nullable=False, server_default="[]"),  # JSON list
    sa.Column("created", sa.BigInteger, nullable=False),
)

version_files = sa.Table(
    "version_files",
    metadata,
    sa.Column("version_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),  # uppercase hex, like every hash here
    sa.Column("int_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("autov1", sa.String(8), nullable=True, index=True),
    sa.Column("autov2", sa.String(10), nullable=False, index=True),
    sa.Column("autov3", sa.String(64), nullable=True, index=True),
    sa.Column("blake3", sa.String(64), nullable=False, index=True),
    sa.Column("crc32", sa.String(8), nullable=False, index=True),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("fp", sa.String(8), nullable=True),
    sa.Column("size_type", sa.String(8), nullable=True),
    sa.Column("is_primary", sa.Boolean, nullable=False),
    sa.Column("infohash", sa.String(40), nullable=True),
    sa.Column("piece_length", sa.Integer, nullable=True),
    sa.Index("ix_version_files_sha256", "sha256"),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("int_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("author", sa.String(64), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("mime", sa.String(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("rating", sa.String(8), nullable=False, server_default="PG"),
    sa.Column("version_id", sa.LargeBinary(32), nullable=True, index=True),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),  # JSON, Civitai names
    sa.Column("pdq", sa.LargeBinary(32), nullable=True),
    sa.Column("pdq_quality", sa.Integer, nullable=True),
    sa.Column("created", sa.BigInteger, nullable=False, index=True),
)

# Which catalog versions an image says it was made with (linked by hash where known).
image_resources = sa.Table(
    "image_resources",
    metadata,
    sa.Column("image_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("type", sa.String(16), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True, index=True),
    sa.Column("weight", sa.String(32), nullable=True),
)

# Withdrawals: a tombstone hides its target (a model's root with everything under it, a
# version or an image) when its author is the target's author, whenever either arrives.
tombstones = sa.Table(
    "tombstones",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("target", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False),
)

# --- local, not projected ----------------------------------------------------------------

model_stats = sa.Table(
    "model_stats",
    metadata,
    sa.Column("version_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("downloads", sa.BigInteger, nullable=False, server_default="0"),
)

# Moderators' local say over a model (by root): a re-rating, flags, and terms to hide from
# its text (a takedown's "remove the artist's name"). Applied by the projection, so every
# page, search and API answer shows the same; never federated.
model_overrides = sa.Table(
    "model_overrides",
    metadata,
    sa.Column("root_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("rating", sa.String(8), nullable=True),
    sa.Column("poi", sa.Boolean, nullable=True),
    sa.Column("minor", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hidden_terms", sa.Text, nullable=False, server_default="[]"),  # JSON list
)

# The blurhash of each image file (Civitai's ``images[].hash``), computed once from the
# file this node holds: a local fact like file_details, so a reindex keeps it. An empty
# blurhash: the file could not be decoded (not tried again).
image_blurhashes = sa.Table(
    "image_blurhashes",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("blurhash", sa.String(64), nullable=False),
)

file_details = sa.Table(
    "file_details",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("header_metadata", sa.Text, nullable=False, server_default="{}"),  # JSON
    sa.Column("detected_type", sa.String(32), nullable=True),
    sa.Column("detected_base_model", sa.String(64), nullable=True),
)

# A version is shown (listed, downloadable, seeded) only while its model is: the model's
# row exists (not withdrawn, not yet arrived) and the version's author is the model's.
shown_versions = model_versions.join(
    models,
    sa.and_(
        models.c.root_id == model_versions.c.model_root,
        models.c.author == model_versions.c.author,
    ),
)
