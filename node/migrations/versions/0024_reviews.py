"""reviews: review records projected (issue 17); `civitas reindex` projects ones stored earlier

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("version_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("recommended", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_version_author", "reviews", ["version_id", "author"])
    op.create_index("ix_reviews_author", "reviews", ["author"])


def downgrade() -> None:
    op.drop_index("ix_reviews_author", table_name="reviews")
    op.drop_index("ix_reviews_version_author", table_name="reviews")
    op.drop_table("reviews")
