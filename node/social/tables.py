"""Tables owned by the social layer, projected from records (``civitas reindex`` rebuilds
them).

``reviews`` holds one row per visible ``review`` record. An author's reviews of one
version form one review: the newest record (by ``created``, ties: higher id) that no
tombstone of theirs covers is the ``current`` one; the others are its earlier revisions.
"""

from __future__ import annotations

import sqlalchemy as sa

from node.db import metadata

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("version_id", sa.LargeBinary(32), nullable=False),
    sa.Column("author", sa.String(64), nullable=False),  # the signer's identity
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("recommended", sa.Boolean, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("current", sa.Boolean, nullable=False),
    sa.Index("ix_reviews_version_author", "version_id", "author"),
    sa.Index("ix_reviews_author", "author"),
)
